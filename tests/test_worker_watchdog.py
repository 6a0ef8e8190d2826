"""pipelines.worker_watchdog on its own, with plain processes started the way Beam starts its
SDK workers (WorkerLauncher.Popen, shell=True): the main thread blocked forever, as Beam's
runner is when a worker dies, is interrupted with WorkerDied naming the worker and its signal;
a clean exit is no crash; a Ctrl-C is not blamed on the workers it stops; and leaving the block
in any way ends the workers and their children. The whole run end to end:
tests/test_worker_crash.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from pipelines import worker_watchdog as wd

HANG_GUARD_S = 60
SLEEPER = f"{sys.executable} -c 'import time; time.sleep(600)'"
# a "worker" that starts a child of its own, prints the child's pid, then sleeps
PARENT = (f"{sys.executable} -c 'import subprocess, sys, time; "
          f"c = subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(600)\"]); "
          f"print(c.pid, flush=True); time.sleep(600)'")


def _start(command: str, worker_id: str = "worker_7", **kwargs) -> subprocess.Popen:
    launcher = wd.WorkerLauncher(quiet_stderr=True)
    return launcher.Popen(command, shell=True, env={**os.environ, "WORKER_ID": worker_id},
                          **kwargs)


def _blocked_forever() -> None:
    """What Beam's runner does after a worker died: wait for an answer that never comes."""
    threading.Event().wait(HANG_GUARD_S)
    pytest.fail("the watchdog did not interrupt the blocked main thread")


def _gone(*pids: int) -> bool:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=HANG_GUARD_S)  # a guard: SIGKILL is sent
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_a_worker_killed_by_sigkill_interrupts_the_blocked_run_in_one_line():
    with pytest.raises(wd.WorkerDied) as caught:
        with wd.watching():
            other = _start(SLEEPER, "worker_1")
            victim = _start(SLEEPER, "worker_2")
            os.kill(victim.pid, signal.SIGKILL)
            _blocked_forever()
    message = caught.value.message
    assert message.startswith(f"Beam worker process {victim.pid} (worker_2) was killed by "
                              "signal 9 (SIGKILL; out of memory?);"), message
    assert "--direct_num_workers" in message and "--max-doc-bytes" in message
    assert "\n" not in message
    assert _gone(other.pid)  # the other worker is ended with the run


def test_a_worker_exit_status_is_named():
    with pytest.raises(wd.WorkerDied, match=r"\(worker_3\) exited with status 3;"):
        with wd.watching():
            _start(f"{sys.executable} -c 'raise SystemExit(3)'", "worker_3")
            _blocked_forever()


def test_a_worker_that_exits_cleanly_is_no_crash():
    with wd.watching():
        worker = _start(f"{sys.executable} -c pass")
        assert worker.wait(timeout=HANG_GUARD_S) == 0
    assert worker.returncode == 0


def test_leaving_the_block_on_an_error_ends_the_workers_and_their_children():
    with pytest.raises(ValueError, match="the pipeline's own error"):
        with wd.watching():
            worker = _start(PARENT, stdout=subprocess.PIPE, text=True)
            child = int(worker.stdout.readline())
            raise ValueError("the pipeline's own error")
    assert _gone(worker.pid, child)


def test_workers_stopped_by_ctrl_c_are_not_blamed():
    with pytest.raises(KeyboardInterrupt) as caught:
        with wd.watching():
            worker = _start(SLEEPER)
            wd.interrupted()  # what the CLI's SIGINT/SIGTERM handler does first
            os.kill(worker.pid, signal.SIGKILL)  # the worker dies of the interrupt
            assert worker.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
            raise KeyboardInterrupt
    assert not isinstance(caught.value, wd.WorkerDied)


def test_a_death_beam_reports_first_is_still_named():
    """Beam's own error for a dead worker (a closed gRPC stream, with `Empty` as its context)
    can reach the driver before the watchdog's next poll: the worker's death replaces it."""
    with pytest.raises(wd.WorkerDied, match=r"killed by signal 9"):
        with wd.watching():
            worker = _start(SLEEPER)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=HANG_GUARD_S)  # reaped, as Beam's thread does
            raise RuntimeError("Socket closed")


def test_hold_for_test_does_nothing_unless_asked_in_a_worker(monkeypatch, tmp_path):
    monkeypatch.setenv(wd.HOLD_ENV, f"scored:{tmp_path}")
    monkeypatch.delenv(wd.LAUNCHER_PID_ENV, raising=False)
    wd.hold_for_test("scored")  # the launcher itself is never held
    monkeypatch.setenv(wd.LAUNCHER_PID_ENV, "1")
    wd.hold_for_test("decided")  # another moment
    assert list(tmp_path.iterdir()) == []


def test_a_worker_exits_at_once_after_the_harness_returns_and_not_when_it_fails(monkeypatch):
    """worker_main skips the interpreter's teardown only once Beam's harness has returned."""
    calls = []
    monkeypatch.setattr(wd, "_die_with_launcher", lambda: calls.append("pdeathsig"))
    monkeypatch.setattr(wd.os, "_exit", lambda code: calls.append(("exit", code)))
    import runpy

    monkeypatch.setattr(runpy, "run_module", lambda name, **kw: calls.append(name))
    wd.worker_main()
    assert calls == ["pdeathsig", wd.SDK_WORKER_MAIN, ("exit", 0)]
    calls.clear()
    wd.worker_main(die_with_launcher=False)  # a forked worker set it before it waited
    assert calls == [wd.SDK_WORKER_MAIN, ("exit", 0)]

    calls.clear()

    def harness_fails(name, **kw):
        raise RuntimeError("harness failed")

    monkeypatch.setattr(runpy, "run_module", harness_fails)
    with pytest.raises(RuntimeError, match="harness failed"):
        wd.worker_main()
    assert ("exit", 0) not in calls
