"""pipelines.preforked_workers: Beam's local SDK workers forked from the launcher. Each check
runs in a fresh interpreter (a launcher with no other thread, as ppsample's is when it forks);
Beam's worker main is replaced by a probe that reports what the forked process sees. The whole
run with forked workers (byte-identical outputs, a worker killed mid-run):
tests/test_pipeline_reproducibility.py and tests/test_worker_crash.py."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")


def _launcher(tmp_path, body: str) -> dict:
    """Runs `body` in a fresh launcher process; returns the JSON it prints last."""
    script = textwrap.dedent('''
        import json, os, subprocess, sys
        from pipelines import preforked_workers as pf, worker_watchdog as wd
        OUT = sys.argv[1]

        def probe(**_):  # in place of Beam's worker main, in the forked child
            with open(os.path.join(OUT, f"probe.{os.getpid()}"), "w") as f:
                json.dump({"env": dict(os.environ), "pgid": os.getpgid(0), "ppid": os.getppid(),
                           "beam_loaded": "apache_beam.runners.worker.sdk_worker_main"
                           in sys.modules}, f)
            os._exit(int(os.environ.get("PROBE_EXIT", "0")))

        import apache_beam.runners.worker.sdk_worker_main  # what the launcher holds
        wd.worker_main = probe
        launcher = wd.WorkerLauncher(quiet_stderr=True)
        command = f"{sys.executable} -m {wd.SDK_WORKER_MAIN}"
    ''') + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe(tmp_path, pid: int) -> dict:
    return json.loads((tmp_path / f"probe.{pid}").read_text())


def test_beam_gets_a_forked_worker_with_its_environment_and_exit_status(tmp_path):
    out = _launcher(tmp_path, '''
        assert pf.prefork(2) == 2
        env = {"WORKER_ID": "worker_1", "CONTROL_API_SERVICE_DESCRIPTOR": "url: 'x'",
               "PROBE_EXIT": "3"}
        p = launcher.Popen(command, shell=True, env=env)
        code = p.wait()
        spare = pf.take()
        print(json.dumps({"pid": p.pid, "type": type(p).__name__, "code": code,
                          "launcher": os.getpid(), "spare": spare.pid,
                          "watched": [w.pid for w in wd.workers()]}))
    ''')
    assert out["type"] == "ForkedProcess" and out["code"] == 3
    assert out["watched"] == [out["pid"]]  # the watchdog sees it as any worker
    seen = _probe(tmp_path, out["pid"])
    assert seen["beam_loaded"]  # no import: the launcher's modules
    assert seen["ppid"] == out["launcher"]
    assert seen["pgid"] == out["pid"]  # its own session: a terminal's Ctrl-C is the launcher's
    assert seen["env"]["WORKER_ID"] == "worker_1"
    assert seen["env"]["PPSAMPLE_LAUNCHER_PID"] == str(out["launcher"])
    assert not (tmp_path / f"probe.{out['spare']}").exists()  # the other one was never started


def test_the_forked_environment_is_exactly_beams_and_spares_end_when_released(tmp_path):
    out = _launcher(tmp_path, '''
        os.environ["LAUNCHER_ONLY"] = "1"  # inherited by the fork, but not in Beam's env
        assert pf.prefork(2) == 2
        os.environ["AFTER_FORK"] = "1"
        p = launcher.Popen(command, shell=True, env={"WORKER_ID": "worker_2"})
        p.wait()
        spare = pf._spares[0].pid
        pf.release()
        try:
            os.kill(spare, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        print(json.dumps({"pid": p.pid, "spare_alive": alive, "left": len(pf._spares)}))
    ''')
    env = _probe(tmp_path, out["pid"])["env"]
    assert env["WORKER_ID"] == "worker_2"
    assert "AFTER_FORK" not in env and "LAUNCHER_ONLY" not in env
    assert out == {**out, "spare_alive": False, "left": 0}


def test_a_launcher_with_another_thread_keeps_beams_own_start(tmp_path):
    out = _launcher(tmp_path, '''
        import threading
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        forked = pf.prefork(2)
        stop.set(); t.join()
        print(json.dumps({"forked": forked, "spares": len(pf._spares)}))
    ''')
    assert out == {"forked": 0, "spares": 0}


def test_another_command_line_is_started_as_beam_asks(tmp_path):
    out = _launcher(tmp_path, '''
        assert pf.prefork(1) == 1
        p = launcher.Popen(command + " --extra", shell=True, env={"WORKER_ID": "w"})
        print(json.dumps({"type": type(p).__name__, "spares": len(pf._spares)}))
        p.kill(); pf.release()
    ''')
    assert out == {"type": "Popen", "spares": 1}


def test_a_spare_killed_while_it_waits_is_handed_over_dead_for_the_watchdog_to_name(tmp_path):
    out = _launcher(tmp_path, '''
        import signal, time
        assert pf.prefork(1) == 1
        os.kill(pf._spares[0].pid, signal.SIGKILL)
        time.sleep(0.2)
        p = launcher.Popen(command, shell=True, env={"WORKER_ID": "worker_1"})
        print(json.dumps({"code": p.wait(), "watched": [w.worker_id for w in wd.workers()]}))
    ''')
    assert out == {"code": -9, "watched": ["worker_1"]}
