"""`ppsample run --language fr` against a local stand-in of the registry's hosts: the
registry's model is used, outputs are named mc4-fr-..., stats and card say fr, cc_net's
percentiles serve as boundaries, and a model whose sha256 differs is refused before scoring."""
import json
import os

import pytest

from lm_models import language_registry as registry
from pipelines import cli, options
from pipelines.corpus.stage_config import StageConfig
from pipelines.errors import InputError
from pipelines.corpus.commands.run import BUNDLED_INPUT
from pipelines.publish.dataset_card import CardConfig, render_card
from model_source_fixtures import cache  # noqa: F401
from registry_host import host  # noqa: F401  (the stand-in registry host fixture)


def test_run_language_fr_uses_the_registry_model(host, tmp_path):
    out = tmp_path / "fr"
    assert cli.main(["run", "--language", "fr", "--input", BUNDLED_INPUT, "--output", str(out),
                     "--boundaries", "ccnet", "--no-figures", "-q"]) == 0
    assert any(r.endswith("/cc_net/lm/fr.arpa.bin") for r in host.requests)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["language"] == "fr" and stats["prefix"] == "mc4-fr"
    assert stats["model"]["source"] == "ccnet:fr" and stats["preset"] == "ccnet"
    names = sorted(os.listdir(out))
    assert "mc4-fr-train-gaussian-shard-0001-of-0002.json.gz" in names
    assert not [n for n in names if n.startswith("mc4-es")]
    b = stats["boundaries"]
    assert (b["q1"], b["q2"], b["q3"], b["source"]) == (170.0, 260.0, 520.0, "ccnet")
    card = render_card([CardConfig("gaussian", stats, {"train": ["x.parquet"]})], "me/mc4-fr")
    assert "language:\n- fr\n" in card


def test_wrong_sha256_is_refused_before_scoring(host, tmp_path, capsys):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit, match="sha256"):
        cli.main(["run", "--language", "fr", "--model", "edugp:fr", "--input", BUNDLED_INPUT,
                  "--output", str(out), "--no-figures", "-q"])
    assert not out.exists()  # nothing was scored, no output started


def test_language_defaults_and_errors(monkeypatch):
    monkeypatch.delenv(registry.REGISTRY_URL_ENV, raising=False)
    args = cli.parse_stage_args("run", ["--language", "fr"])[0]
    options.apply_language(args)
    assert (args.model, args.prefix) == ("ccnet:fr", "mc4-fr")
    assert options.mc4_inputs("fr") == ("hf://datasets/allenai/c4/multilingual/c4-fr.tfrecord-*.json.gz,"
                                        "hf://datasets/allenai/c4/multilingual/c4-fr-validation.tfrecord-*.json.gz")
    plain = cli.parse_stage_args("run", [])[0]
    options.apply_language(plain)  # no --language: Spanish and the bundled model, as always
    assert (plain.model, plain.prefix) == ("es-reference", "mc4-es")
    with pytest.raises(InputError, match="no published model for language 'xh'"):
        options.apply_language(cli.parse_stage_args("run", ["--language", "xh"])[0])
    spanish = cli.parse_stage_args("run", ["--boundaries", "ccnet", "--language", "es",
                                           "--model", "es-reference"])[0]
    with pytest.raises(InputError, match="cc_net's perplexity scale"):
        StageConfig.from_args("run", spanish, [])
    cfg = StageConfig.from_args("run", cli.parse_stage_args("run", ["--language", "fr", "--boundaries", "ccnet"])[0], [])
    assert cfg.request.boundaries == "170.0,260.0,520.0" and cfg.request.boundaries_source == "ccnet"
    assert (cfg.model, cfg.prefix, cfg.language) == ("ccnet:fr", "mc4-fr", "fr")


DATAFLOW = ["--runner=DataflowRunner", "--project=p", "--region=europe-west4",
            "--temp_location=gs://b/tmp"]


def _launch_on_dataflow(monkeypatch, *argv):
    """`ppsample run ... --runner DataflowRunner` up to the point where the job would be built:
    the launcher's checks run for real, the job itself is stubbed (driver.run_stage)."""
    from pipelines.corpus import driver

    launched = []
    monkeypatch.setattr(driver, "run_stage", lambda cfg, files, build, model=None:
                        launched.append(model))
    assert cli.main(["run", "--input", BUNDLED_INPUT, "--output", "gs://b/out", "-q",
                     *argv, *DATAFLOW]) == 0
    return launched


def test_dataflow_launcher_checks_the_registry_model_without_downloading_it(host, monkeypatch):
    """On Dataflow the workers download `ccnet:fr` themselves: the launcher asks the host for the
    file's size (HEAD) and never GETs the multi-GB binary."""
    assert _launch_on_dataflow(monkeypatch, "--language", "fr") == ["ccnet:fr"]
    assert any(h.endswith("/cc_net/lm/fr.arpa.bin") for h in host.heads)
    assert not any(r.endswith(".arpa.bin") for r in host.requests), host.requests


def test_dataflow_launcher_refuses_an_unreachable_registry_model(host, monkeypatch):
    """The stand-in host serves French only: `ccnet:de` is refused on the launcher, before any
    job, with the URL it looked for (a HEAD, no download). The sha256 the registry pins is
    checked by each worker's download (model_sources refuses the file before scoring)."""
    with pytest.raises(SystemExit, match=r"no KenLM model found.*cc_net/lm/de\.arpa\.bin"):
        _launch_on_dataflow(monkeypatch, "--language", "de")
    assert any(h.endswith("/cc_net/lm/de.arpa.bin") for h in host.heads)
    assert not any(r.endswith(".arpa.bin") for r in host.requests), host.requests
