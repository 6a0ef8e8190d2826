"""The GPT-J finetune loop: data -> train step -> metrics, evaluation, checkpoints, export.

Everything that decides a step's result is a function of the step number: the batch
(data_loader.TrainBatches), the learning rate (train.learning_rate) and the state restored from
the checkpoint of that step. So a run stopped at any checkpoint and resumed gives bit-identical
losses and params to an uninterrupted run; `steps` only says where to stop.

Checkpoints (orbax, async, last `keep_checkpoints` kept) go to WORKDIR/checkpoints/<step>; the
latest one is restored automatically. A checkpoint is written every `checkpoint_every` steps and,
with `checkpoint_minutes`, whenever that much training time passed since the last one (so a
preemption loses a bounded amount of work whatever the step time). SIGTERM (TPU preemption) or
SIGINT stops the loop after the current step; it saves that step only when the config's
`save_on_signal` is true (a 6B state is ~72 GB: too big for a preemption notice, so the 6B config
relies on the timed checkpoints instead). A step whose loss or gradient norm is not finite stops
training with NonFiniteLossError before anything is saved, so the last checkpoint stays the last
good state; a batch holding a token id outside the model's vocabulary is refused before its step.
WORKDIR/metrics.jsonl gets one JSON row per step and one per evaluation; rows past the restored
step (written before a crash) are dropped on resume. The final params are exported in Hugging
Face format to WORKDIR/hf.
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import shutil
import signal
import tempfile
import threading
import time
from typing import Callable

import fsspec
import jax
import numpy as np

from lm_models.errors import ModelError
from lm_models.paths import join
from lm_models.gptj import sharding
from lm_models.gptj.data_loader import TrainBatches, WindowSource, eval_batches
from lm_models.gptj.train_step import (TrainConfig, init_train_state, make_eval_step, make_mesh,
                                  make_train_step, state_shapes, state_shardings)

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
CONFIG = "train_config.json"
EXPORT = "hf"
DATA = "train_data.json"


class NonFiniteLossError(ModelError, ValueError):
    """The training loss or gradient norm became NaN/inf; nothing from that step was saved."""


# Config fields that only say how the run is operated, not what it computes: they may change when
# a run is resumed (e.g. a different checkpoint cadence on a new VM).
OPERATIONAL_FIELDS = ("checkpoint_every", "checkpoint_minutes", "save_on_signal", "keep_checkpoints",
                      "log_every")


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


class MetricsLog:
    """WORKDIR/metrics.jsonl: appended line by line locally; rewritten whole on gs:// (no append)."""

    def __init__(self, workdir: str, keep_through_step: int, enabled: bool = True):
        self.url = join(workdir, METRICS)
        self.enabled = enabled
        self.remote = _is_remote(workdir)
        self.rows: list[dict] = []
        if not enabled:
            return
        fs, path = fsspec.core.url_to_fs(self.url)
        if fs.exists(path):
            with fs.open(path, "r") as f:
                old = [json.loads(line) for line in f if line.strip()]
            # rows after the checkpoint we resume from are re-run, so they must not appear twice
            self.rows = [row for row in old if row.get("step", 0) <= keep_through_step]
        self._rewrite()
        self._file = None if self.remote else open(path, "a", encoding="utf-8")

    def _rewrite(self) -> None:
        with fsspec.open(self.url, "w") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def flush(self) -> None:
        if self.enabled and self.remote:
            self._rewrite()

    def close(self) -> None:
        self.flush()
        if self.enabled and self._file is not None:
            self._file.close()


class StopRequest:
    """SIGTERM/SIGINT -> stop after the current step, agreed by all hosts."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            # every host must stop at the same step or the collective checkpoint save would hang;
            # JAX's preemption service syncs the notice (needs jax.distributed.initialize)
            from jax.experimental import multihost_utils
            return self.signal is not None or multihost_utils.reached_preemption_sync_point(step)
        return self.signal is not None


def _check_config_unchanged(workdir: str, cfg: TrainConfig, resuming: bool) -> None:
    url = join(workdir, CONFIG)
    fs, path = fsspec.core.url_to_fs(url)
    current = cfg.to_dict()
    if fs.exists(path):
        with fs.open(path, "r") as f:
            saved = json.load(f)
        for name in OPERATIONAL_FIELDS:
            saved.pop(name, None)
        compared = {k: v for k, v in current.items() if k not in OPERATIONAL_FIELDS}
        if resuming and saved != json.loads(json.dumps(compared)):
            changed = sorted(k for k in set(saved) | set(compared)
                             if json.dumps(saved.get(k), sort_keys=True) != json.dumps(compared.get(k), sort_keys=True))
            raise ValueError(f"{workdir} holds checkpoints of a different training config (changed: "
                             f"{', '.join(changed)}); use a new --workdir or the original config")
    if jax.process_index() == 0:
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
        with fs.open(path, "w") as f:
            json.dump(current, f, indent=2, sort_keys=True)


def _check_data_unchanged(workdir: str, fingerprint: str | None, resuming: bool) -> None:
    """Resuming on other data would silently mix two runs: refuse it."""
    if fingerprint is None:
        return
    url = join(workdir, DATA)
    fs, path = fsspec.core.url_to_fs(url)
    if resuming and fs.exists(path):
        with fs.open(path, "r") as f:
            saved = json.load(f).get("fingerprint")
        if saved != fingerprint:
            raise ValueError(f"{workdir} holds checkpoints trained on other data (fingerprint {saved}, "
                             f"now {fingerprint}); use a new --workdir")
    if jax.process_index() == 0:
        with fs.open(path, "w") as f:
            json.dump({"fingerprint": fingerprint}, f)


def _load_init_params(init: str, cfg: TrainConfig, mesh):
    """Params of a Hugging Face GPT-J directory (local path or fsspec URL such as gs://), checked
    against the config. A URL is streamed tensor by tensor into the sharded layout (convert.from_hf),
    never copied whole to local disk."""
    from lm_models.gptj.convert import from_hf, load_hf_config
    model = load_hf_config(init)
    if model != cfg.model:
        raise ValueError(f"--init {init} is a GPT-J of {model}, but the config trains {cfg.model}")
    _, params = from_hf(init, mesh=mesh)
    return params


def _load_init_state(init_state: str, cfg: TrainConfig, mesh, abstract) -> tuple:
    """Params AND Adam moments from the latest checkpoint of another run (a workdir or its
    checkpoints/ folder), with the step reset to 0: continuing an optimizer state instead of
    starting Adam from zero (BERTIN continued GPT-J's pretraining moments)."""
    import orbax.checkpoint as ocp
    fs, path = fsspec.core.url_to_fs(join(init_state, CHECKPOINTS))
    directory = join(init_state, CHECKPOINTS) if fs.exists(path) else init_state
    if not _is_remote(directory):
        directory = os.path.abspath(directory)
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        latest = manager.latest_step()
        if latest is None:
            raise ValueError(f"--init-state {init_state}: no checkpoint found in {directory}")
        try:
            state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--init-state {init_state}: checkpoint {latest} does not match the config's "
                             f"model/optimizer state: {e}") from e
    finally:
        manager.close()
    step = jax.device_put(np.zeros((), np.int32), abstract.step.sharding)
    return state._replace(step=step), latest


def _global_batch(local: np.ndarray, batch_sharding) -> jax.Array:
    """This host's rows -> one global array (each host feeds only its own devices)."""
    return jax.make_array_from_process_local_data(batch_sharding, local)


def check_token_ids(local: np.ndarray, vocab_size: int, step: int) -> None:
    """An id >= vocab_size would index past the embedding (XLA clamps it: a silent wrong loss)."""
    largest = int(local.max()) if local.size else 0
    smallest = int(local.min()) if local.size else 0
    if largest >= vocab_size or smallest < 0:
        raise ValueError(f"the batch of step {step} holds token id {largest if largest >= vocab_size else smallest}, "
                         f"outside the model's vocabulary [0, {vocab_size}); was the data tokenised "
                         f"for another model?")


class CheckpointClock:
    """Decides when to checkpoint: every `every` steps, or after `minutes` of training since the
    last save. On several hosts process 0's clock decides for all (a collective save must happen
    at the same step everywhere)."""

    def __init__(self, every: int, minutes: float):
        self.every = every
        self.seconds = minutes * 60.0
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        timed = self.seconds > 0 and time.monotonic() - self.last >= self.seconds
        if self.seconds > 0 and jax.process_count() > 1:
            from jax.experimental import multihost_utils
            timed = bool(multihost_utils.broadcast_one_to_all(np.array(timed)))
        return step % self.every == 0 or timed

    def saved(self) -> None:
        self.last = time.monotonic()


def evaluate(eval_fn, params, data: WindowSource, cfg: TrainConfig, mesh) -> dict:
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, cfg.global_batch))
    loss_sum, tokens = 0.0, 0
    for local in eval_batches(data, cfg.global_batch, jax.process_index(), jax.process_count(),
                              cfg.eval_batches):
        out = eval_fn(params, _global_batch(local, batch_sharding))
        loss_sum += float(out["loss_sum"])
        tokens += int(out["tokens"])
    val_loss = loss_sum / tokens
    return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700.0)), "val_tokens": tokens}


def export_hf(cfg: TrainConfig, params, workdir: str, dtype=np.float32) -> str:
    """Write the params as a Hugging Face GPT-J directory WORKDIR/hf (via a local dir for gs://)."""
    from lm_models.gptj.convert import to_hf
    target = join(workdir, EXPORT)
    if jax.process_count() > 1:  # params span hosts: gather them (a collective: every host calls it)
        from jax.experimental import multihost_utils
        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
        return target
    if not _is_remote(workdir):
        if os.path.isdir(target):
            shutil.rmtree(target)
        to_hf(cfg.model, params, target, dtype=dtype)
        return target
    with tempfile.TemporaryDirectory(prefix="ppsample-export-") as tmp:
        to_hf(cfg.model, params, tmp, dtype=dtype)
        fs, path = fsspec.core.url_to_fs(target)
        fs.put(tmp.rstrip("/") + "/", path, recursive=True)
    return target


def train(cfg: TrainConfig, train_data: WindowSource, val_data: WindowSource | None, workdir: str, *,
          steps: int | None = None, init: str | None = None, export: bool = True,
          export_dtype=np.float32, devices=None, data_fingerprint: str | None = None,
          log: Callable[[str], None] | None = None, init_state: str | None = None) -> dict:
    """Train until global step `steps` (default cfg.total_steps), resuming from WORKDIR if possible.

    init: a Hugging Face GPT-J directory (local or URL) to start from, Adam moments fresh.
    init_state: or another run's workdir: params and Adam moments of its latest checkpoint.
    data_fingerprint: identifies the training windows (e.g. a hash of the shard checksums);
    resuming a workdir with a different one is refused.
    Returns a summary: start_step, step (reached), stopped_by_signal, last metrics, paths.
    """
    import orbax.checkpoint as ocp

    log = log or (lambda line: print(line, flush=True))
    if init and init_state:
        raise ValueError("give --init (weights only) or --init-state (weights and Adam moments), not both")
    target = cfg.total_steps if steps is None else int(steps)
    if target < 0:
        raise ValueError(f"--steps must be >= 0, got {target}")
    mesh = make_mesh(cfg, devices)  # a mesh that does not fit the devices fails here, first
    loader = TrainBatches(train_data, cfg.global_batch, cfg.seed, jax.process_index(), jax.process_count())
    is_main = jax.process_index() == 0
    if not _is_remote(workdir):
        workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)

    manager = ocp.CheckpointManager(
        join(workdir, CHECKPOINTS),
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, create=True,
                                             enable_async_checkpointing=True))
    latest = manager.latest_step()
    _check_config_unchanged(workdir, cfg, resuming=latest is not None)
    _check_data_unchanged(workdir, data_fingerprint, resuming=latest is not None)
    shardings = state_shardings(cfg, mesh)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            state_shapes(cfg), shardings)
    if latest is not None:
        state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        log(f"resumed from {join(workdir, CHECKPOINTS, str(latest))} (step {latest})")
    elif init_state:
        state, from_step = _load_init_state(init_state, cfg, mesh, abstract)
        log(f"initialised params and Adam moments from {init_state} (its step {from_step}); step reset to 0")
    else:
        params = _load_init_params(init, cfg, mesh) if init else None
        state = init_train_state(cfg, mesh, params)
        log(f"initialised from {init}" if init else f"initialised from scratch (seed {cfg.seed})")
    start = int(state.step)
    if start > target:
        manager.close()
        raise ValueError(f"{workdir} is already at step {start}, past --steps {target}")
    metrics = MetricsLog(workdir, keep_through_step=start, enabled=is_main)
    log(f"training {cfg.name}: {cfg.model.n_params():,} params, mesh {dict(mesh.shape)}, "
        f"{loader.windows} train windows, global batch {cfg.global_batch}, steps {start} -> {target}")

    train_step = make_train_step(cfg, mesh)
    eval_fn = make_eval_step(cfg, mesh) if val_data is not None and len(val_data) else None
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, cfg.global_batch))
    tokens_per_step = cfg.global_batch * cfg.seq_len
    step, last, last_eval, saved_step, stopped = start, {}, None, latest, None
    clock = CheckpointClock(cfg.checkpoint_every, cfg.checkpoint_minutes)
    try:
        with StopRequest() as stop:
            tick = time.perf_counter()
            for index, local in loader.iterate(start, target):
                check_token_ids(local, cfg.model.vocab_size, index + 1)
                state, out = train_step(state, _global_batch(local, batch_sharding))
                step = index + 1
                last = {k: float(v) for k, v in jax.device_get(out).items()}  # waits for the step
                if not (math.isfinite(last["loss"]) and math.isfinite(last["grad_norm"])):
                    metrics.write({"step": step, "loss": last["loss"], "lr": last["lr"],
                                   "grad_norm": last["grad_norm"], "non_finite": True})
                    good = saved_step if saved_step is not None else "none (no checkpoint yet)"
                    raise NonFiniteLossError(
                        f"step {step}: loss {last['loss']} / grad_norm {last['grad_norm']} is not finite; "
                        f"training stopped and nothing of this step was saved (last good checkpoint: "
                        f"step {good} in {join(workdir, CHECKPOINTS)}). Lower lr_peak or check the data.")
                now = time.perf_counter()
                row = {"step": step, "loss": last["loss"], "lr": last["lr"], "grad_norm": last["grad_norm"],
                       "tokens_per_s": tokens_per_step / max(now - tick, 1e-9),
                       "epoch": round(loader.epoch(step), 4)}
                tick = now
                metrics.write(row)
                if step % cfg.log_every == 0 or step == target:
                    log(f"step {step:>7d} | loss {row['loss']:.4f} | lr {row['lr']:.3e} | "
                        f"grad_norm {row['grad_norm']:.3f} | {row['tokens_per_s']:,.0f} tok/s | "
                        f"epoch {row['epoch']:.3f}")
                if eval_fn is not None and (step % cfg.eval_every == 0 or step == target):
                    last_eval = {"step": step, **evaluate(eval_fn, state.params, val_data, cfg, mesh)}
                    metrics.write(last_eval)
                    log(f"eval {step:>7d} | val_loss {last_eval['val_loss']:.4f} | "
                        f"val_ppl {last_eval['val_ppl']:.2f} | {last_eval['val_tokens']} tokens")
                    tick = time.perf_counter()  # keep eval time out of tokens_per_s
                if stop.should_stop(step) and step < target:
                    stopped = stop.signal or "preemption"
                    break
                if step < target and clock.due(step):
                    manager.save(step, args=ocp.args.StandardSave(state))
                    saved_step = step
                    clock.saved()
                    metrics.flush()
                    tick = time.perf_counter()
        if step != saved_step and ((stopped and cfg.save_on_signal) or step == target):
            manager.save(step, args=ocp.args.StandardSave(state), force=True)
            saved_step = step
        manager.wait_until_finished()
    finally:
        metrics.close()
        manager.close()
    summary = {"start_step": start, "step": step, "target_step": target, "checkpoint_step": saved_step,
               "stopped_by_signal": stopped, "last": last, "last_eval": last_eval,
               "workdir": workdir, "metrics": join(workdir, METRICS), "export": None}
    if stopped:
        log(f"stopped by signal {stopped} at step {step}; the last checkpoint is step {saved_step}"
            f"{'' if saved_step == step else ' (save_on_signal is off)'}; rerun the same command to resume from it")
        return summary
    if export and step == target:
        summary["export"] = export_hf(cfg, state.params, workdir, export_dtype)
        log(f"exported Hugging Face GPT-J to {summary['export']}")
    return summary
