"""Live progress: only the driver prints, summing its own counts and every worker process's;
done/total with percentage, rate and ETA; the final line is the run's final count; -q silences
it; and a real multi-process run prints neither per-worker lines nor Beam's logging."""
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import progress

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 3600.0)  # only the final line unless a test asks
    stream = io.StringIO()
    yield stream
    progress.stop(final=False)
    progress.set_quiet(False)


WORKER = ("from pipelines import progress\n"
          "for _ in range(3):\n"
          "    progress.add(scored=10, input_bytes=100)\n"
          "    progress.add(kept=4, decided=10)\n")


def test_workers_count_through_the_driver_which_alone_prints(session):
    progress.start(total_bytes=1_000, stream=session)
    assert progress.enabled()
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # inherits the counter directory, as Beam's workers do
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert outputs == [("", "")] * 3  # a worker never prints
    progress.add(scored=5, input_bytes=10)  # the driver's own (in-process runner) counts
    assert progress.snapshot() == {"scored": 95, "kept": 36, "decided": 90, "input_bytes": 910}
    progress.stop()
    lines = session.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"ppsample: 910 B of 1\.0 KB \(91%\) at [\d.,]+ [KM]?B/s, ETA \d+:\d\d; "
                        r"95 docs scored \([\d,]+ docs/s\), 36 of 90 kept so far", lines[0]), lines
    assert not progress.enabled() and not os.environ.get(progress.ENV)


def test_line_shows_done_total_percentage_rate_and_eta():
    line = progress.format_progress({"input_bytes": 250_000_000, "scored": 1000, "kept": 0,
                                     "decided": 0}, 1_000_000_000, 10.0)
    assert line == ("250.0 MB of 1.0 GB (25%) at 25.0 MB/s, ETA 0:30; "
                    "1,000 docs scored (100 docs/s)")
    assert progress.format_duration(3 * 3600 + 61) == "3:01:01"
    # without a known total (or before any input byte is counted): documents only
    assert progress.format_progress({"scored": 7, "kept": 2, "decided": 7}, None, 1.0) == \
        "7 docs scored (7 docs/s), 2 of 7 kept so far"


def _wait_for_lines(stream, n):
    deadline = time.monotonic() + 30
    while stream.getvalue().count("\n") < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_driver_prints_a_line_each_interval_the_counts_moved(session, monkeypatch):
    """In a log (not a terminal) a line per change: the same counts are never printed twice,
    not by later polls and not by the final line (as when 2 workers finish before the end)."""
    monkeypatch.setattr(progress, "INTERVAL_S", 0.01)
    progress.start(stream=session)
    progress.add(scored=3)
    _wait_for_lines(session, 1)
    progress.add(scored=2)
    _wait_for_lines(session, 2)
    time.sleep(0.2)  # ~20 more polls, nothing new
    progress.stop()
    lines = session.getvalue().splitlines()
    assert [l.split(" (")[0] for l in lines] == ["ppsample: 3 docs scored", "ppsample: 5 docs scored"], lines


@pytest.mark.parametrize("stage, line", [
    ("run", "7 docs scored (7 docs/s), 2 of 7 kept so far"),
    ("score", "7 docs scored (7 docs/s), 2 of 7 kept so far"),
    ("sample", "7 docs read (7 docs/s), 2 of 7 kept so far"),
    ("stats", "7 docs read (7 docs/s), 2 of 7 would be kept"),
])
def test_the_words_follow_the_stage(stage, line, monkeypatch):
    monkeypatch.setitem(progress._session, "stage", stage)
    assert progress.format_progress({"scored": 7, "kept": 2, "decided": 7}, None, 1.0) == line


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_line_is_rewritten_in_place(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.01)
    tty = _Terminal()
    progress.start(stream=tty)
    progress.add(scored=3)
    deadline = time.monotonic() + 30
    while "\r" not in tty.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.stop()
    text = tty.getvalue()
    assert text.startswith("\rppsample: ") and text.endswith("\n") and text.count("\n") == 1


def test_quiet_prints_nothing(session):
    progress.set_quiet(True)
    progress.start(total_bytes=10, stream=session)
    assert not progress.enabled()
    progress.add(scored=1)
    progress.stop()
    assert session.getvalue() == ""


def test_no_final_line_while_an_error_propagates(session):
    progress.start(stream=session)
    progress.add(scored=1)
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("pipeline failed")
        finally:
            progress.stop()
    assert session.getvalue() == ""


def test_total_input_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "b").write_bytes(b"x" * 5)
    assert progress.total_input_bytes([tmp_path / "a", tmp_path / "b"]) == 15
    assert progress.total_input_bytes([tmp_path / "missing"]) is None


@pytest.mark.slow  # a real 2-process Beam run: ~10-25 s
def test_multi_process_run_prints_one_progress_stream_that_ends_at_the_kept_count(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--output", "out", "--no-figures",
         "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert all(l.startswith("ppsample: ") for l in lines), lines  # no Beam INFO/WARNING
    assert not any("worker" in l for l in lines)
    kept_lines = [l for l in lines if "kept so far" in l]
    counts = [re.sub(r"[\d.,]+ [KMG]?B/s|\([\d,]+ docs/s\)|ETA [\d:]+", "", l) for l in kept_lines]
    assert all(a != b for a, b in zip(counts, counts[1:])), kept_lines  # never the same line twice
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    final = re.search(r"([\d,]+) of ([\d,]+) kept so far", kept_lines[-1])
    assert int(final.group(1).replace(",", "")) == stats["total"]["kept"]
    assert int(final.group(2).replace(",", "")) == stats["total"]["scored"]
