"""GPT-J training step on one CPU device: schedule, optimizer, layer-wise backward, configs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
optax = pytest.importorskip("optax")

from lm_models.gptj import forward, init_params  # noqa: E402
from lm_models.gptj.train_step import (  # noqa: E402
    TrainConfig, accumulate_microbatch, init_train_state, learning_rate, load_config, make_eval_step,
    make_mesh, make_train_step, microbatch_loss, weight_decay_mask,
)

# --- the reference: written here, sharing nothing with train.py but the model's forward -------
# (forward itself is pinned to transformers' GPTJForCausalLM in test_gptj_model.py)


def reference_loss(params, batch, cfg):
    """Mean next-token cross entropy, spelled out: log-sum-exp of the logits minus the target logit."""
    logits = forward(params, batch[:, :-1], cfg.model, dtype=jnp.float32)
    shift = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    log_z = jnp.log(jnp.exp(logits - shift).sum(axis=-1)) + shift[..., 0]
    target = jnp.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]
    return (log_z - target).mean()


def reference_lr(step: int, warmup: int, total: int, peak: float, end: float) -> float:
    """mesh-transformer-jax's gpt3_schedule (the same function BERTIN's fork trains with)."""
    warmup_pct = min(step, warmup) / warmup if warmup else 1.0
    anneal_pct = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return warmup_pct * peak - (peak - end) * (1 - math.cos(math.pi * anneal_pct)) / 2


DECAYED = {"wte", "lm_head_w", "w_q", "w_k", "w_v", "w_o", "fc_in_w", "fc_out_w"}


def reference_decay_mask(params):
    return {k: ({kk: kk in DECAYED for kk in v} if k == "blocks" else k in DECAYED) for k, v in params.items()}

SMALL_MODEL = {"vocab_size": 256, "d_model": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "d_ff": 64,
               "init_std": 0.2}


def small_config(**changes) -> TrainConfig:
    base = load_config("tiny").replace(model=SMALL_MODEL, seq_len=16, global_batch=4, microbatches=2,
                                       warmup_steps=0, total_steps=100, lr_peak=1e-2, lr_end=1e-3,
                                       mesh={"fsdp": 1, "tensor": 1})
    return base.replace(**changes)


def perturbed_params(cfg, seed=0):
    """Random params with non-trivial biases and LayerNorms."""
    params = init_params(cfg.model, jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 64))
    return jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape), params)


def windows(cfg, rows, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.model.vocab_size, (rows, cfg.seq_len + 1)).astype(np.int32)


def max_diff(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- configs -----------------------------------------------------------------------------

def test_bundled_6b_config_has_bertins_settings():
    """BERTIN's configs/bertin_6b_roto_256*.json: warmup 50,000 + anneal 950,000 steps of 32 x 2048."""
    cfg = load_config("gptj-6b-v3-8")
    assert cfg.model.n_params() == 6_050_882_784
    assert (cfg.seq_len, cfg.global_batch, cfg.microbatches) == (2048, 32, 16)
    assert (cfg.lr_peak, cfg.lr_end, cfg.weight_decay, cfg.clip_norm) == (2e-5, 2e-6, 0.1, 1.0)
    assert (cfg.warmup_steps, cfg.total_steps) == (50_000, 1_000_000)
    assert cfg.global_batch * cfg.seq_len * cfg.total_steps == 65_536_000_000     # ~65.5B tokens
    assert not cfg.save_on_signal and 0 < cfg.checkpoint_minutes <= 60
    # the figures the issue quotes for BERTIN's schedule: lr at step 133,705 and the sum of lr
    assert learning_rate(cfg, 133_705) == pytest.approx(1.97e-5, abs=5e-8)        # 1.966e-5
    lrs = np.array([reference_lr(s, 50_000, 1_000_000, 2e-5, 2e-6) for s in range(0, 1_000_000, 50)])
    assert lrs.sum() * 50 == pytest.approx(10.95, rel=2e-3)
    ours = np.asarray(learning_rate(cfg, np.arange(0, 1_000_000, 50)), dtype=np.float64)
    assert np.allclose(ours, lrs, rtol=1e-5, atol=1e-12)
    assert math.prod(cfg.mesh.values()) == 8            # the 8 cores of a v3-8
    assert cfg.compute_dtype == cfg.grad_accum_dtype == "bfloat16"


def test_config_from_path_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": dict(SMALL_MODEL), "seq_len": 8, "global_batch": 6, "microbatches": 3}))
    cfg = load_config(str(path))
    assert (cfg.name, cfg.seq_len, cfg.microbatch_size, cfg.model.d_model) == ("mine", 8, 2, 32)
    with pytest.raises(FileNotFoundError, match="gptj-6b-v3-8"):
        load_config("no-such-config")
    path.write_text(json.dumps({"model": "gptj-6b", "learning_rate": 1.0}))
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(str(path))
    with pytest.raises(ValueError, match="multiple of microbatches"):
        small_config(global_batch=5)
    with pytest.raises(ValueError, match="remat"):
        small_config(remat="dots_saveable")
    path.write_text(json.dumps({"_sources": {"lr": "somewhere"}, "model": dict(SMALL_MODEL), "seq_len": 8,
                                "global_batch": 2, "microbatches": 1}))
    assert load_config(str(path)).seq_len == 8                 # "_"-prefixed keys document, not configure


def test_mesh_must_match_device_count():
    with pytest.raises(ValueError, match="needs 8 devices"):
        make_mesh(small_config(mesh={"fsdp": 4, "tensor": 2}))
    mesh = make_mesh(small_config(mesh={"fsdp": -1}))
    assert dict(mesh.shape) == {"data": 1, "fsdp": len(jax.devices()), "tensor": 1}


# --- schedule and optimizer --------------------------------------------------------------

def test_learning_rate_warmup_then_cosine_to_end():
    cfg = small_config(warmup_steps=10, total_steps=110, lr_peak=2e-5, lr_end=2e-6)
    assert learning_rate(cfg, 0) == 0.0
    assert learning_rate(cfg, 5) == pytest.approx(1e-5)
    assert learning_rate(cfg, 10) == pytest.approx(2e-5)
    assert learning_rate(cfg, 60) == pytest.approx((2e-5 + 2e-6) / 2)   # half-way down the cosine
    assert learning_rate(cfg, 110) == pytest.approx(2e-6)
    assert learning_rate(cfg, 10_000) == pytest.approx(2e-6)
    for step in range(0, 130):
        assert learning_rate(cfg, step) == pytest.approx(reference_lr(step, 10, 110, 2e-5, 2e-6), rel=1e-5, abs=1e-15)
    decay = [learning_rate(cfg, s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    traced = jax.jit(lambda s: learning_rate(cfg, s))
    for step in (0, 3, 10, 47, 110, 500):
        assert float(traced(jnp.int32(step))) == pytest.approx(learning_rate(cfg, step), rel=1e-6)


def test_weight_decay_only_on_matrices():
    cfg = small_config()
    params = init_params(cfg.model, jax.random.PRNGKey(0))
    assert weight_decay_mask(params) == reference_decay_mask(params)
    assert sum(jax.tree.leaves(reference_decay_mask(params))) == 8


# --- gradients and the step --------------------------------------------------------------

@pytest.mark.parametrize("remat", ["full", "none"])
def test_layerwise_backward_equals_autodiff(remat):
    cfg = small_config(compute_dtype="float32", grad_accum_dtype="float32", remat=remat)
    params = perturbed_params(cfg)
    batch = jnp.asarray(windows(cfg, 3))
    loss, expected = jax.jit(jax.value_and_grad(lambda p: reference_loss(p, batch, cfg)))(params)
    start = jax.tree.map(lambda p: jnp.full(p.shape, 0.5, p.dtype), params)   # adds onto what is there
    got, got_loss = jax.jit(lambda p, s: accumulate_microbatch(p, s, batch, cfg))(params, start)
    assert float(got_loss) == pytest.approx(float(loss), rel=1e-6)
    assert max_diff(jax.tree.map(lambda g: g - 0.5, got), expected) < 1e-5
    assert float(optax.tree.norm(expected)) > 1e-2


# Adam's first step is lr * g / (|g| + eps): with eps=1e-8 a coordinate whose gradient is ~1e-9
# flips between +-lr on rounding noise. A larger eps keeps the update a smooth function of the
# gradient, so comparisons at fp32 tolerance test the step and not rounding luck.
SMOOTH_ADAM = {"adam_eps": 1e-3}


def reference_step(cfg, params, batch, step=0):
    """Independent AdamW step: autodiff of the test's own loss over the whole batch, optax.adamw
    with the test's own schedule and decay mask."""
    loss, grads = jax.value_and_grad(lambda p: reference_loss(p, jnp.asarray(batch), cfg))(params)
    lr = reference_lr(step, cfg.warmup_steps, cfg.total_steps, cfg.lr_peak, cfg.lr_end)
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                     optax.adamw(lr, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                                 weight_decay=cfg.weight_decay, mask=reference_decay_mask(params)))
    updates, _ = tx.update(grads, tx.init(params), params)
    return float(loss), float(optax.tree.norm(grads)), optax.apply_updates(params, updates)


def test_train_step_is_clipped_adamw_on_the_accumulated_gradient():
    cfg = small_config(compute_dtype="float32", grad_accum_dtype="float32", microbatches=2, clip_norm=0.05,
                       **SMOOTH_ADAM)
    params = perturbed_params(cfg)
    batch = windows(cfg, cfg.global_batch)
    loss, grad_norm, expected = reference_step(cfg, params, batch)
    assert grad_norm > cfg.clip_norm                      # clipping is active

    mesh = make_mesh(cfg)
    state = init_train_state(cfg, mesh, params)
    state, metrics = make_train_step(cfg, mesh)(state, batch)
    assert float(metrics["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(grad_norm, rel=1e-5)
    assert float(metrics["lr"]) == pytest.approx(cfg.lr_peak)
    assert int(state.step) == 1
    assert max_diff(state.params, expected) < 1e-6
    assert max_diff(state.params, params) > 1e-3          # the step did move the weights


def test_bf16_training_reduces_loss_and_donates_state():
    cfg = small_config(lr_peak=3e-3)                     # bf16 compute + bf16 accumulator
    mesh = make_mesh(cfg)
    state = init_train_state(cfg, mesh)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    step = make_train_step(cfg, mesh)
    batch = windows(cfg, cfg.global_batch)
    losses = []
    for _ in range(8):
        previous = state
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert previous.params["wte"].is_deleted()       # donated: no second copy of the state
    assert int(state.step) == 8
    assert losses[-1] < losses[0] - 0.5
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    with pytest.raises(ValueError, match=r"batch must be int32\[4, seq_len\+1=17\]"):
        step(state, batch[:, :-1])


def test_eval_step_sums_token_losses():
    cfg = small_config(compute_dtype="float32")
    params = perturbed_params(cfg)
    batch = windows(cfg, 3)
    out = make_eval_step(cfg, make_mesh(cfg))(params, batch)
    assert int(out["tokens"]) == 3 * cfg.seq_len
    expected = 3 * cfg.seq_len * float(reference_loss(params, jnp.asarray(batch), cfg))
    assert float(microbatch_loss(params, jnp.asarray(batch), cfg)) == pytest.approx(expected / (3 * cfg.seq_len),
                                                                                  rel=1e-6)
    assert float(out["loss_sum"]) == pytest.approx(expected, rel=1e-5)
