"""Per-core TPU memory of the GPT-J training step vs the plain-autodiff baseline, same compile run.

Baseline: the textbook step — cast the fp32 params to a bf16 copy once, jax.grad per microbatch,
add into the bf16 accumulator. Ours: train.make_train_step (layer-wise backward that adds each
layer's gradient into the accumulator in place). Both are compiled for the same TPU topology with
no TPU attached (needs jax[tpu]; see docs/gptj.md) and reported as XLA's memory analysis.

    python benchmarks/bench_gptj_memory.py --config gptj-6b-v3-8 --topology v3-8
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from lm_models.gptj import sharding
from lm_models.gptj.check_fit import GIB, HBM_LIMIT_BYTES, topology_name
from lm_models.gptj.train_step import (TrainState, _check_windows, learning_rate, load_config, make_mesh,
                                  make_optimizer, make_train_step, microbatch_loss, state_shapes, state_shardings)


def autodiff_step(cfg, mesh):
    tx = make_optimizer(cfg)
    shardings = state_shardings(cfg, mesh)

    def step_fn(state, batch):
        _check_windows(batch, cfg.global_batch, cfg)
        windows = batch.reshape(cfg.microbatches, cfg.microbatch_size, cfg.seq_len + 1)
        compute = jax.tree.map(lambda p: p.astype(jnp.bfloat16), state.params)
        grad_fn = jax.value_and_grad(lambda p, w: microbatch_loss(p, w, cfg, mesh))

        def accumulate(acc, w):
            loss, g = grad_fn(compute, w)
            acc = jax.tree.map(lambda a, b: a + b.astype(jnp.bfloat16), acc, g)
            return jax.lax.with_sharding_constraint(acc, shardings.params), loss

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.bfloat16), state.params)
        acc, losses = jax.lax.scan(accumulate, jax.lax.with_sharding_constraint(zeros, shardings.params), windows)
        grads = jax.tree.map(lambda g: g.astype(jnp.float32) / cfg.microbatches, acc)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        lr = learning_rate(cfg, state.step)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        return TrainState(params, opt_state, state.step + 1), {"loss": losses.mean()}

    return step_fn


def memory(step_fn, cfg, mesh):
    shardings = state_shardings(cfg, mesh)
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, cfg.global_batch))
    compiled = jax.jit(step_fn, in_shardings=(shardings, batch_sharding),
                       out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,)).lower(
        state_shapes(cfg), jax.ShapeDtypeStruct((cfg.global_batch, cfg.seq_len + 1), jnp.int32)).compile()
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes + m.generated_code_size_in_bytes)
    return {"peak_gib": round(total / GIB, 3), "xla_peak_gib": round(m.peak_memory_in_bytes / GIB, 3),
            "temp_gib": round(m.temp_size_in_bytes / GIB, 3), "argument_gib": round(m.argument_size_in_bytes / GIB, 3)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="gptj-6b-v3-8")
    parser.add_argument("--topology", default="v3-8")
    args = parser.parse_args()
    from jax.experimental import topologies
    cfg = load_config(args.config)
    devices = topologies.get_topology_desc(topology_name(args.topology), "tpu").devices
    mesh = make_mesh(cfg, devices)
    baseline = memory(autodiff_step(cfg, mesh), cfg, mesh)
    ours = memory(make_train_step(cfg, mesh, jit=False), cfg, mesh)
    print(json.dumps({
        "config": cfg.name, "topology": args.topology, "limit_gib": round(HBM_LIMIT_BYTES[devices[0].device_kind] / GIB, 3),
        "baseline_autodiff": baseline, "layerwise": ours,
        "peak_ratio_layerwise_vs_baseline": round(ours["peak_gib"] / baseline["peak_gib"], 3),
        "temp_ratio_layerwise_vs_baseline": round(ours["temp_gib"] / baseline["temp_gib"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
