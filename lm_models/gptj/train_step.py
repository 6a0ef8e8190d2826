"""GPT-J training step for a named device mesh (the API the finetune stage builds on).

One optimizer step = `microbatches` forward/backward passes scanned with lax.scan, gradients
summed in a bf16 accumulator (an fp32 one, or optax.MultiSteps, does not fit a v3-8 core for 6B),
then global-norm clipping, AdamW (decay only on matrices) and the learning rate of
`learning_rate(cfg, step)`. Master params and Adam moments stay fp32; the forward/backward runs in
`compute_dtype` (bf16), each layer's weights cast as the layer runs. The state is donated.

The backward pass walks the layers itself (a reverse lax.scan over per-layer VJPs) and adds each
layer's gradient straight into its slot of the accumulator. Plain `jax.grad` would first build a
whole gradient tree per microbatch (plus a whole bf16 copy of the params to differentiate), i.e.
two extra parameter-sized bf16 buffers: for 6B on a v3-8 that is a per-core peak of 15.25 GiB
(at the 15.48 GiB limit) instead of 12.79 GiB (benchmarks/bench_gptj_memory.py). With remat="full" only each layer's input is kept and the layer is recomputed in the
backward pass; with remat="none" each layer's VJP residuals are kept from the forward pass.

Loss: next-token cross entropy on windows of seq_len+1 ids (inputs w[:-1], targets w[1:]).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from lm_models.gptj import sharding
from lm_models.gptj.config import GPTJConfig
from lm_models.gptj import model as gptj_model
from lm_models.gptj.model import forward, init_params, param_shapes

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
MODEL_PRESETS = {"gptj-6b": GPTJConfig()}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# "full": keep each layer's input, recompute the layer in the backward pass; "none": keep all.
TRAIN_REMAT = ("full", "none")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: GPTJConfig = dataclasses.field(default_factory=GPTJConfig)
    seq_len: int = 2048              # windows hold seq_len + 1 token ids
    global_batch: int = 32           # sequences per optimizer step
    microbatches: int = 16           # forward/backward passes accumulated per step
    lr_peak: float = 2e-5
    lr_end: float = 2e-6
    warmup_steps: int = 0
    total_steps: int = 1000          # the cosine reaches lr_end here and stays there
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    mesh: dict = dataclasses.field(default_factory=lambda: {"fsdp": -1, "tensor": 1})
    seed: int = 0
    remat: str = "none"
    compute_dtype: str = "bfloat16"
    grad_accum_dtype: str = "bfloat16"
    eval_every: int = 100
    eval_batches: int = 10
    checkpoint_every: int = 100
    # Also checkpoint when this many minutes of training passed since the last save (0: off), so
    # a preemption loses a bounded amount of work whatever the step time.
    checkpoint_minutes: float = 0.0
    # Save the current step on SIGTERM/SIGINT. Off for 6B: ~72 GB of fp32 params + Adam cannot be
    # written within a preemption notice, and a half-written save is useless.
    save_on_signal: bool = True
    keep_checkpoints: int = 2
    log_every: int = 1
    name: str = "custom"

    def __post_init__(self):
        if self.seq_len < 1 or self.seq_len > self.model.n_ctx:
            raise ValueError(f"seq_len={self.seq_len} must be in [1, n_ctx={self.model.n_ctx}]")
        if self.microbatches < 1 or self.global_batch % self.microbatches:
            raise ValueError(f"global_batch={self.global_batch} is not a multiple of microbatches={self.microbatches}")
        if self.warmup_steps < 0 or self.total_steps < self.warmup_steps:
            raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps})")
        if self.remat not in TRAIN_REMAT:
            raise ValueError(f"remat={self.remat!r}; the training step supports {TRAIN_REMAT}")
        for field in ("compute_dtype", "grad_accum_dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"{field}={getattr(self, field)!r}; choose from {sorted(_DTYPES)}")
        unknown = set(self.mesh) - set(sharding.MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; use {sharding.MESH_AXES}")
        if self.checkpoint_every < 1 or self.checkpoint_minutes < 0:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be >= 1 and "
                             f"checkpoint_minutes ({self.checkpoint_minutes}) >= 0")
        if sum(1 for v in self.mesh.values() if v == -1) > 1:
            raise ValueError("at most one mesh axis may be -1 (take the remaining devices)")

    @property
    def microbatch_size(self) -> int:
        return self.global_batch // self.microbatches

    def replace(self, **changes) -> "TrainConfig":
        """Copy with changes; `model` may be a dict of GPTJConfig field changes."""
        if isinstance(changes.get("model"), dict):
            changes["model"] = dataclasses.replace(self.model, **changes["model"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        values = dict(values)
        model = values.pop("model", "gptj-6b")
        if isinstance(model, str):
            if model not in MODEL_PRESETS:
                raise ValueError(f"unknown model preset {model!r}; choose from {sorted(MODEL_PRESETS)}")
            model = MODEL_PRESETS[model]
        elif isinstance(model, dict):
            base = MODEL_PRESETS[model.pop("preset")] if "preset" in model else None
            model = dataclasses.replace(base, **model) if base else GPTJConfig.from_dict(model)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training config fields: {sorted(unknown)}")
        return cls(model=model, **values)


def config_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))


def load_config(name_or_path: str) -> TrainConfig:
    """A bundled config name ("tiny", "gptj-6b-v3-8") or a path to a JSON config file."""
    path = name_or_path
    if not os.path.exists(path):
        path = os.path.join(CONFIG_DIR, f"{name_or_path}.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no config file {name_or_path!r} and no bundled config of that name "
                                    f"(bundled: {', '.join(config_names())})")
    with open(path) as f:
        values = json.load(f)
    # "_sources", "_comment", ...: documentation inside the file (JSON has no comments)
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return TrainConfig.from_dict(values)


# --- schedule --------------------------------------------------------------------------

def learning_rate(cfg: TrainConfig, step):
    """mesh-transformer-jax's gpt3 schedule: linear warmup 0 -> lr_peak over warmup_steps, then
    half-cosine lr_peak -> lr_end over [warmup_steps, total_steps], lr_end afterwards.
    Works on Python ints (returns float) and traced int arrays."""
    xp = jnp if isinstance(step, jax.Array) or not np.isscalar(step) else np
    step = xp.asarray(step, dtype=xp.float32)
    warm = xp.clip(step / cfg.warmup_steps, 0.0, 1.0) if cfg.warmup_steps > 0 else xp.float32(1.0)
    anneal_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
    anneal = xp.clip((step - cfg.warmup_steps) / anneal_steps, 0.0, 1.0)
    lr = warm * cfg.lr_peak - (cfg.lr_peak - cfg.lr_end) * (1.0 - xp.cos(math.pi * anneal)) / 2.0
    return float(lr) if xp is np else lr


# --- state -----------------------------------------------------------------------------

class TrainState(NamedTuple):
    params: Any      # fp32 master weights, model.param_shapes layout
    opt_state: Any   # optax state (fp32 Adam moments)
    step: Any        # int32 scalar: optimizer steps taken


def weight_decay_mask(params) -> Any:
    """Decay matrices only (per-layer ndim >= 2): embeddings and weights, not biases/LN."""
    def is_matrix(path, leaf):
        per_layer_ndim = leaf.ndim - (1 if any(getattr(p, "key", None) == "blocks" for p in path) else 0)
        return per_layer_ndim >= 2
    return jax.tree.map_with_path(is_matrix, params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Clip + Adam + decoupled weight decay; the learning rate is applied in the step itself so
    the schedule depends only on state.step (and the config)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.scale_by_adam(b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=weight_decay_mask),
    )


def make_mesh(cfg: TrainConfig, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    sizes = {axis: int(cfg.mesh.get(axis, 1)) for axis in sharding.MESH_AXES}
    known = math.prod(v for v in sizes.values() if v != -1)
    for axis, v in sizes.items():
        if v == -1:
            if len(devices) % known:
                raise ValueError(f"mesh {cfg.mesh}: {len(devices)} devices are not divisible by {known}")
            sizes[axis] = len(devices) // known
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(f"mesh {cfg.mesh} needs {math.prod(sizes.values())} devices but {len(devices)} "
                         f"are available; set the config's mesh so the axis sizes multiply to {len(devices)}")
    shape = tuple(sizes[a] for a in sharding.MESH_AXES)
    # On TPUs create_device_mesh orders devices along the physical interconnect; it rejects
    # layouts it has no recipe for (and CPU devices), where a plain reshape is just as good.
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:
        grid = np.array(devices, dtype=object).reshape(shape)
    return Mesh(grid, sharding.MESH_AXES)


def _check_batch_layout(cfg: TrainConfig, mesh: Mesh):
    shards = sharding.axis_size(mesh, sharding.BATCH_AXES)
    if cfg.microbatch_size % shards:
        raise ValueError(
            f"each microbatch holds global_batch/microbatches = {cfg.microbatch_size} sequences, which "
            f"the {shards} batch shards (mesh data x fsdp) cannot split evenly")


def state_shapes(cfg: TrainConfig) -> TrainState:
    """The TrainState as ShapeDtypeStructs (no allocation): for sharding plans and check-fit."""
    tx = make_optimizer(cfg)
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), param_shapes(cfg.model),
                          is_leaf=lambda x: isinstance(x, tuple))
    opt_state = jax.eval_shape(tx.init, params)
    return TrainState(params, opt_state, jax.ShapeDtypeStruct((), jnp.int32))


def state_shardings(cfg: TrainConfig, mesh: Mesh) -> TrainState:
    shapes = state_shapes(cfg)
    return TrainState(
        params=sharding.param_shardings(cfg.model, mesh),
        opt_state=sharding.tree_shardings(shapes.opt_state, mesh, cfg.model),
        step=sharding.replicated(mesh),
    )


def init_train_state(cfg: TrainConfig, mesh: Mesh, params=None) -> TrainState:
    """Fresh state (random params from cfg.seed, or the given params cast to fp32), laid out on mesh."""
    shardings = state_shardings(cfg, mesh)
    if params is None:
        params = jax.jit(lambda key: init_params(cfg.model, key), out_shardings=shardings.params)(
            jax.random.PRNGKey(cfg.seed))
    else:
        expected = jax.tree.map(tuple, param_shapes(cfg.model), is_leaf=lambda x: isinstance(x, tuple))
        got = jax.tree.map(lambda p: tuple(p.shape), params)
        if got != expected:
            raise ValueError("params do not match the config's model shapes")
        params = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(jnp.float32), p),
                         out_shardings=shardings.params)(params)
    opt_state = jax.jit(make_optimizer(cfg).init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
    return TrainState(params, opt_state, step)


# --- loss and steps --------------------------------------------------------------------

def _token_losses(logits, targets):
    """Next-token cross entropy per position [batch, seq] in fp32."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit


def microbatch_loss(params, windows, cfg: TrainConfig, mesh: Mesh | None = None):
    """Mean next-token loss of int windows [batch, seq_len+1] through model.forward (for eval,
    and as the autodiff reference the layer-wise backward is tested against)."""
    act = sharding.activation_sharding(mesh, windows.shape[0]) if mesh is not None else None
    logits = forward(params, windows[:, :-1], cfg.model, dtype=_DTYPES[cfg.compute_dtype],
                     remat="none" if cfg.remat == "none" else "full", activation_sharding=act)
    return _token_losses(logits, windows[:, 1:]).mean()


def accumulate_microbatch(params, grad_sum, windows, cfg: TrainConfig, mesh: Mesh | None = None):
    """Forward/backward one microbatch; returns (grad_sum + d mean_loss/d params, loss).

    Same gradients as jax.grad(microbatch_loss), computed layer by layer so each layer's gradient
    is added into grad_sum in place instead of materialising a whole gradient tree first.
    """
    dtype = _DTYPES[cfg.compute_dtype]
    inputs, targets = windows[:, :-1], windows[:, 1:]
    act = sharding.activation_sharding(mesh, windows.shape[0]) if mesh is not None else None
    constrain = (lambda x: x) if act is None else (lambda x: jax.lax.with_sharding_constraint(x, act))
    layer_fn = gptj_model.make_layer_fn(cfg.model, inputs.shape[1], dtype, act)

    x, embed_vjp = jax.vjp(lambda wte: constrain(gptj_model.embed(wte, inputs, dtype)), params["wte"])

    if cfg.remat == "full":
        def forward_layer(x, layer):
            return layer_fn(layer, x), x                     # keep only the layer input
    else:
        def forward_layer(x, layer):
            y, layer_vjp = jax.vjp(layer_fn, layer, x)       # keep the layer's residuals
            return y, layer_vjp
    x, saved = jax.lax.scan(forward_layer, x, params["blocks"])

    head_params = {k: params[k] for k in gptj_model.HEAD_PARAMS}
    loss, head_vjp = jax.vjp(
        lambda hp, h: _token_losses(gptj_model.head(hp, h, cfg.model), targets).mean(), head_params, x)
    d_head, dx = head_vjp(jnp.ones((), loss.dtype))

    def backward_layer(carry, inputs):
        dx, block_sums = carry
        layer, saved_l, index = inputs
        layer_vjp = jax.vjp(layer_fn, layer, saved_l)[1] if cfg.remat == "full" else saved_l
        d_layer, dx = layer_vjp(dx)
        block_sums = jax.tree.map(
            lambda acc, g: jax.lax.dynamic_update_index_in_dim(acc, acc[index] + g.astype(acc.dtype), index, 0),
            block_sums, d_layer)
        return (dx, block_sums), None

    (dx, block_sums), _ = jax.lax.scan(
        backward_layer, (dx, grad_sum["blocks"]),
        (params["blocks"], saved, jnp.arange(cfg.model.n_layer)), reverse=True)
    (d_wte,) = embed_vjp(dx)
    new_sum = {"blocks": block_sums, "wte": grad_sum["wte"] + d_wte.astype(grad_sum["wte"].dtype)}
    for name in gptj_model.HEAD_PARAMS:
        new_sum[name] = grad_sum[name] + d_head[name].astype(grad_sum[name].dtype)
    return new_sum, loss


def _check_windows(batch, rows: int, cfg: TrainConfig):
    if batch.ndim != 2 or batch.shape != (rows, cfg.seq_len + 1):
        raise ValueError(f"batch must be int32[{rows}, seq_len+1={cfg.seq_len + 1}], got {batch.dtype}{list(batch.shape)}")


def make_train_step(cfg: TrainConfig, mesh: Mesh, *, jit: bool = True):
    """step_fn(state, batch int32[global_batch, seq_len+1]) -> (state, {"loss", "grad_norm", "lr"}).

    The returned function is jitted with the state donated (do not reuse the input state).
    jit=False returns the raw function (check-fit lowers it for a TPU topology itself).
    """
    _check_batch_layout(cfg, mesh)
    tx = make_optimizer(cfg)
    accum_dtype = _DTYPES[cfg.grad_accum_dtype]
    shardings = state_shardings(cfg, mesh)
    micro_spec = sharding.batch_spec(mesh, cfg.microbatch_size, leading_dims=1)

    def step_fn(state: TrainState, batch):
        _check_windows(batch, cfg.global_batch, cfg)
        windows = batch.reshape(cfg.microbatches, cfg.microbatch_size, cfg.seq_len + 1)
        windows = jax.lax.with_sharding_constraint(windows, jax.sharding.NamedSharding(mesh, micro_spec))

        def accumulate(grad_sum, microbatch):
            grad_sum, loss = accumulate_microbatch(state.params, grad_sum, microbatch, cfg, mesh)
            return jax.lax.with_sharding_constraint(grad_sum, shardings.params), loss

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, accum_dtype), state.params)
        zeros = jax.lax.with_sharding_constraint(zeros, shardings.params)
        grad_sum, losses = jax.lax.scan(accumulate, zeros, windows)
        grads = jax.tree.map(lambda g: g.astype(jnp.float32) / cfg.microbatches, grad_sum)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        lr = learning_rate(cfg, state.step)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        metrics = {"loss": losses.mean(), "grad_norm": grad_norm, "lr": lr}
        return TrainState(params, opt_state, state.step + 1), metrics

    if not jit:
        return step_fn
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, cfg.global_batch))
    return jax.jit(step_fn, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,))


def make_eval_step(cfg: TrainConfig, mesh: Mesh):
    """eval_fn(params, batch int32[B, seq_len+1]) -> {"loss_sum": fp32, "tokens": int32} (any B)."""
    compute_dtype = _DTYPES[cfg.compute_dtype]

    @jax.jit
    def eval_fn(params, batch):
        if batch.ndim != 2 or batch.shape[1] != cfg.seq_len + 1:
            raise ValueError(f"eval batch must be [B, seq_len+1={cfg.seq_len + 1}], got {list(batch.shape)}")
        act = sharding.activation_sharding(mesh, batch.shape[0])
        logits = forward(params, batch[:, :-1], cfg.model, dtype=compute_dtype, activation_sharding=act)
        losses = _token_losses(logits, batch[:, 1:])
        return {"loss_sum": losses.sum(), "tokens": jnp.asarray(losses.size, jnp.int32)}

    def run(params, batch):
        batch = jnp.asarray(batch, jnp.int32)
        batch = jax.device_put(batch, jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, batch.shape[0])))
        return eval_fn(params, batch)

    return run
