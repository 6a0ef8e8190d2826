"""`ppsample finetune launch --supervise` end to end against a fake `gcloud` on PATH.

The fake (written below into tmp_path) keeps each "TPU VM" as a directory: `create` makes a fresh
home, `delete` removes it, `describe` prints its state, `scp` copies into its home and `ssh
--command` runs the command on this machine with HOME set to the VM's home. Only the install
command is not run (it would download Python and jax[tpu]): the fake records it and puts a
`ppsample` shim in the venv that runs this checkout. Training itself is the real
`ppsample finetune`, started by the real start command. The test "preempts" the VM twice as a
Spot TPU is preempted: SIGTERM to the training's process group, then the VM is marked PREEMPTED.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import RemoteError
from pipelines.finetune import launch
from pipelines.finetune import token_shards as ts

REPO = Path(__file__).resolve().parents[1]
WINDOW = 33
CONFIG = {
    "model": {"vocab_size": 512, "n_ctx": 64, "d_model": 32, "n_layer": 1, "n_head": 2, "rotary_dim": 8, "d_ff": 64},
    "seq_len": WINDOW - 1, "global_batch": 4, "microbatches": 2, "lr_peak": 3e-3, "lr_end": 3e-4,
    "warmup_steps": 2, "total_steps": 400, "compute_dtype": "float32", "grad_accum_dtype": "float32",
    "mesh": {"fsdp": -1}, "eval_every": 1000, "eval_batches": 1, "log_every": 1,
    # like gptj-6b-v3-8: no save on SIGTERM, so each preemption loses the steps since the last checkpoint
    "checkpoint_every": 3, "save_on_signal": False, "keep_checkpoints": 2,
}

FAKE_GCLOUD = r'''#!PYTHON
"""Fake `gcloud compute tpus tpu-vm ...` for tests: VMs are directories under $FAKE_GCLOUD_ROOT."""
import os, shutil, subprocess, sys
root = os.environ["FAKE_GCLOUD_ROOT"]
args = sys.argv[1:]
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
verb, rest = args[3], args[4:]
flags = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else True for a in rest if a.startswith("--")}
positional = [a for a in rest if not a.startswith("--")]
def log(line):
    with open(os.path.join(root, "calls.log"), "a") as f:
        f.write(line + "\n")
def vm(name):
    return os.path.join(root, name)
def state(name):
    path = os.path.join(vm(name), "state")
    return open(path).read().strip() if os.path.exists(path) else None
log(verb + " " + " ".join(positional))
if verb == "create":
    name = positional[0]
    if state(name) is not None:
        sys.exit("ERROR: already exists")
    os.makedirs(os.path.join(vm(name), "home"))
    open(os.path.join(vm(name), "state"), "w").write("READY")
elif verb == "describe":
    s = state(positional[0])
    if s is None:
        sys.exit("ERROR: NOT_FOUND")
    print(s)
elif verb == "delete":
    shutil.rmtree(vm(positional[0]), ignore_errors=True)
elif verb == "scp":
    src, dest = positional
    name, path = dest.split(":", 1)
    if state(name) != "READY":
        sys.exit(255)
    target = os.path.join(vm(name), "home", path[2:] if path.startswith("~/") else path)
    shutil.copy(src, target)
elif verb == "ssh":
    name = positional[0]
    if state(name) != "READY":
        sys.exit(255)
    home = os.path.join(vm(name), "home")
    command = flags["--command"]
    if "uv venv" in command:  # the install: recorded, not run (it downloads Python and jax[tpu])
        log("install-command " + command)
        os.makedirs(os.path.join(home, "ppsample-venv", "bin"))
        shim = os.path.join(home, "ppsample-venv", "bin", "ppsample")
        with open(shim, "w") as f:
            f.write(os.environ["FAKE_PPSAMPLE_SHIM"])
        os.chmod(shim, 0o755)
        sys.exit(0)
    env = {**os.environ, "HOME": home}
    sys.exit(subprocess.run(["bash", "-c", command], env=env, cwd=home).returncode)
else:
    sys.exit(f"fake gcloud: unsupported verb {verb}")
'''


def write_tokens(root: Path, windows: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", windows), ("validation", 4)):
        rel = f"{split}/tokens-00000.bin"
        writer = ts.ShardWriter(str(root / rel), rel, WINDOW, np.dtype("<u2"))
        writer.write(rng.integers(0, 512, size=(n, WINDOW)))
        splits[split] = {"documents": n, "document_tokens": n * WINDOW, "windows": n, "tokens": n * WINDOW,
                         "dropped_tail_tokens": 0, "shards": [writer.close()]}
    ts.write_manifest(str(root), {"format": ts.FORMAT, "window": WINDOW, "dtype": "<u2", "eos_id": 511,
                                  "vocab_size": 512, "splits": splits})
    return root


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    root = tmp_path / "gcloud"
    bindir = tmp_path / "bin"
    root.mkdir()
    bindir.mkdir()
    gcloud = bindir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.replace("PYTHON", sys.executable, 1))
    gcloud.chmod(0o755)
    shim = ("#!/bin/bash\n"
            f"export PYTHONPATH={shlex.quote(str(REPO))} JAX_PLATFORMS=cpu "
            f"JAX_COMPILATION_CACHE_DIR={shlex.quote(str(tmp_path / 'jax-cache'))} "
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0\n"
            f"exec {shlex.quote(sys.executable)} -m pipelines.cli \"$@\"\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_ROOT", str(root))
    monkeypatch.setenv("FAKE_PPSAMPLE_SHIM", shim)
    return root


def _checkpoints(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def preempt(vm: Path) -> None:
    """What Google does to a Spot VM: SIGTERM to everything, then the VM stops (PREEMPTED)."""
    pgid = int((vm / "home" / "ppsample-finetune.pid").read_text())
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        log = vm / "home" / "ppsample-finetune.log"
        raise AssertionError("training was not running at the kill point:\n" +
                             (log.read_text()[-3000:] if log.exists() else "(no log)")) from None
    deadline = time.monotonic() + 60
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    (vm / "state").write_text("PREEMPTED")


def wait_until(condition, what: str, thread: threading.Thread, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert thread.is_alive(), f"the supervisor ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow  # 56-111 s here: four trainer processes start, each imports JAX and restores
def test_supervised_run_survives_two_preemptions_and_equals_an_uninterrupted_run(tmp_path, fake_gcloud):
    from safetensors.numpy import load_file

    from pipelines.finetune.stage import cli as finetune_cli
    from pipelines.finetune.supervise import Supervisor

    tokens = write_tokens(tmp_path / "tokens")
    config = tmp_path / "micro.json"
    config.write_text(json.dumps(CONFIG))
    target = 150  # enough steps left after each kill point that the run cannot finish first

    # the uninterrupted reference, in this process
    assert finetune_cli(["--config", str(config), "--data", str(tokens), "--workdir", str(tmp_path / "straight"),
                         "--steps", str(target)]) == 0

    workdir = tmp_path / "supervised"
    argv = ["--tpu-name", "spot-tpu", "--zone", "europe-west4-a", "--config", str(config), "--spot",
            "--data", str(tokens), "--workdir", str(workdir), "--steps", str(target), "--package", "ppsample",
            "--supervise", "--poll-seconds", "0.2", "--max-restarts", "3", "--allow-local-paths"]
    parser = __import__("argparse").ArgumentParser()
    launch.add_arguments(parser)
    args = parser.parse_args(argv)
    args.create = True
    events: list[str] = []
    supervisor = Supervisor(args, log=events.append)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
    thread.start()

    vm = fake_gcloud / "spot-tpu"
    pid_file = vm / "home" / "ppsample-finetune.pid"
    wait_until(lambda: max(_checkpoints(workdir), default=0) >= 6, "the first checkpoints", thread)
    first_pid = pid_file.read_text()
    preempt(vm)
    wait_until(lambda: pid_file.exists() and pid_file.read_text() not in ("", first_pid),
               "the VM to be rebuilt and training restarted", thread)
    second_pid = pid_file.read_text()
    wait_until(lambda: max(_checkpoints(workdir), default=0) >= 30, "the resumed run's checkpoints", thread)
    preempt(vm)
    thread.join(timeout=300)
    assert not thread.is_alive(), "\n".join(events)
    assert result == [0], "\n".join(events)
    assert pid_file.read_text() not in (first_pid, second_pid)  # a third incarnation finished the run

    assert supervisor.events.count("preempted") == 2, "\n".join(events)
    assert supervisor.events[-1] == "done"
    calls = (fake_gcloud / "calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls if c.split()[0] in ("create", "delete")] == \
        ["create", "delete", "create", "delete", "create"]
    installs = [c for c in calls if c.startswith("install-command ")]
    assert len(installs) == 3                                  # reinstalled on every new VM
    assert all("uv venv -q --python 3.11" in c and "--no-deps ppsample" in c for c in installs)
    assert all("kenlm" not in c and "apache-beam" not in c for c in installs)

    # every step was logged by some incarnation; the preempted ones lost the steps after a checkpoint
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows if "loss" in r}) == list(range(1, target + 1))
    straight = {r["step"]: r["loss"] for r in
                (json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines())
                if "loss" in r}
    assert {r["step"]: r["loss"] for r in rows if "loss" in r} == straight

    got = load_file(str(workdir / "hf" / "model.safetensors"))
    expected = load_file(str(tmp_path / "straight" / "hf" / "model.safetensors"))
    assert got.keys() == expected.keys()
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name


# --- fast: the supervisor's policy against the same fake gcloud, with a stand-in trainer ------
# The stand-in resumes from the workdir's largest checkpoint, writes one every 3 steps and exits
# on SIGTERM without saving (as gptj-6b-v3-8 does); FAKE_TRAINER_EXIT makes it fail at once.
FAKE_TRAINER = r'''#!/bin/bash
while [ $# -gt 0 ]; do case "$1" in --workdir) W="$2"; shift;; --steps) N="$2"; shift;; esac; shift; done
if [ -n "$FAKE_TRAINER_EXIT" ]; then exit "$FAKE_TRAINER_EXIT"; fi
mkdir -p "$W/checkpoints"
step=$(ls "$W/checkpoints" | sort -n | tail -1); step=${step:-0}
echo "$step" >> "$W/starts.log"
trap 'exit 0' TERM
while [ "$step" -lt "$N" ]; do
  sleep 0.02; step=$((step + 1))
  if [ $((step % 3)) -eq 0 ] || [ "$step" -eq "$N" ]; then mkdir -p "$W/checkpoints/$step"; fi
done
'''


def _supervisor(tmp_path, target: int, max_restarts: int = 3):
    from pipelines.finetune.supervise import Supervisor
    import argparse
    parser = argparse.ArgumentParser()
    launch.add_arguments(parser)
    args = parser.parse_args(["--tpu-name", "spot", "--zone", "z", "--config", "tiny", "--spot", "--package", "ppsample",
                              "--data", str(tmp_path / "tokens"), "--workdir", str(tmp_path / "w"),
                              "--steps", str(target), "--supervise", "--poll-seconds", "0.05",
                              "--max-restarts", str(max_restarts), "--allow-local-paths"])
    args.create = True
    lines: list[str] = []
    return Supervisor(args, log=lines.append), lines


def _start(supervisor):
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
    thread.start()
    return thread, result


def test_supervisor_rebuilds_a_preempted_vm_and_resumes_from_the_last_checkpoint(tmp_path, fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAKE_PPSAMPLE_SHIM", FAKE_TRAINER)
    supervisor, lines = _supervisor(tmp_path, target=90)
    thread, result = _start(supervisor)
    vm, workdir = fake_gcloud / "spot", tmp_path / "w"
    pid_file = vm / "home" / "ppsample-finetune.pid"
    wait_until(lambda: max(_checkpoints(workdir), default=0) >= 6, "the first checkpoints", thread)
    first_pid = pid_file.read_text()
    preempt(vm)
    first_stop = max(_checkpoints(workdir))
    wait_until(lambda: pid_file.exists() and pid_file.read_text() not in ("", first_pid), "a rebuilt VM", thread)
    wait_until(lambda: max(_checkpoints(workdir), default=0) >= first_stop + 9, "the resumed run", thread)
    preempt(vm)
    second_stop = max(_checkpoints(workdir))
    thread.join(timeout=60)
    assert result == [0], "\n".join(lines)
    assert supervisor.events.count("preempted") == 2 and supervisor.events[-1] == "done"
    assert supervisor.restarts == 2
    # each incarnation started from the last checkpoint the previous one left
    assert [int(x) for x in (workdir / "starts.log").read_text().split()] == [0, first_stop, second_stop]
    assert max(_checkpoints(workdir)) == 90
    calls = [c.split()[0] for c in (fake_gcloud / "calls.log").read_text().splitlines()]
    assert [c for c in calls if c in ("create", "delete", "install-command")] == \
        ["create", "install-command", "delete", "create", "install-command", "delete", "create", "install-command"]
    assert any("preempted: VM state PREEMPTED" in line for line in lines)


def test_supervisor_does_not_retry_a_run_that_failed_on_its_data_or_config(tmp_path, fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAKE_PPSAMPLE_SHIM", FAKE_TRAINER)
    monkeypatch.setenv("FAKE_TRAINER_EXIT", "2")
    supervisor, lines = _supervisor(tmp_path, target=30)
    with pytest.raises(RemoteError, match="not retrying"):
        supervisor.run()
    assert supervisor.restarts == 0 and supervisor.events[-1] == "failed"


def test_supervisor_gives_up_after_max_restarts(tmp_path, fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAKE_PPSAMPLE_SHIM", FAKE_TRAINER)
    monkeypatch.setenv("FAKE_TRAINER_EXIT", "1")       # e.g. a crash that keeps happening
    supervisor, lines = _supervisor(tmp_path, target=30, max_restarts=2)
    with pytest.raises(RemoteError, match="giving up after 2 restarts"):
        supervisor.run()
    assert supervisor.restarts == 3


def test_supervisor_with_a_finished_workdir_does_nothing(tmp_path, fake_gcloud):
    (tmp_path / "w" / "checkpoints" / "30").mkdir(parents=True)
    supervisor, lines = _supervisor(tmp_path, target=30)
    assert supervisor.run() == 0 and supervisor.events == ["done"]
    assert not (fake_gcloud / "calls.log").exists()       # no VM was created
