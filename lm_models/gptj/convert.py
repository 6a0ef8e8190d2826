"""Hugging Face GPT-J checkpoints <-> JAX parameter trees (see model.param_shapes).

from_hf streams one tensor at a time (safetensors `safe_open`, or PyTorch `.bin` through
`torch.load(weights_only=True)`, which refuses to run pickled code): each per-layer tensor is
written in place into its slot of a stacked array that already lives on the device(s), optionally
in its NamedSharding layout. The host holds one tensor at a time (plus the pages of the file being
read), so a 6B conversion needs about the parameters' size of RAM even on a CPU-only host.

A path may also be an fsspec URL (gs://, memory://, ...): safetensors are then streamed with ranged
reads, one tensor at a time (the 8-byte header length, the JSON header, then each tensor's byte
range), so a 6B checkpoint on gs:// goes straight into the sharded training layout without first
copying ~24 GB to local disk. PyTorch `.bin` files cannot be read in ranges: from a URL they are
copied one file at a time into a temporary directory (convert them to safetensors to avoid that).

to_hf writes safetensors (one file, or shards + model.safetensors.index.json) and a config.json
that transformers' GPTJForCausalLM.from_pretrained loads.
"""
from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import shutil
import struct
import tempfile
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


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                      "I8": "i1", "U8": "u1", "BOOL": "?"}


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _iter_safetensors_ranged(fs, files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """safetensors over an fsspec filesystem, one ranged read per tensor (no local copy)."""
    for file in files:
        (header_len,) = struct.unpack("<Q", fs.cat_file(file, start=0, end=8))
        header = json.loads(fs.cat_file(file, start=8, end=8 + header_len))
        header.pop("__metadata__", None)
        base = 8 + header_len
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, end = info["data_offsets"]
            if info["dtype"] == "BF16":
                import ml_dtypes
                dtype = np.dtype(ml_dtypes.bfloat16)
            elif info["dtype"] in _SAFETENSORS_DTYPES:
                dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            else:
                raise ValueError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}")
            raw = fs.cat_file(file, start=base + start, end=base + end) if end > start else b""
            expected = int(np.prod(info["shape"], dtype=np.int64)) * dtype.itemsize
            if len(raw) != expected:
                raise ValueError(f"{file}: tensor {name} is {len(raw)} bytes, header says {expected}")
            yield name, np.frombuffer(raw, dtype=dtype).reshape(info["shape"])


def _iter_torch_bin_remote(fs, files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """A .bin cannot be read in ranges: copy one file at a time, read it, delete it."""
    for file in files:
        tmp = tempfile.mkdtemp(prefix="ppsample-init-")
        try:
            local = os.path.join(tmp, posixpath.basename(file))
            fs.get_file(file, local)
            yield from _iter_torch_bin([local])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _checkpoint_files(path: str) -> tuple[list[str], Callable]:
    if _is_url(path):
        import fsspec
        fs, root = fsspec.core.url_to_fs(path)
        join, exists = (lambda *parts: posixpath.join(root.rstrip("/"), *parts)), fs.exists

        def read_json(file):
            with fs.open(file, "r") as f:
                return json.load(f)
        readers = {"safetensors": functools.partial(_iter_safetensors_ranged, fs),
                   "bin": functools.partial(_iter_torch_bin_remote, fs)}
    else:
        join, exists = (lambda *parts: os.path.join(path, *parts)), os.path.exists

        def read_json(file):
            with open(file) as f:
                return json.load(f)
        readers = {"safetensors": _iter_safetensors, "bin": _iter_torch_bin}
    for index_name, single, kind in (
        ("model.safetensors.index.json", "model.safetensors", "safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", "bin"),
    ):
        index = join(index_name)
        if exists(index):
            weight_map = read_json(index)["weight_map"]
            return [join(name) for name in sorted(set(weight_map.values()))], readers[kind]
        if exists(join(single)):
            return [join(single)], readers[kind]
    raise FileNotFoundError(f"no model.safetensors[.index.json] or pytorch_model.bin[.index.json] in {path}")


def load_hf_config(path: str) -> GPTJConfig:
    if _is_url(path):
        import fsspec
        fs, root = fsspec.core.url_to_fs(path)
        config_file = posixpath.join(root.rstrip("/"), "config.json")
        if not fs.exists(config_file):
            raise FileNotFoundError(f"{path.rstrip('/')}/config.json not found: not a Hugging Face model directory")
        with fs.open(config_file, "r") as f:
            return GPTJConfig.from_hf_dict(json.load(f))
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
