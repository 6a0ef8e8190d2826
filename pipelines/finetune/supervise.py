"""`ppsample finetune launch --supervise`: keep a (Spot) TPU VM training until the target step.

A Spot/preemptible TPU VM can be taken back at any time: its processes get SIGTERM, then the VM
is stopped (state PREEMPTED) and must be deleted and created again; nothing on its disk
survives. Training state lives in --workdir on gs://, so the supervisor only has to rebuild the
machine and start the same command again; the trainer resumes from the last checkpoint there.

Loop (every --poll-seconds):
  - `describe` the VM. Missing, PREEMPTED or TERMINATED -> a preemption event: delete what is
    left, create, install, start training (counted against --max-restarts);
  - READY -> read the training's exit file over ssh. No file yet: still running. Exit 0 and the
    workdir's latest checkpoint at the target step: done. Exit 2 (bad data/config, a NaN loss):
    stop, retrying cannot help. Any other end: start training again on the same VM (counted).
Each event is logged with a UTC timestamp.

What a preemption costs: the steps since the last checkpoint (the config's checkpoint_every /
checkpoint_minutes bound it: 30 minutes for gptj-6b-v3-8), plus rebuilding: create (~1-3 min),
install (~2-4 min with uv), restore the checkpoint and compile (~5-10 min for 6B); the shard
hashes are not read again (`--verify auto`).
"""
from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import time
from datetime import datetime, timezone

from pipelines.errors import RemoteError
from pipelines.finetune import tpu_vm

# exit status of `ppsample finetune` that retrying cannot fix (bad data, config, NaN loss)
FATAL_EXIT = 2
GONE_STATES = ("PREEMPTED", "TERMINATED", "STOPPED", "STOPPING")


def latest_checkpoint_step(workdir: str) -> int | None:
    """The largest finished checkpoint step in WORKDIR/checkpoints (orbax names them by step;
    unfinished saves carry a suffix and are ignored)."""
    import fsspec
    url = workdir.rstrip("/") + "/checkpoints"
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    steps = [int(name) for name in (posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
             if name.isdigit()]
    return max(steps) if steps else None


def target_step(args) -> int:
    """--steps, else the config's total_steps (read from the JSON: no JAX import needed here)."""
    if args.steps is not None:
        return int(args.steps)
    path = args.config
    if not os.path.isfile(path):
        path = os.path.join(tpu_vm.checkout_root(), "lm_models", "gptj", "configs",
                            f"{args.config}.json")
    with open(path) as f:
        return int(json.load(f)["total_steps"])


class Supervisor:
    def __init__(self, args, run=subprocess.run, sleep=time.sleep, log=None):
        self.args = args
        self._run = run
        self._sleep = sleep
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.target = target_step(args)
        self.restarts = 0
        self.events: list[str] = []

    def log(self, event: str, detail: str = "") -> None:
        self.events.append(event)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._log(f"[supervise {stamp}] {event}{': ' + detail if detail else ''}")

    # --- gcloud ----------------------------------------------------------------------
    def _gcloud(self, argv: list[str], capture: bool = False) -> subprocess.CompletedProcess:
        return self._run(argv, capture_output=capture, text=True)

    def vm_state(self) -> str | None:
        result = self._gcloud(tpu_vm.gcloud_tpu(self.args, "describe", "--format=value(state)"), capture=True)
        if result.returncode != 0:
            return None  # not found (or not reachable): treated as gone
        return (result.stdout or "").strip() or None

    def run_steps(self, steps: list[tpu_vm.Step]) -> None:
        for step in steps:
            self.log("run", step.description)
            result = self._gcloud(step.argv)
            if result.returncode != 0:
                raise RemoteError(f"{step.description} failed with exit code {result.returncode}")

    def exit_status(self) -> int | None:
        """The training's exit status on worker 0, or None while it runs (or the VM is unreachable)."""
        argv = tpu_vm.gcloud_tpu(self.args, "ssh", "--worker=0",
                                  f"--command=cat {tpu_vm.remote_arg(tpu_vm.REMOTE_EXIT)} 2>/dev/null || echo running")
        result = self._gcloud(argv, capture=True)
        text = (result.stdout or "").strip().splitlines()
        if result.returncode != 0 or not text or not text[-1].lstrip("-").isdigit():
            return None
        return int(text[-1])

    # --- actions ---------------------------------------------------------------------
    def rebuild(self) -> None:
        """Delete whatever is left of the VM, create it, install, start training."""
        if self.vm_state() is not None:
            self.run_steps([tpu_vm.Step("delete the preempted TPU VM",
                                        tpu_vm.gcloud_tpu(self.args, "delete", "--quiet"))])
        setup, remote_config = tpu_vm.setup_steps(self.args)
        self.run_steps([tpu_vm.create_step(self.args), *setup, tpu_vm.train_step(self.args, remote_config)])
        self._remote_config = remote_config

    def restart_training(self) -> None:
        self.run_steps([tpu_vm.train_step(self.args, self._remote_config)])

    def _count_restart(self, why: str) -> None:
        self.restarts += 1
        if self.restarts > self.args.max_restarts:
            raise RemoteError(f"{why}; giving up after {self.args.max_restarts} restarts")

    def run(self) -> int:
        """0 once the workdir reaches the target step; a failed VM step, a training that exits
        FATAL_EXIT, or too many restarts raise RemoteError (pipelines.cli prints it, exit 1)."""
        try:
            self._loop()
        except RemoteError:
            self.events.append("failed")  # the error itself is the CLI's one line, not logged twice
            raise
        return 0

    def _loop(self) -> None:
        workdir = self.args.workdir
        done = latest_checkpoint_step(workdir)
        if done is not None and done >= self.target:
            self.log("done", f"{workdir} is already at step {done} >= target {self.target}")
            return
        self.log("start", f"target step {self.target}, workdir {workdir}, at most {self.args.max_restarts} restarts")
        self.rebuild()
        while True:
            self._sleep(self.args.poll_seconds)
            state = self.vm_state()
            if state != "READY":
                if state in (None, *GONE_STATES):
                    step = latest_checkpoint_step(workdir)
                    self.log("preempted", f"VM state {state or 'gone'}; last checkpoint step {step}; rebuilding")
                    self._count_restart("preempted too often")
                    self.rebuild()
                continue  # CREATING, STARTING, REPAIRING...: wait
            status = self.exit_status()
            if status is None:
                continue
            step = latest_checkpoint_step(workdir)
            if status == 0 and step is not None and step >= self.target:
                self.log("done", f"training reached step {step} (target {self.target}) after "
                                 f"{self.restarts} restart(s)")
                return
            if status == FATAL_EXIT:
                raise RemoteError(f"training exited with status {status} (bad data, config or a "
                                  f"non-finite loss: see {tpu_vm.REMOTE_LOG} on the VM); not retrying")
            self.log("training ended early", f"exit status {status}, last checkpoint step {step}; restarting")
            self._count_restart("training keeps ending early")
            self.restart_training()
