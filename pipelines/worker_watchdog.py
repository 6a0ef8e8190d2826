"""Beam's local SDK worker processes (`--direct_running_mode multi_processing`): how they are
started, and a watchdog that stops the run when one of them dies.

Beam's FnApiRunner waits forever for an answer from a worker process that died (the kernel's
OOM killer, a segfault in a native library): the run hangs, or fails later with the name of an
internal exception. Around a local run, `watching()` polls the worker processes Beam started;
when one ends with a non-zero status, it kills the others and interrupts the launcher's main
thread (SIGUSR1, handled into WorkerDied), so the run stops within a second with one line that
says which worker died, how, and what to do. The driver's staging folder is then removed as for
any failed run.

No worker outlives ppsample: workers start in their own session (a terminal's Ctrl-C reaches
the launcher alone, which stops them), forked from the launcher before the run
(pipelines.preforked_workers) or else `exec`-ed by Beam's shell, so that the process Beam waits
on is the worker itself, with PR_SET_PDEATHSIG (Linux) so the kernel kills them if the launcher is
killed outright; `watching()` kills any that are left, and their process groups (their
children), when the run ends in any way.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from pipelines import preforked_workers
from pipelines.errors import OutputError

POLL_S = 0.2
INTERRUPT_SIGNAL = getattr(signal, "SIGUSR1", None)  # None on Windows: no watchdog there
# Test-only: "MOMENT:DIR" makes a worker process that reaches `hold_for_test(MOMENT)` start a
# child process (as a worker's native library might), write "PID CHILD_PID" to DIR/MOMENT.PID
# and stop there until it is killed (tests kill workers at known moments).
HOLD_ENV = "PPSAMPLE_TEST_HOLD"


class WorkerDied(OutputError):
    """A Beam worker process died while the run needed it (one line, non-zero exit)."""


class _StopRun(BaseException):
    """Raised into the main thread by SIGUSR1: a BaseException, so that no `except Exception`
    in Beam's waiting code catches it on its way out; `watching` turns it into WorkerDied."""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        text = f"was killed by signal {number} ({name}"
        return text + ("; out of memory?)" if number == signal.SIGKILL else ")")
    return f"exited with status {returncode}"


def crash_message(worker: "Worker", returncode: int) -> str:
    return (f"Beam worker process {worker.pid} ({worker.worker_id}) {describe_exit(returncode)}; "
            "the run was stopped and its output discarded; run it again with fewer workers "
            "(--direct_num_workers), on a machine with more memory, or with a lower "
            "--max-doc-bytes")


class Worker:
    """One SDK worker process started by Beam (a subprocess.Popen)."""

    def __init__(self, popen: subprocess.Popen, worker_id: str):
        self.popen, self.worker_id, self.pid = popen, worker_id, popen.pid
        self.killed_by_us = False
        self.ended = False  # its exit was seen by the watchdog

    def returncode(self) -> int | None:
        """Its exit status, without reaping it (Beam's thread waits on it): None while it runs."""
        if self.popen.returncode is not None or not hasattr(os, "waitid"):  # macOS: no waitid
            return self.popen.returncode  # set by Beam's thread once it has reaped the worker
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # just reaped by Beam's thread, which sets returncode next
            try:
                return self.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                return None
        if info is None:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status  # killed or dumped core: Popen's convention

    def kill(self) -> None:
        """SIGKILL to its process group: it and its children (it leads its own session, so
        the group outlives it while a child of it runs)."""
        self.killed_by_us = self.killed_by_us or not self.ended
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


_workers: list[Worker] = []
_workers_lock = threading.Lock()


def workers() -> list[Worker]:
    with _workers_lock:
        return list(_workers)


def kill_all() -> None:
    """Every worker of this run still running, and what is left of each one's process group."""
    for worker in workers():
        worker.kill()


SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
LAUNCHER_PID_ENV = "PPSAMPLE_LAUNCHER_PID"


def set_parent_death_signal(launcher: int | None) -> bool:
    """In a worker process: the kernel kills it when the launcher dies (Linux), even by
    SIGKILL, when nothing in the launcher can stop it. False when the launcher has already
    died (before the signal was set: nobody would wait for this process)."""
    if not sys.platform.startswith("linux"):
        return True
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return True
    return launcher is None or os.getppid() == launcher


def _die_with_launcher() -> None:
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not set_parent_death_signal(int(launcher) if launcher else None):
        os._exit(1)


class WorkerLauncher:
    """`subprocess` as Beam's local job service sees it: its Popen starts SDK workers the way
    the module docstring says, and records them for the watchdog."""

    def __init__(self, quiet_stderr: bool):
        self.quiet_stderr = quiet_stderr

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def Popen(self, args, *rest, **kwargs):  # noqa: N802 - subprocess's name
        kwargs.setdefault("start_new_session", True)
        if self.quiet_stderr:
            # Workers log through Beam's logging service; what they write to stderr directly is
            # only the noise of their teardown ("terminate called ...") after the driver stopped.
            kwargs.setdefault("stderr", subprocess.DEVNULL)
        popen = None
        if isinstance(args, str) and kwargs.get("shell") and f" -m {SDK_WORKER_MAIN}" in args:
            kwargs["env"] = {**(kwargs.get("env") or os.environ),
                             LAUNCHER_PID_ENV: str(os.getpid())}
            spare = (preforked_workers.take()
                     if args.strip() == f"{sys.executable} -m {SDK_WORKER_MAIN}" and not rest
                     else None)
            if spare is not None:  # forked before the run, holding Beam's modules already
                spare.start(kwargs["env"], quiet_stderr=kwargs.get("stderr") is subprocess.DEVNULL)
                popen = spare
            else:
                # `exec`: the shell becomes the worker (the pid Beam waits on, its exit signal);
                # this module's main sets the parent-death signal, then runs Beam's worker main
                args = "exec " + args.replace(f" -m {SDK_WORKER_MAIN}", f" -m {__name__}", 1)
        if popen is None:
            popen = subprocess.Popen(args, *rest, **kwargs)
        worker_id = (kwargs.get("env") or {}).get("WORKER_ID", "worker")
        with _workers_lock:
            _workers.append(Worker(popen, worker_id))
        return popen


def prefork_for(options) -> int:
    """Before a local run (the launcher has no other thread yet): forks the worker processes a
    multi-process run will ask for (preforked_workers); only when WorkerLauncher starts them."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability import local_job_service

    from pipelines.options import local_workers

    if (options.view_as(DirectOptions).direct_running_mode != "multi_processing"
            or not isinstance(getattr(local_job_service, "subprocess", None), WorkerLauncher)):
        return 0
    return preforked_workers.prefork(local_workers(options))


def install(quiet_stderr: bool) -> None:
    """Beam's local job service starts its SDK workers through WorkerLauncher."""
    try:
        from apache_beam.runners.portability import local_job_service
    except ImportError:  # another Beam layout: workers keep Beam's default
        return
    current = getattr(local_job_service, "subprocess", None)
    if current is subprocess or isinstance(current, WorkerLauncher):
        local_job_service.subprocess = WorkerLauncher(quiet_stderr)


class _Watch:
    def __init__(self):
        self.lock = threading.Lock()
        self.armed = True  # the main thread may still be interrupted
        self.crash: str | None = None
        self.pending = False  # SIGUSR1 sent, not yet raised in the main thread
        self.interrupted = False  # Ctrl-C / SIGTERM: workers dying now are not the cause
        self.stop = threading.Event()
        self.main_ident = threading.main_thread().ident
        self.can_interrupt = threading.current_thread() is threading.main_thread()

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            if self.check():
                return

    def check(self) -> bool:
        """Records the first worker that died on its own; kills the others. True if one did."""
        for worker in workers():
            code = None if worker.ended else worker.returncode()
            if code is None:
                continue
            worker.ended = True
            if code == 0 or worker.killed_by_us or self.interrupted:
                continue  # stopped by Beam at the end of the run, by us, or by the interrupt
            with self.lock:
                if self.crash is None:
                    self.crash = crash_message(worker, code)
                kill_all()
                if self.armed and self.can_interrupt:
                    self.armed, self.pending = False, True
                    signal.pthread_kill(self.main_ident, INTERRUPT_SIGNAL)
            return True
        return False


_current: list[_Watch] = []


def interrupted() -> None:
    """The launcher was interrupted (Ctrl-C, SIGTERM): the workers that die from now on die of
    that; the interrupt, not a worker, is the run's error."""
    for watch in _current:
        with watch.lock:
            watch.interrupted, watch.armed, watch.pending = True, False, False


def _interrupt(signum, frame):
    watch = _current[-1] if _current else None
    if watch is not None and watch.pending:
        watch.pending = False
        raise _StopRun


@contextlib.contextmanager
def watching(enabled: bool = True):
    """Around one local pipeline run: a worker process that dies stops the run with WorkerDied;
    when the block ends (in any way), the workers still running are killed."""
    if not enabled or INTERRUPT_SIGNAL is None:
        yield
        return
    with _workers_lock:
        _workers.clear()  # those of an earlier run have all ended
    watch = _Watch()
    if watch.can_interrupt:
        # Installed once and left in place: a late SIGUSR1 must never meet the default action.
        if signal.getsignal(INTERRUPT_SIGNAL) is not _interrupt:
            signal.signal(INTERRUPT_SIGNAL, _interrupt)
    _current.append(watch)
    thread = threading.Thread(target=watch.run, name="ppsample-worker-watchdog", daemon=True)
    thread.start()
    try:
        yield
    except KeyboardInterrupt:
        interrupted()
        raise
    except _StopRun:
        pass  # watch.crash is set: WorkerDied below
    finally:
        with watch.lock:  # no interrupt from here on: the block has ended
            watch.armed = watch.pending = False
        watch.stop.set()
        thread.join()
        watch.check()  # a death Beam noticed first (its error says nothing): name it
        kill_all()
        preforked_workers.release()
        _current.remove(watch)
        if watch.crash is not None:
            raise WorkerDied(watch.crash) from None


def hold_for_test(moment: str) -> None:
    """Test-only (HOLD_ENV): a worker process stops here, to be killed at a known moment."""
    spec = os.environ.get(HOLD_ENV)
    if not spec or spec.split(":", 1)[0] != moment or LAUNCHER_PID_ENV not in os.environ:
        return  # not asked, or not in a worker process (holding the launcher would hang it)
    directory = spec.split(":", 1)[1]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    marker = os.path.join(directory, f"{moment}.{os.getpid()}")
    with open(marker + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace(marker + ".tmp", marker)
    while True:
        time.sleep(60)


def worker_main(die_with_launcher: bool = True) -> None:
    """A Beam SDK worker process, started by WorkerLauncher: Beam's worker main, then an
    immediate exit. When the harness returns, it has answered every bundle and closed its log
    stream; the interpreter's teardown after that (gRPC's threads and channels, freeing the
    model and the modules) took ~1.2 s, during which the launcher waits for the process in
    FnApiRunner's close_all, with the output not yet committed. A harness that raises ends the
    process with the error, as before (the watchdog names it). A forked worker
    (preforked_workers) set its parent-death signal when it was forked: die_with_launcher=False."""
    import runpy

    if die_with_launcher:
        _die_with_launcher()
    runpy.run_module(SDK_WORKER_MAIN, run_name="__main__", alter_sys=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    worker_main()
