"""Each error kind that the stages used to print themselves (publish, train-lm, finetune, launch,
the supervisor) or that lm_models raises reaches the user the one way pipelines/cli.py maps it:
exactly one `ppsample: error: ...` line on stderr and the kind's exit status. Each case injects
its fault at the narrowest boundary (a bad input, the Hub's token lookup, gcloud, a KenLM tool,
a worker traceback Beam forwarded as text)."""
from __future__ import annotations

import subprocess

import pytest

from cli_exit import exit_status
from pipelines import cli


def one_error_line(argv, capfd) -> tuple[int, str]:
    """(exit status, the one stderr line) of `ppsample ARGV`; fails unless stderr is one line."""
    capfd.readouterr()
    code = exit_status(argv)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ppsample: error: "), lines
    return code, lines[0][len("ppsample: error: "):]


def test_publish_refuses_an_output_without_stats_json_in_one_line_exit_2(tmp_path, capfd):
    (tmp_path / "sampled").mkdir()
    code, message = one_error_line(["publish", "--input", str(tmp_path / "sampled"),
                                    "--repo-id", "a/b", "--dry-run"], capfd)
    assert code == 2 and message.endswith("no stats.json; is this a `ppsample sample`/`run` output?")


def test_publish_option_mistake_is_a_usage_error_exit_2(tmp_path, capfd):
    code, message = one_error_line(["publish", "--input", str(tmp_path), "--repo-id", "a/b",
                                    "--files-per-commit", "0"], capfd)
    assert code == 2 and message == "--files-per-commit must be >= 1, got 0"


def test_an_upload_without_a_hub_token_is_one_line_exit_1(tmp_path, capfd, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # the Hub's token lookup
    code, message = one_error_line(["publish", "--input", str(tmp_path), "--repo-id", "a/b"],
                                   capfd)
    assert code == 1 and message.startswith("no Hugging Face token")


def test_train_lm_without_its_corpus_is_one_line_exit_1(tmp_path, capfd):
    code, message = one_error_line(["train-lm", "--corpus", str(tmp_path / "none.txt"),
                                    "--output", str(tmp_path / "m"), "--quiet"], capfd)
    assert code == 1 and message == f"corpus {str(tmp_path / 'none.txt')!r} not found"


def test_a_failing_kenlm_tool_is_its_last_output_line_exit_1(tmp_path, capfd, monkeypatch,
                                                            shared_data):
    """lmplz exits non-zero after SentencePiece trained: one line with the tool's last words."""
    import gzip

    from lm_models import kenlm_training

    tool = tmp_path / "lmplz"
    tool.write_text("#!/bin/sh\necho '=== 1/5 Counting and sorting n-grams ==='\n"
                    "echo 'ERROR: injected lmplz failure' \nexit 3\n")
    tool.chmod(0o755)
    monkeypatch.setattr(kenlm_training, "find_tool", lambda name: str(tool))
    corpus = tmp_path / "corpus.txt"
    with gzip.open(shared_data / "es" / "reference.txt.gz", "rt", encoding="utf-8") as src:
        corpus.write_text("".join(line for _, line in zip(range(1500), src)), encoding="utf-8")
    code, message = one_error_line(["train-lm", "--corpus", str(corpus), "--output",
                                    str(tmp_path / "m"), "--vocab-size", "400", "--quiet"], capfd)
    assert code == 1 and message == "lmplz failed (exit 3): ERROR: injected lmplz failure"


def test_finetune_on_a_directory_without_tokens_is_one_line_exit_2(tmp_path, capfd):
    pytest.importorskip("jax")
    (tmp_path / "tokens").mkdir()
    code, message = one_error_line(["finetune", "--config", "tiny", "--data",
                                    str(tmp_path / "tokens"), "--workdir", str(tmp_path / "w")],
                                   capfd)
    assert code == 2 and "manifest.json not found" in message  # the supervisor's "do not retry"


def test_a_failed_tpu_vm_step_is_one_line_exit_1(capfd, monkeypatch):
    from pipelines.finetune import launch

    monkeypatch.setattr(launch.subprocess, "run",  # gcloud: the create step fails
                        lambda argv, *a, **k: subprocess.CompletedProcess(argv, 1))
    code, message = one_error_line(["finetune", "launch", "--tpu-name", "t", "--zone",
                                    "us-central2-b", "--config", "tiny", "--create"], capfd)
    assert code == 1 and message.startswith("step failed with exit code 1: ")


def test_a_bad_launch_argument_is_a_usage_error_exit_2(capfd):
    code, message = one_error_line(["finetune", "launch", "--tpu-name", "t", "--zone",
                                    "us-central2-b", "--config", "tiny", "--dry-run",
                                    "--data", "gs://b/t"], capfd)
    assert code == 2 and message.startswith("give both --data and --workdir")


@pytest.mark.parametrize("line, message", [
    ("lm_models.errors.ModelSourceError: model source 'x': no KenLM model in /m",
     "model source 'x': no KenLM model in /m"),
    ("lm_models.kenlm_training.KenLMToolFailed: lmplz failed (exit 1): boom",
     "lmplz failed (exit 1): boom"),
])
def test_an_lm_models_error_forwarded_from_a_worker_is_one_line_exit_1(line, message):
    """A worker's traceback arrives as text (multi-process runners): the ModelError's line."""
    import lm_models.kenlm_training  # noqa: F401 - its ModelError kinds are known to the CLI

    forwarded = RuntimeError(f"Traceback (most recent call last):\n  File \"w.py\", line 1\n"
                             f"{line} [while running 'Score']\n")
    with pytest.raises(SystemExit) as exit_info:
        cli._guarded(lambda: (_ for _ in ()).throw(forwarded), debug=False)
    assert exit_info.value.code == f"ppsample: error: {message}"  # exit 1, this one line


def test_an_lm_models_error_in_process_is_its_first_line_exit_1():
    from lm_models.kenlm_training import KenLMToolFailed

    def fail():
        raise KenLMToolFailed("lmplz failed (exit 2): out of memory\n=== 1/5 ...\nout of memory")

    with pytest.raises(SystemExit) as exit_info:
        cli._guarded(fail, debug=False)
    assert exit_info.value.code == "ppsample: error: lmplz failed (exit 2): out of memory"

