"""Hugging Face GPT-J checkpoints <-> JAX parameter trees (see model.param_shapes).

from_hf streams one tensor at a time (safetensors `safe_open`, or PyTorch `.bin` through
`torch.load(weights_only=True)`, which refuses to run pickled code): each per-layer tensor is
written in place into its slot of a stacked array that already lives on the device(s), optionally
in its NamedSharding layout. The host holds one tensor at a time (plus the pages of the file being
read), so a 6B conversion needs about the parameters' size of RAM even on a CPU-only host.

to_hf writes safetensors (one file, or shards + model.safetensors.index.json) and a config.json
that transformers' GPTJForCausalLM.from_pretrained loads.
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Callable, Iterator

import jax
import numpy as np

from lm_models.gptj.config import GPTJConfig
from lm_models.gptj.model import param_shapes

# HF name -> (our block name, transpose?) for per-layer tensors under transformer.h.{i}.
_LAYER_KEYS = {
    "ln_1.weight": ("ln_scale", False),
    "ln_1.bias": ("ln_bias", False),
    "attn.q_proj.weight": ("w_q", True),
    "attn.k_proj.weight": ("w_k", True),
    "attn.v_proj.weight": ("w_v", True),
    "attn.out_proj.weight": ("w_o", True),
    "mlp.fc_in.weight": ("fc_in_w", True),
    "mlp.fc_in.bias": ("fc_in_b", False),
    "mlp.fc_out.weight": ("fc_out_w", True),
    "mlp.fc_out.bias": ("fc_out_b", False),
}
_TOP_KEYS = {
    "transformer.wte.weight": ("wte", False),
    "transformer.ln_f.weight": ("ln_f_scale", False),
    "transformer.ln_f.bias": ("ln_f_bias", False),
    "lm_head.weight": ("lm_head_w", True),
    "lm_head.bias": ("lm_head_b", False),
}
# Buffers some GPT-J checkpoints carry (causal-mask constants, rotary tables): not parameters.
_IGNORED = re.compile(r"(^|\.)attn\.(bias|masked_bias)$|embed_positions$")
_LAYER_RE = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


# --- reading ---------------------------------------------------------------------------

def _iter_safetensors(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    for file in files:
        with safe_open(file, framework="numpy") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def _iter_torch_bin(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading pytorch_model*.bin needs torch; convert to safetensors or "
                          "install the 'parity' extra") from e
    for file in files:
        # weights_only=True: the unpickler only builds tensors, never runs code from the file.
        # mmap (no second copy in RAM) works for the zip format torch has written since 1.6.
        import zipfile
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
        for name in list(state):
            tensor = state.pop(name)
            if tensor.dtype == torch.bfloat16:
                import ml_dtypes
                yield name, tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            else:
                yield name, tensor.numpy()
        del state


def _checkpoint_files(path: str) -> tuple[list[str], Callable]:
    for index_name, single, reader in (
        ("model.safetensors.index.json", "model.safetensors", _iter_safetensors),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", _iter_torch_bin),
    ):
        index = os.path.join(path, index_name)
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            return [os.path.join(path, name) for name in sorted(set(weight_map.values()))], reader
        if os.path.exists(os.path.join(path, single)):
            return [os.path.join(path, single)], reader
    raise FileNotFoundError(f"no model.safetensors[.index.json] or pytorch_model.bin[.index.json] in {path}")


def load_hf_config(path: str) -> GPTJConfig:
    config_file = os.path.join(path, "config.json")
    if not os.path.exists(config_file):
        raise FileNotFoundError(f"{config_file} not found: not a Hugging Face model directory")
    with open(config_file) as f:
        return GPTJConfig.from_hf_dict(json.load(f))


def from_hf(path: str, *, dtype=np.float32, mesh=None, shardings=None) -> tuple[GPTJConfig, dict]:
    """Load a HF GPT-J directory as (config, params) with params as jax Arrays of `dtype`.

    mesh: put each tensor straight into the layout sharding.param_shardings(config, mesh).
    shardings: or give the sharding tree yourself (same structure as the params).
    """
    config = load_hf_config(path)
    files, reader = _checkpoint_files(path)
    shapes = param_shapes(config)
    if shardings is None and mesh is not None:
        from lm_models.gptj.sharding import param_shardings
        shardings = param_shardings(config, mesh)

    def to_device(value: np.ndarray, where: tuple[str, ...]):
        sharding = shardings
        for key in where:
            sharding = None if sharding is None else sharding[key]
        return jax.device_put(value, sharding) if sharding is not None else jax.device_put(value)

    params: dict = {"blocks": {}}
    filled: dict[str, set[int]] = {}

    def check_shape(name, value, expected):
        if tuple(value.shape) != tuple(expected):
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not match config ({tuple(expected)})")

    for hf_name, tensor in reader(files):
        if _IGNORED.search(hf_name):
            continue
        if hf_name in _TOP_KEYS:
            ours, transpose = _TOP_KEYS[hf_name]
            value = tensor.T if transpose else tensor
            check_shape(hf_name, value, shapes[ours])
            params[ours] = to_device(np.ascontiguousarray(value, dtype=dtype), (ours,))
            continue
        match = _LAYER_RE.match(hf_name)
        if not match or match.group(2) not in _LAYER_KEYS:
            raise ValueError(f"unexpected tensor {hf_name!r} in a GPT-J checkpoint")
        layer = int(match.group(1))
        if layer >= config.n_layer:
            raise ValueError(f"{hf_name}: layer {layer} but config has n_layer={config.n_layer}")
        ours, transpose = _LAYER_KEYS[match.group(2)]
        value = tensor.T if transpose else tensor
        check_shape(hf_name, value, shapes["blocks"][ours][1:])
        if ours not in params["blocks"]:
            # The stacked array is born on the device(s), in its final layout; each layer is
            # written into it in place, so the host holds one tensor at a time.
            params["blocks"][ours] = _zeros_on_device(shapes["blocks"][ours], np.dtype(dtype),
                                                      None if shardings is None else shardings["blocks"][ours])
            filled[ours] = set()
        params["blocks"][ours] = _set_layer(params["blocks"][ours], np.ascontiguousarray(value, dtype=dtype), layer)
        filled[ours].add(layer)
        del tensor, value

    missing = [k for k in shapes if k != "blocks" and k not in params]
    missing += [f"blocks.{k} (layers {sorted(set(range(config.n_layer)) - filled.get(k, set()))})"
                for k in shapes["blocks"] if len(filled.get(k, ())) != config.n_layer]
    if missing:
        raise ValueError(f"checkpoint {path} is missing tensors: {missing}")
    return config, params


def _zeros_on_device(shape, dtype, sharding):
    return jax.jit(lambda: jax.numpy.zeros(shape, dtype), out_shardings=sharding)()


@functools.partial(jax.jit, donate_argnums=0)
def _set_layer(stacked, value, index):
    return jax.lax.dynamic_update_index_in_dim(stacked, value.astype(stacked.dtype), index, 0)


# --- writing ---------------------------------------------------------------------------

def _hf_tensors(config: GPTJConfig, params: dict, dtype) -> list[tuple[str, tuple, Callable[[], np.ndarray]]]:
    """(hf_name, shape, fetch) in HF order; fetch pulls one tensor to host only when written."""

    def fetch(array, transpose, index=None):
        def get():
            value = np.asarray(jax.device_get(array if index is None else array[index]))
            return np.ascontiguousarray(value.T if transpose else value, dtype=dtype)
        return get

    def hf_shape(shape, transpose):
        return tuple(reversed(shape)) if transpose else tuple(shape)

    out = []
    for hf_name in ("transformer.wte.weight",):
        ours, t = _TOP_KEYS[hf_name]
        out.append((hf_name, hf_shape(params[ours].shape, t), fetch(params[ours], t)))
    for layer in range(config.n_layer):
        for suffix, (ours, t) in _LAYER_KEYS.items():
            array = params["blocks"][ours]
            out.append((f"transformer.h.{layer}.{suffix}", hf_shape(array.shape[1:], t), fetch(array, t, layer)))
    for hf_name in ("transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight", "lm_head.bias"):
        ours, t = _TOP_KEYS[hf_name]
        out.append((hf_name, hf_shape(params[ours].shape, t), fetch(params[ours], t)))
    return out


def to_hf(config: GPTJConfig, params: dict, out_dir: str, *, dtype=np.float32,
          max_shard_bytes: int = 4 * 1024**3) -> list[str]:
    """Write config.json + safetensors (sharded above max_shard_bytes). Returns files written."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    itemsize = np.dtype(dtype).itemsize
    tensors = _hf_tensors(config, params, dtype)
    shards: list[list] = [[]]
    size = 0
    for item in tensors:
        nbytes = int(np.prod(item[1])) * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes

    written = []
    weight_map = {}
    for i, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({hf_name: get() for hf_name, _, get in shard}, os.path.join(out_dir, name),
                  metadata={"format": "pt"})
        weight_map.update({hf_name: name for hf_name, _, _ in shard})
        written.append(name)
    if len(shards) > 1:
        total = sum(int(np.prod(shape)) * itemsize for _, shape, _ in tensors)
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        written.append("model.safetensors.index.json")
    hf_config = config.to_hf_dict()
    hf_config["torch_dtype"] = np.dtype(dtype).name if np.dtype(dtype).name != "bfloat16" else "bfloat16"
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    written.append("config.json")
    return written
