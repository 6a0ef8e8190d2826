"""A Beam SDK worker process killed (as the kernel's OOM killer does) during a local
multi-process `ppsample run`: the run stops within seconds with one line naming the worker and
its signal, leaves the previous output as it was and no process behind; a rerun gives the
clean run's bytes. And no worker outlives the launcher on Ctrl-C, SIGTERM or SIGKILL.

The moments are found deterministically: right after spawn is the first worker process seen
in the launcher's process tree; the others are workers stopped by the test-only hook
(worker_watchdog.HOLD_ENV) at a known point (first scored batch, first sampled batch, the
final stats.json written), whose pid the hook writes into a marker file. The 60 s bounds are
hang guards, not measurements.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines import worker_watchdog

REPO = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 60
MULTI = ["--runner", "FnApiRunner", "--direct_running_mode", "multi_processing",
         "--direct_num_workers", "2"]
ONE_LINE = re.compile(r"^ppsample: error: Beam worker process (\d+) \(worker_\d+\) was killed by "
                      r"signal 9 \(SIGKILL; out of memory\?\); the run was stopped and its output "
                      r"discarded; run it again with fewer workers \(--direct_num_workers\), on a "
                      r"machine with more memory, or with a lower --max-doc-bytes$")

pytestmark = pytest.mark.slow  # each case is two multi-process runs: ~20-60 s on two cores


@pytest.fixture(scope="module")
def shards(shared_data, tmp_path_factory) -> str:
    """The real web sample as four mC4-named shards."""
    folder = tmp_path_factory.mktemp("shards")
    with gzip.open(shared_data / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    for k in range(4):
        with gzip.open(folder / f"c4-es.tfrecord-{k:05d}-of-00004.json.gz", "wt",
                       encoding="utf-8") as f:
            f.write("\n".join(lines[k::4]) + "\n")
    return ",".join(sorted(str(p) for p in folder.iterdir()))


def _command(shards: str, seed: int) -> list[str]:
    # --output is relative and every run has its own cwd: the same command line everywhere, so
    # stats.json and the commit marker (which record it) compare byte for byte too
    return [sys.executable, "-m", "pipelines.cli", "run", "--input", shards, "--output", "out",
            "--no-figures", "--seed", str(seed), *MULTI]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _run(cwd: Path, shards: str, seed: int) -> Path:
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(_command(shards, seed), cwd=cwd, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return cwd / "out"


def _files(out: Path) -> dict[str, bytes]:
    """Every file under out (hidden ones, such as a staging folder, included)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(shards, tmp_path_factory) -> dict[str, bytes]:
    return _files(_run(tmp_path_factory.mktemp("clean"), shards, seed=0))


@pytest.fixture(scope="module")
def previous(shards, tmp_path_factory) -> Path:
    """Another committed output (another seed) that the killed runs must leave as it was."""
    return _run(tmp_path_factory.mktemp("previous"), shards, seed=1)


def _launched_by(launcher: psutil.Process) -> list[psutil.Process]:
    try:
        return launcher.children(recursive=True)
    except psutil.Error:
        return []


def _alive(procs) -> list[int]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _workers_of(launcher_pid: int) -> list[int]:
    """Any process on the machine that a worker of this launcher started (by its environment)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(worker_watchdog.LAUNCHER_PID_ENV) == str(launcher_pid):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def _assert_nothing_left(launcher_pid: int, seen, spare=()) -> None:
    """No process the launcher started (seen in its tree, or carrying its pid in the
    environment its workers get) is left, except `spare`."""
    seen = [p for p in seen if p.pid not in spare]
    # PR_SET_PDEATHSIG / killpg are sent by then; wait for the kernel to finish them (a guard)
    psutil.wait_procs([p for p in seen if _alive([p])], timeout=HANG_GUARD_S)
    left = sorted(set(_alive(seen))
                  | {pid for pid in _workers_of(launcher_pid) if pid not in spare})
    described = []
    for pid in left:  # listed, then ended, so that a failure leaves nothing running either
        try:
            proc = psutil.Process(pid)
            described.append((pid, proc.cmdline()))
            proc.kill()
        except psutil.Error:
            pass
    assert left == [], described


def _held_children(holds: Path) -> tuple[int, ...]:
    """The pids of the children that held workers started (worker_watchdog.hold_for_test)."""
    return tuple(int(p.read_text().split()[1]) for p in holds.iterdir()
                 if not p.name.endswith(".tmp"))


class _Launch:
    """A `ppsample run` started in the background, watched until a moment comes."""

    def __init__(self, cwd: Path, shards: str, moment: str | None):
        self.holds = cwd / "holds"
        self.holds.mkdir(parents=True, exist_ok=True)
        env = _env(**({worker_watchdog.HOLD_ENV: f"{moment}:{self.holds}"} if moment else {}))
        self.proc = subprocess.Popen(_command(shards, seed=0), cwd=cwd, env=env,
                                     stderr=subprocess.PIPE, text=True)
        self.launcher = psutil.Process(self.proc.pid)
        self.seen: dict[int, psutil.Process] = {}
        self.deadline = time.monotonic() + 600  # hang guard for the wait below

    def _watch(self) -> None:
        for child in _launched_by(self.launcher):
            self.seen.setdefault(child.pid, child)
        assert self.proc.poll() is None, f"ppsample ended first: {self.proc.stderr.read()}"
        assert time.monotonic() < self.deadline, "the moment never came"

    def first_worker(self) -> int:
        while True:
            self._watch()
            if self.seen:
                return min(self.seen)
            time.sleep(0.01)

    def held_worker(self) -> tuple[int, int]:
        """(worker pid, pid of the child it started) of the first worker held at the moment."""
        while True:
            self._watch()
            markers = sorted(p for p in self.holds.iterdir() if not p.name.endswith(".tmp"))
            if markers:
                worker, child = map(int, markers[0].read_text().split())
                self._watch()
                for pid in (worker, child):
                    self.seen.setdefault(pid, psutil.Process(pid))
                return worker, child
            time.sleep(0.05)

    def finish(self) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            for proc in self.seen.values():
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            pytest.fail(f"ppsample still running {HANG_GUARD_S} s after the kill")
        return self.proc.returncode, err


MOMENTS = {
    "right_after_spawn": None,
    "mid_scoring": "scored",      # a worker has scored its first batch
    "phase_2": "decided",         # a worker has sampled its first batch
    "commit": "WriteStats",       # the final stats.json is written: next is the commit
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_worker_killed_stops_the_run_in_one_line_and_leaves_nothing(moment, tmp_path, shards,
                                                                      clean, previous):
    shutil.copytree(previous, tmp_path / "out")
    before = _files(tmp_path / "out")
    run = _Launch(tmp_path, shards, MOMENTS[moment])
    victim = run.first_worker() if MOMENTS[moment] is None else run.held_worker()[0]
    os.kill(victim, signal.SIGKILL)
    code, err = run.finish()

    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("ppsample: ") for line in lines), err  # no traceback, no Beam log
    errors = [line for line in lines if line.startswith("ppsample: error:")]
    assert len(errors) == 1 and errors == lines[-1:], err
    match = ONE_LINE.match(errors[0])
    assert match and int(match.group(1)) == victim, errors[0]
    assert _files(tmp_path / "out") == before  # untouched; no staging folder left in it
    _assert_nothing_left(run.proc.pid, list(run.seen.values()))

    rerun = subprocess.run(_command(shards, seed=0), cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(tmp_path / "out") == clean


@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGINT, 130, "ppsample: interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "ppsample: terminated (SIGTERM)"),
    (signal.SIGKILL, -signal.SIGKILL, None),
])
def test_no_worker_or_worker_child_outlives_the_launcher(signum, code, line, tmp_path, shards,
                                                          previous):
    shutil.copytree(previous, tmp_path / "out")
    before = _files(tmp_path / "out")
    run = _Launch(tmp_path, shards, "scored")
    worker, child = run.held_worker()
    os.kill(run.proc.pid, signum)
    got, err = run.finish()

    assert got == code, err
    if line is not None:
        assert [l for l in err.splitlines() if l.strip()][-1] == line, err
        assert _files(tmp_path / "out") == before
    # after SIGKILL nothing in the launcher ran: the kernel ends its workers
    # (PR_SET_PDEATHSIG), but not a worker's own children (see worker_watchdog)
    # (every held worker's: both workers may have reached the moment before the kill)
    spare = _held_children(run.holds) if signum == signal.SIGKILL else ()
    assert signum != signal.SIGKILL or child in spare
    try:
        _assert_nothing_left(run.proc.pid, list(run.seen.values()), spare)
    finally:
        for pid in spare:
            os.kill(pid, signal.SIGKILL)


def test_an_error_raised_inside_a_worker_reaches_the_user_as_its_own_message(tmp_path, shards):
    """A model the launcher's check passes (its KenLM file is fine) but the workers cannot load
    (a truncated SentencePiece model): the workers' own error, in one line."""
    from lm_models import model_sources
    from lm_models.perplexity import DEFAULT_MODEL

    files = model_sources.resolve(DEFAULT_MODEL)
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(files.lm_path, model)
    shutil.copy(files.directory / "model.json", model)
    (model / files.sp_path.name).write_bytes(files.sp_path.read_bytes()[:1000])
    proc = subprocess.Popen([*_command(shards, seed=0), "--model", str(model)], cwd=tmp_path,
                            env=_env(), stderr=subprocess.PIPE, text=True)
    launcher = psutil.Process(proc.pid)
    seen = {}
    while proc.poll() is None:  # collect the process tree while it runs
        for child in _launched_by(launcher):
            seen.setdefault(child.pid, child)
        time.sleep(0.05)
    err = proc.stderr.read()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 1, err
    assert len(lines) == 1 and "could not parse ModelProto" in lines[0], err
    assert "Empty" not in err
    assert seen  # it ran worker processes
    _assert_nothing_left(proc.pid, list(seen.values()))
