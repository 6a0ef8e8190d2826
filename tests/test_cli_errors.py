"""What a user sees when a run fails, as a separate process (the real console script): one
`ppsample: error: ...` line instead of Beam's pages of tracebacks, the traceback with --debug,
and one line for Ctrl-C."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ppsample(argv, cwd, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def stderr_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_unreachable_target_is_one_line(tmp_path):
    result = ppsample(["run", "--target-docs", "100000", "--output", "out"], tmp_path)
    lines = stderr_lines(result)
    assert result.returncode == 1
    assert len(lines) <= 3, result.stderr
    assert lines[-1].startswith("ppsample: error: target of 100000 docs is unreachable")
    assert "[while running" not in lines[-1]
    assert not any(line.startswith(("Traceback", "ERROR:", "WARNING:")) for line in lines)


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    """In-process: with --debug the original exception propagates (Python prints its traceback),
    our own errors included."""
    from pipelines import cli
    from pipelines.errors import InputError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="matched no files"):
        cli.main(["score", "--input", "nothing/c4-es*.json.gz", "--output", "out", "--debug"])


def test_an_input_glob_that_matches_nothing_is_our_error(tmp_path):
    """An InputError (the user's mistake, said as such), not the generic line of an unexpected
    exception with its `--debug for the traceback` hint."""
    result = ppsample(["run", "--input", "nothing/c4-es*.json.gz", "--output", "out"], tmp_path)
    assert result.returncode == 1
    assert stderr_lines(result) == [
        "ppsample: error: input pattern matched no files: 'nothing/c4-es*.json.gz'"]


def test_bad_model_directory_is_one_line(tmp_path):
    """A directory that is not a model (a SentencePiece file but no KenLM model)."""
    (tmp_path / "badmodel").mkdir()
    (tmp_path / "badmodel" / "es.sp.model").write_bytes(b"not a sentencepiece model")
    result = ppsample(["run", "--model", "badmodel", "--output", "out"], tmp_path)
    lines = stderr_lines(result)
    assert result.returncode != 0
    assert 1 <= len(lines) <= 3, result.stderr
    assert lines[-1].startswith("ppsample: error: ") and "badmodel" in lines[-1]
    assert not any(line.startswith(("Traceback", "ERROR:", "WARNING:")) for line in lines)


def test_corrupt_model_file_is_one_line(tmp_path):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "es.arpa.bin").write_bytes(b"not a kenlm model")
    (tmp_path / "corrupt" / "es.sp.model").write_bytes(b"not a sentencepiece model")
    result = ppsample(["run", "--model", "corrupt", "--preset", "ccnet", "--output", "out"], tmp_path)
    lines = stderr_lines(result)
    assert result.returncode != 0 and len(lines) <= 3, result.stderr
    assert "neither a KenLM binary" in lines[-1] and not (tmp_path / "out").exists()


def _in_process(argv, capfd):
    from pipelines import cli

    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # errors found before Beam starts
        code = exit_info.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    return code, err


def test_empty_model_directory_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    code, lines = _in_process(["run", "--model", "empty", "--output", "out"], capfd)
    assert code != 0 and len(lines) == 1, lines
    assert "no KenLM model" in lines[0]


def test_a_glob_that_matches_nothing_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    code, lines = _in_process(["score", "--input", "nothing/c4-es*.json.gz", "--output", "out"], capfd)
    assert code != 0 and len(lines) == 1, lines
    assert lines[0].startswith("ppsample: error: ") and "nothing/c4-es*.json.gz" in lines[0]


def _interrupt_after_scoring_started(tmp_path, shared_data, extra=(), group=False):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # 24 x 458 documents: ~10 s of scoring at today's speed, interrupted after the first
    # progress line (with 8 copies a run on a loaded machine could end before the signal came)
    for i in range(24):
        shutil.copy(shared_data / "es" / "web.jsonl.gz", corpus / f"c4-es.tfrecord-{i:05d}-of-00024.json.gz")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "score", "--input",
                             str(corpus / "*.json.gz"), "--output", "out", *extra],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    before = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # scoring has started when the first progress line comes
        line = proc.stderr.readline()
        if not line:
            break
        before.append(line)
        if "docs scored" in line:
            break
    assert before and "docs scored" in before[-1], before
    if group:  # a terminal's Ctrl-C: the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        rest = proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("ppsample did not stop on SIGINT")
    return proc, before, rest


def test_ctrl_c_while_scoring_is_one_line(tmp_path, shared_data):
    proc, before, rest = _interrupt_after_scoring_started(tmp_path, shared_data)
    after = [line for line in rest.splitlines() if line.strip()]
    assert proc.returncode == 130
    assert after and after[-1] == "ppsample: interrupted (Ctrl-C)", rest
    assert len(before) + len(after) <= 3, before + after


@pytest.mark.slow  # two worker processes: ~20-40 s
def test_terminal_ctrl_c_with_worker_processes_is_one_line(tmp_path, shared_data):
    """Ctrl-C at a terminal reaches the whole process group: Beam's worker processes must not
    each print their KeyboardInterrupt traceback."""
    proc, before, rest = _interrupt_after_scoring_started(
        tmp_path, shared_data, ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
        group=True)
    after = [line for line in rest.splitlines() if line.strip()]
    assert proc.returncode == 130
    assert after == ["ppsample: interrupted (Ctrl-C)"], rest
