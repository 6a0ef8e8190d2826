"""Host RAM of HF -> JAX conversion: streaming from_hf vs load-everything-then-stack, same run.

Writes one GPT-J-shaped checkpoint (sharded safetensors), then converts it in two fresh
subprocesses and reports each one's peak RSS growth as a multiple of the parameters' size:
  baseline  safetensors.numpy.load_file of every shard, then transpose + np.stack per tensor
  from_hf   lm_models.gptj.from_hf (one tensor at a time into preallocated stacked arrays)
On CPU the converted jax Arrays live in host RAM too, so ~1x is the floor for both.

    python benchmarks/bench_gptj_convert.py [--d-model 768 --layers 6]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import json, sys
def status_mb(field):
    # VmHWM, unlike ru_maxrss, starts afresh at exec (ru_maxrss keeps the forking parent's peak).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
import numpy as np, jax
jax.numpy.zeros(1).block_until_ready()
from lm_models.gptj import from_hf
from lm_models.gptj.convert import _LAYER_KEYS, _TOP_KEYS, load_hf_config
before = status_mb("VmRSS")
path, mode = sys.argv[1], sys.argv[2]
if mode == "from_hf":
    config, params = from_hf(path)
else:
    from safetensors.numpy import load_file
    index = json.load(open(f"{path}/model.safetensors.index.json"))["weight_map"]
    tensors = {}
    for name in sorted(set(index.values())):
        tensors.update(load_file(f"{path}/{name}"))
    config = load_hf_config(path)
    params = {"blocks": {}}
    for hf, (ours, t) in _TOP_KEYS.items():
        params[ours] = jax.device_put(np.ascontiguousarray(tensors[hf].T if t else tensors[hf], np.float32))
    for suffix, (ours, t) in _LAYER_KEYS.items():
        layers = [tensors[f"transformer.h.{i}.{suffix}"] for i in range(config.n_layer)]
        params["blocks"][ours] = jax.device_put(np.stack([x.T if t else x for x in layers]).astype(np.float32))
jax.block_until_ready(params)
peak = status_mb("VmHWM")
print(json.dumps({"peak_growth_mb": peak - before}))
'''


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args()
    import jax
    from lm_models.gptj import GPTJConfig, init_params, to_hf

    config = GPTJConfig(d_model=args.d_model, n_layer=args.layers, n_head=args.d_model // 64, rotary_dim=32,
                        d_ff=4 * args.d_model)
    param_mb = config.n_params() * 4 / 2**20
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as path:
        params = jax.jit(lambda k: init_params(config, k))(jax.random.PRNGKey(0))
        to_hf(config, params, path, max_shard_bytes=200 * 2**20)
        del params
        results = {}
        for mode in ("baseline", "from_hf"):
            out = subprocess.run([sys.executable, "-c", CHILD, path, mode], cwd=root, capture_output=True,
                                 text=True, check=True)
            growth = json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mb"]
            results[mode] = {"peak_rss_growth_mb": round(growth), "x_params": round(growth / param_mb, 2)}
    print(json.dumps({"params": config.n_params(), "params_mb_fp32": round(param_mb), **results,
                      "ratio_from_hf_vs_baseline": round(results["from_hf"]["peak_rss_growth_mb"]
                                                         / results["baseline"]["peak_rss_growth_mb"], 2)},
                     indent=2))


if __name__ == "__main__":
    main()
