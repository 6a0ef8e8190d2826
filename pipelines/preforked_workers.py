"""Beam's local SDK worker processes forked from the launcher instead of started afresh
(`--direct_running_mode multi_processing`, Linux).

A worker that Beam starts as `python -m apache_beam.runners.worker.sdk_worker_main` spends its
first ~2.5 CPU s importing Beam, pyarrow and the stages, which the launcher has already done;
on 2 cores and 100k documents those imports were ~5 s of CPU and ~2.5 s of wall time of a ~50 s
run. So just before the pipeline runs, while the launcher has no other thread and no gRPC
channel or server yet, `prefork(n)` forks n children that hold every module the launcher
imported and wait, blocked on a pipe, for the environment Beam gives a worker (its control and
logging addresses, the pipeline options, WORKER_ID). When Beam's job service asks for a worker,
worker_watchdog.WorkerLauncher.Popen hands it one of them (`take`), which then runs Beam's worker
main as the started process would. To Beam and to the watchdog it is a child process like the
other (a ForkedProcess: pid, poll, wait, kill); it leads its own session and dies with the
launcher, as started workers do. `release()` ends the spares nobody took.

Why a fork is safe here: only the main thread runs Python; the other OS threads are jemalloc's
(pyarrow) and OpenBLAS's, which handle fork themselves; gRPC's core is not initialised until the
runner starts its servers, after the fork. Anything else (another platform, a thread running)
keeps Beam's own start.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

_spares: list["ForkedProcess"] = []
_lock = threading.Lock()


class ForkedProcess:
    """A forked worker as subprocess.Popen shows a child: what Beam's SubprocessSdkWorker and the
    watchdog use of it (pid, returncode, poll, wait, kill)."""

    def __init__(self, pid: int, pipe_fd: int):
        self.pid, self.args, self.returncode = pid, "preforked sdk worker", None
        self._pipe_fd = pipe_fd
        self._lock = threading.Lock()

    def _reap(self, flags: int) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flags)
                except ChildProcessError:  # reaped by another thread: it set returncode
                    return self.returncode
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.05)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def start(self, env: dict, quiet_stderr: bool) -> None:
        """Sends the child the environment Beam built for the worker: it starts at once."""
        message = json.dumps({"env": dict(env), "quiet_stderr": quiet_stderr}).encode()
        try:
            with os.fdopen(self._pipe_fd, "wb") as pipe:
                pipe.write(message)
        except BrokenPipeError:
            pass  # it died while it waited (killed): the watchdog names it, as any dead worker
        finally:
            self._pipe_fd = None


def can_fork() -> bool:
    return sys.platform.startswith("linux") and threading.active_count() == 1


def prefork(n: int) -> int:
    """Forks up to n spare workers (none where can_fork() is False); returns how many."""
    release()
    if n < 1 or not can_fork():
        return 0
    launcher = os.getpid()
    for _ in range(n):
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            # Python >= 3.12 warns of any other OS thread; here those are jemalloc's and
            # OpenBLAS's, which register their own fork handlers (see the module docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child never returns into the launcher's code
            os.close(write_fd)
            _child(read_fd, launcher)
        os.close(read_fd)
        with _lock:
            _spares.append(ForkedProcess(pid, write_fd))
    return n


def take() -> ForkedProcess | None:
    with _lock:
        return _spares.pop(0) if _spares else None


def release() -> None:
    """Ends the spares no one took (their pipe closes: they exit) and reaps them."""
    with _lock:
        spares, _spares[:] = list(_spares), []
    for spare in spares:
        if spare._pipe_fd is not None:
            os.close(spare._pipe_fd)
            spare._pipe_fd = None
        spare.kill()
        spare.wait()


def _child(read_fd: int, launcher: int) -> None:
    code = 1
    try:
        for sibling in _spares:  # their pipes' write ends: only the launcher may hold them
            os.close(sibling._pipe_fd)
        _spares.clear()
        os.setsid()  # as WorkerLauncher starts workers: a terminal's Ctrl-C reaches the launcher
        from pipelines import worker_watchdog

        if not worker_watchdog.set_parent_death_signal(launcher):
            os._exit(1)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read()
        if not message:  # released, or the launcher ended: nothing to do
            os._exit(0)
        request = json.loads(message)
        os.environ.clear()
        os.environ.update(request["env"])
        if request["quiet_stderr"]:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        import logging

        root = logging.getLogger()
        for handler in list(root.handlers):  # the launcher's; Beam's worker adds its own
            root.removeHandler(handler)
        # ends the process (os._exit) once Beam's harness returns; the parent-death signal
        # was set above, before the wait
        worker_watchdog.worker_main(die_with_launcher=False)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 - a worker's error, as a started worker prints it
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
