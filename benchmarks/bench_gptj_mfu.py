"""Training throughput of the GPT-J step: tokens/s and model FLOPs utilisation (MFU).

Runs train.make_train_step on whatever JAX finds (CPU here; a GPU or TPU when present) and
reports, for the steady state after compilation:

  tokens/s     = global_batch * seq_len / step time (median of --steps timed steps)
  model FLOPs  = per token 6 * N_matmul + 12 * n_layer * d_model * seq_len (PaLM, appendix B):
                 N_matmul = parameters that multiply (all but the input embedding, a lookup);
                 the attention term counts QK^T and AV without the causal half-saving; remat
                 recomputation is NOT counted (model FLOPs, not hardware FLOPs)
  MFU          = model FLOPs/s / (peak FLOPs/s per device * devices)

Peak per device, dense, in the step's compute dtype (bf16):
  GPU: NVIDIA H100/H200 SXM 989 TFLOPS, A100 312 TFLOPS, L4 121, A10G 70 (spec sheets);
  TPU: v3 123 TFLOPS per chip = 61.5 per JAX device (one per TensorCore), v4 275, v5e 197,
       v5p 459, v6e 918 (one device per chip);
  CPU (no meaningful spec figure): MEASURED in this run as the best rate of a large square
       matmul in the compute dtype (the baseline), so MFU on CPU reads "fraction of what this
       CPU's XLA matmul achieves". --peak-tflops overrides any of these.
Reference: mesh-transformer-jax reports ~37 % MFU for GPT-J 6B on a v3-8.

    python benchmarks/bench_gptj_mfu.py --config tiny --steps 5                 # CPU
    python benchmarks/bench_gptj_mfu.py --config gptj-1.4b-gpu --steps 10       # one GPU (>= 1B params)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lm_models.gptj.train_step import init_train_state, load_config, make_mesh, make_train_step

TFLOPS = 1e12
# bf16 dense peak per JAX device
PEAK_BF16_PER_DEVICE = {
    "NVIDIA H100": 989 * TFLOPS, "NVIDIA H200": 989 * TFLOPS, "NVIDIA GH200": 989 * TFLOPS,
    "NVIDIA A100": 312 * TFLOPS, "NVIDIA L4": 121 * TFLOPS, "NVIDIA A10G": 70 * TFLOPS,
    "TPU v3": 61.5 * TFLOPS, "TPU v4": 275 * TFLOPS, "TPU v5 lite": 197 * TFLOPS, "TPU v5e": 197 * TFLOPS,
    "TPU v5p": 459 * TFLOPS, "TPU v5": 459 * TFLOPS, "TPU v6 lite": 918 * TFLOPS, "TPU v6e": 918 * TFLOPS,
}


def model_flops_per_token(cfg) -> float:
    m = cfg.model
    n_matmul = m.n_params() - m.vocab_size * m.d_model          # the input embedding is a lookup
    return 6.0 * n_matmul + 12.0 * m.n_layer * m.d_model * cfg.seq_len


def table_peak(device) -> tuple[float | None, str]:
    kind = device.device_kind
    for name in sorted(PEAK_BF16_PER_DEVICE, key=len, reverse=True):  # longest match first
        if kind.startswith(name) or name in kind:
            return PEAK_BF16_PER_DEVICE[name], f"spec sheet ({name}, bf16 dense)"
    return None, f"unknown device kind {kind!r}"


def measured_matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    """Best FLOPs/s of an n x n @ n x n matmul in `dtype` on device 0 (the CPU baseline)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), dtype)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def run(cfg, steps: int, warmup: int, peak_override: float | None) -> dict:
    mesh = make_mesh(cfg)
    devices = mesh.devices.size
    state = init_train_state(cfg, mesh)
    step_fn = make_train_step(cfg, mesh)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, cfg.model.vocab_size, (cfg.global_batch, cfg.seq_len + 1)).astype(np.int32)
    compile_start = time.perf_counter()
    for _ in range(max(warmup, 1)):                              # the first call compiles
        state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
    compile_and_warmup_s = time.perf_counter() - compile_start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state.step, metrics))
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    tokens = cfg.global_batch * cfg.seq_len
    flops_token = model_flops_per_token(cfg)
    achieved = flops_token * tokens / step_s

    device = jax.devices()[0]
    baseline = {}
    if peak_override is not None:
        peak, source = peak_override * TFLOPS, "--peak-tflops"
    elif device.platform == "cpu":
        baseline = {f"matmul_{name}_tflops": round(measured_matmul_peak(dt) / TFLOPS, 4)
                    for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))}
        peak = baseline[f"matmul_{cfg.compute_dtype}_tflops"] * TFLOPS
        source = f"measured: best 2048^3 {cfg.compute_dtype} matmul in this run (CPU has no spec peak)"
    else:
        peak, source = table_peak(device)
    report = {
        "config": cfg.name, "n_params": cfg.model.n_params(), "platform": device.platform,
        "device_kind": device.device_kind, "devices": devices, "mesh": dict(mesh.shape),
        "seq_len": cfg.seq_len, "global_batch": cfg.global_batch, "microbatches": cfg.microbatches,
        "remat": cfg.remat, "compute_dtype": cfg.compute_dtype,
        "timed_steps": steps, "step_s_median": round(step_s, 4), "step_s_all": [round(t, 4) for t in times],
        "compile_and_warmup_s": round(compile_and_warmup_s, 1),
        "tokens_per_s": round(tokens / step_s, 1),
        "model_flops_per_token": flops_token,
        "achieved_tflops": round(achieved / TFLOPS, 4),
        "peak_tflops_per_device": None if peak is None else round(peak / TFLOPS, 4),
        "peak_source": source, **baseline,
        "mfu": None if peak is None else round(achieved / (peak * devices), 4),
        "last_loss": float(metrics["loss"]),
    }
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="config name or JSON file (GPU: gptj-1.4b-gpu)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first compiles)")
    parser.add_argument("--global-batch", type=int)
    parser.add_argument("--microbatches", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--remat", choices=["full", "none"])
    parser.add_argument("--compute-dtype", choices=["bfloat16", "float32"])
    parser.add_argument("--mesh", help="e.g. fsdp=8 or fsdp=2,tensor=4")
    parser.add_argument("--peak-tflops", type=float, help="peak per device, overriding the table/measurement")
    parser.add_argument("--output", help="also write the JSON report here")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    overrides = {k: v for k, v in {"global_batch": args.global_batch, "microbatches": args.microbatches,
                                    "seq_len": args.seq_len, "remat": args.remat,
                                    "compute_dtype": args.compute_dtype}.items() if v is not None}
    if args.mesh:
        overrides["mesh"] = {k: int(v) for k, v in (part.split("=") for part in args.mesh.split(","))}
    cfg = cfg.replace(**overrides)
    report = run(cfg, args.steps, args.warmup, args.peak_tflops)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
