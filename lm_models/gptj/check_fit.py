"""`ppsample finetune check-fit`: will the real training step fit a TPU's memory?

Compiles make_train_step for a TPU topology without any TPU attached (libtpu's ahead-of-time
compiler via jax.experimental.topologies) from shapes only — no parameter is allocated — and
reports XLA's per-core memory analysis as JSON. Exit status 0 when the peak fits, 1 when not,
2 on bad arguments. Needs `jax[tpu]` (libtpu) in the environment.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

GIB = 1024**3
# Usable HBM per core (per chip for megacore generations). v3: the 15.48 GiB XLA reports as
# available on a 16 GiB core; the others are nominal HBM sizes — pass --limit-gib to be precise.
HBM_LIMIT_BYTES = {
    "TPU v2": 8 * GIB,
    "TPU v3": int(15.48 * GIB),
    "TPU v4": 32 * GIB,
    "TPU v5 lite": 16 * GIB,
    "TPU v5e": 16 * GIB,
    "TPU v5": 95 * GIB,
    "TPU v5p": 95 * GIB,
    "TPU v6 lite": 32 * GIB,
    "TPU v6e": 32 * GIB,
}

_POD_NAME = re.compile(r"^(v2|v3|v4|v5p|v5e|v5litepod|v6e)-(\d+)$")


def topology_name(name: str) -> str:
    """'v3-8' -> 'v3:2x2'. Names already in 'vX:AxB[xC]' form pass through unchanged.

    v2/v3/v4/v5p pod names count TensorCores (2 per chip); v5e/v6e count chips. v2/v3 and
    v5e/v6e slices are 2D chip grids, v4/v5p 3D ones.
    """
    if ":" in name:
        return name
    match = _POD_NAME.match(name)
    if not match:
        raise ValueError(f"unrecognised TPU topology {name!r}: use e.g. v3-8, v4-16, v5e-8 or v3:2x2")
    gen, count = match.group(1), int(match.group(2))
    gen = {"v5litepod": "v5e"}.get(gen, gen)
    chips = count // 2 if gen in ("v2", "v3", "v4", "v5p") else count
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"{name}: expected a power-of-two slice, got {chips} chips")
    dims = [1, 1, 1] if gen in ("v4", "v5p") else [1, 1]
    if gen in ("v4", "v5p"):
        dims = [2, 2, 1] if chips >= 4 else ([2, 1, 1] if chips == 2 else [1, 1, 1])
        rest = chips // (dims[0] * dims[1] * dims[2])
        axis = 2
        while rest > 1:  # grow z, then y, then x, keeping the cube as even as possible
            dims[axis] *= 2
            rest //= 2
            axis = (axis - 1) % 3 if dims[axis] > min(dims) else axis
    else:
        exponent = chips.bit_length() - 1
        dims = [2 ** (exponent // 2), 2 ** (exponent - exponent // 2)]
    return f"{gen}:" + "x".join(str(d) for d in dims)


def _parse_mesh(text: str) -> dict:
    mesh = {}
    for part in text.split(","):
        axis, _, size = part.partition("=")
        if not size:
            raise argparse.ArgumentTypeError(f"--mesh wants axis=size[,axis=size], got {text!r}")
        mesh[axis.strip()] = int(size)
    return mesh


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppsample finetune check-fit",
        description="Compile the GPT-J training step for a TPU topology (no TPU needed) and report per-core memory.")
    parser.add_argument("--config", default="gptj-6b-v3-8", help="config name or JSON path (default: gptj-6b-v3-8)")
    parser.add_argument("--topology", default="v3-8", help="TPU topology: v3-8, v4-16, v5e-8, or v3:2x2 form")
    parser.add_argument("--microbatches", type=int, help="override microbatches per step")
    parser.add_argument("--global-batch", type=int, help="override sequences per optimizer step")
    parser.add_argument("--seq-len", type=int, help="override sequence length (windows are seq_len+1)")
    parser.add_argument("--mesh", type=_parse_mesh, help="override the mesh, e.g. fsdp=2,tensor=4")
    parser.add_argument("--remat", help="override the remat policy")
    parser.add_argument("--limit-gib", type=float, help="memory limit per core (default: the chip's usable HBM)")
    parser.add_argument("--output", help="also write the JSON report here")
    return parser


def check_fit(cfg, topology: str, limit_bytes: int | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.experimental import topologies

    from lm_models.gptj import sharding
    from lm_models.gptj.train_step import make_mesh, make_train_step, state_shapes, state_shardings

    target = topology_name(topology)
    devices = topologies.get_topology_desc(target, "tpu").devices
    mesh = make_mesh(cfg, devices)
    step_fn = make_train_step(cfg, mesh, jit=False)
    shardings = state_shardings(cfg, mesh)
    batch_sharding = jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, cfg.global_batch))
    jitted = jax.jit(step_fn, in_shardings=(shardings, batch_sharding),
                     out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,))
    started = time.perf_counter()
    compiled = jitted.lower(state_shapes(cfg),
                            jax.ShapeDtypeStruct((cfg.global_batch, cfg.seq_len + 1), jnp.int32)).compile()
    compile_s = time.perf_counter() - started
    memory = compiled.memory_analysis()
    fields = {name: int(getattr(memory, f"{name}_size_in_bytes", 0) or 0)
              for name in ("argument", "output", "alias", "temp", "generated_code")}
    # What the runtime actually reserves: the arguments, outputs that do not reuse a donated
    # argument buffer, the whole temp arena and the program. XLA's own heap-simulator peak
    # (live buffers only) is reported too but can be lower than this.
    peak = fields["argument"] + fields["output"] - fields["alias"] + fields["temp"] + fields["generated_code"]
    xla_peak = int(getattr(memory, "peak_memory_in_bytes", 0) or 0)
    kind = devices[0].device_kind
    if limit_bytes is None:
        if kind not in HBM_LIMIT_BYTES:
            raise ValueError(f"no known memory limit for {kind!r}; pass --limit-gib")
        limit_bytes = HBM_LIMIT_BYTES[kind]
    batch_shards = sharding.axis_size(mesh, sharding.BATCH_AXES)
    report = {
        "config": cfg.name,
        "topology": topology,
        "topology_desc": target,
        "device_kind": kind,
        "devices": len(devices),
        "mesh": dict(mesh.shape),
        "n_params": cfg.model.n_params(),
        "seq_len": cfg.seq_len,
        "global_batch": cfg.global_batch,
        "microbatches": cfg.microbatches,
        "windows_per_core_per_microbatch": cfg.microbatch_size // batch_shards,
        "remat": cfg.remat,
        "compute_dtype": cfg.compute_dtype,
        "grad_accum_dtype": cfg.grad_accum_dtype,
        "per_core": {f"{k}_bytes": v for k, v in fields.items()} | {"peak_bytes": peak, "xla_peak_bytes": xla_peak},
        "per_core_gib": {f"{k}_gib": round(v / GIB, 3) for k, v in fields.items()}
                        | {"peak_gib": round(peak / GIB, 3), "xla_peak_gib": round(xla_peak / GIB, 3)},
        "limit_bytes": int(limit_bytes),
        "limit_gib": round(limit_bytes / GIB, 3),
        "fits": peak <= limit_bytes,
        "compile_seconds": round(compile_s, 1),
    }
    return report


CHILD_ENV = "_PPSAMPLE_CHECK_FIT_CHILD"


def _run_quietly(argv: list[str]) -> int:
    """This command again in a child process whose stderr loses libtpu's no-TPU noise."""
    import os
    import subprocess

    from lm_models.gptj import libtpu_noise

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, CHILD_ENV: "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-m", "lm_models.gptj.check_fit", *argv], env=env,
                             stderr=subprocess.PIPE, text=True, errors="replace")
    for line in libtpu_noise.filter_lines(child.stderr):
        sys.stderr.write(line)
        sys.stderr.flush()
    return child.wait()


def cli(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from lm_models import extras

    message = extras.missing_message("ppsample finetune check-fit", ("finetune", "tpu"))
    if message:
        # jax[tpu] beside the CPU jax makes every JAX process probe for a TPU: a venv of its own.
        print(f"ppsample: error: {message}, in a venv of its own: python3 -m venv .venv-tpu && "
              f".venv-tpu/bin/{extras.install_hint(('finetune', 'tpu'))}", file=sys.stderr)
        return 2
    import os

    if not os.environ.get(CHILD_ENV):
        return _run_quietly(argv)
    from lm_models.gptj.train_step import load_config

    try:
        cfg = load_config(args.config)
        overrides = {k: v for k, v in {"microbatches": args.microbatches, "global_batch": args.global_batch,
                                        "seq_len": args.seq_len, "mesh": args.mesh, "remat": args.remat}.items()
                     if v is not None}
        if args.microbatches is not None and args.global_batch is None:
            # Keep the per-microbatch batch (windows per core) and scale the step's batch.
            overrides["global_batch"] = cfg.microbatch_size * args.microbatches
        cfg = cfg.replace(**overrides)
        limit = int(args.limit_gib * GIB) if args.limit_gib is not None else None
        report = check_fit(cfg, args.topology, limit)
    except (ValueError, FileNotFoundError) as e:
        print(f"check-fit: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    sys.exit(cli())
