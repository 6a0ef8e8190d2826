"""GPT-J forward pass in plain JAX, readable top to bottom.

Block (parallel residual, ONE LayerNorm shared by attention and MLP):
    h = ln(x);  x = x + attn(h) + mlp(h)
Attention: no biases on q/k/v/out; rotary position embedding on the first `rotary_dim` dims of
each head in GPT-J's interleaved layout (pairs (0,1), (2,3), ... rotate together — NOT NeoX's
rotate-half); causal mask; softmax in fp32. MLP: fc_in (biased) -> tanh GELU -> fc_out (biased).
Then a final LayerNorm and an untied, biased lm_head.

Parameters are a plain dict; per-layer weights are stacked on a leading [n_layer] axis so the
layer loop is one `lax.scan` (compile time independent of depth) and can be rematerialised.
Matrices are stored [in, out] (HF/PyTorch Linear stores [out, in]; convert.py transposes).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lm_models.gptj.config import GPTJConfig

# Names of jax.checkpoint policies accepted as `remat`; "none" = keep every activation,
# "full" = keep only each layer's input and recompute the rest in the backward pass.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def param_shapes(config: GPTJConfig) -> dict:
    """The parameter tree as {name: shape}; the single source of truth for names and layout."""
    d, f, v, n = config.d_model, config.d_ff, config.vocab_size, config.n_layer
    return {
        "wte": (v, d),
        "blocks": {
            "ln_scale": (n, d),
            "ln_bias": (n, d),
            "w_q": (n, d, d),
            "w_k": (n, d, d),
            "w_v": (n, d, d),
            "w_o": (n, d, d),
            "fc_in_w": (n, d, f),
            "fc_in_b": (n, f),
            "fc_out_w": (n, f, d),
            "fc_out_b": (n, d),
        },
        "ln_f_scale": (d,),
        "ln_f_bias": (d,),
        "lm_head_w": (d, v),
        "lm_head_b": (v,),
    }


def init_params(config: GPTJConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """Random initialisation: normal(init_std) matrices/embeddings, zero biases, unit LN scales."""
    shapes = param_shapes(config)
    flat, treedef = jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(flat))
    leaves = []
    for (path, shape), k in zip(flat, keys):
        name = path[-1].key
        if name.endswith("_scale"):
            leaves.append(jnp.ones(shape, dtype))
        elif name.endswith("_b") or name.endswith("_bias"):
            leaves.append(jnp.zeros(shape, dtype))
        else:
            leaves.append((config.init_std * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
    return jax.tree.unflatten(treedef, leaves)


# --- building blocks -------------------------------------------------------------------

def layer_norm(x, scale, bias, eps):
    # Statistics in fp32 even for bf16 activations: bf16 variance loses too many digits.
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def gelu_new(x):
    """GPT-2's tanh approximation of GELU (HF `gelu_new`); the exact-erf GELU differs by ~1e-3."""
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def rotary_sin_cos(seq_len: int, rotary_dim: int, base: float):
    """sin/cos tables [seq, rotary_dim/2] in fp32, computed like HF `create_sinusoidal_positions`."""
    inv_freq = 1.0 / (base ** (np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)))
    angles = np.arange(seq_len, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    return jnp.asarray(np.sin(angles), jnp.float32), jnp.asarray(np.cos(angles), jnp.float32)


def rotate_every_two(x):
    """GPT-J layout: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return jnp.stack((-x2, x1), axis=-1).reshape(x.shape)


def apply_rotary(x, sin, cos):
    """x: [batch, seq, heads, rotary_dim]; sin/cos: [seq, rotary_dim/2], each repeated per pair."""
    sin = jnp.repeat(sin, 2, axis=-1)[None, :, None, :].astype(x.dtype)
    cos = jnp.repeat(cos, 2, axis=-1)[None, :, None, :].astype(x.dtype)
    return x * cos + rotate_every_two(x) * sin


def attention(h, layer, config: GPTJConfig, sin, cos):
    batch, seq, _ = h.shape
    heads, head_dim, rot = config.n_head, config.head_dim, config.rotary_dim
    q = (h @ layer["w_q"]).reshape(batch, seq, heads, head_dim)
    k = (h @ layer["w_k"]).reshape(batch, seq, heads, head_dim)
    v = (h @ layer["w_v"]).reshape(batch, seq, heads, head_dim)
    q = jnp.concatenate([apply_rotary(q[..., :rot], sin, cos), q[..., rot:]], axis=-1)
    k = jnp.concatenate([apply_rotary(k[..., :rot], sin, cos), k[..., rot:]], axis=-1)
    # Scores and softmax in fp32: bf16 logits of long rows saturate and the softmax drifts.
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    scores = scores / np.float32(math.sqrt(head_dim))
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
    scores = jnp.where(causal[None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, seq, heads * head_dim)
    return out @ layer["w_o"]


def mlp(h, layer):
    return gelu_new(h @ layer["fc_in_w"] + layer["fc_in_b"]) @ layer["fc_out_w"] + layer["fc_out_b"]


def block(x, layer, config: GPTJConfig, sin, cos):
    h = layer_norm(x, layer["ln_scale"], layer["ln_bias"], config.layer_norm_eps)
    return x + attention(h, layer, config, sin, cos) + mlp(h, layer)


# --- the model -------------------------------------------------------------------------
# forward = embed -> scan(block) over the stacked layers -> head. The pieces are public because
# the training step backpropagates through the same pieces layer by layer (train.py).

HEAD_PARAMS = ("ln_f_scale", "ln_f_bias", "lm_head_w", "lm_head_b")


def check_input_ids(input_ids, config: GPTJConfig):
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
    if input_ids.shape[1] > config.n_ctx:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds n_ctx={config.n_ctx}")


def embed(wte, input_ids, dtype):
    return jnp.take(wte, input_ids, axis=0).astype(dtype)


def make_layer_fn(config: GPTJConfig, seq_len: int, dtype, activation_sharding=None):
    """layer_fn(layer_params, x) -> x for one block, weights cast to `dtype` inside (so a
    stacked fp32 array is never copied whole), residual stream optionally sharding-constrained."""
    sin, cos = rotary_sin_cos(seq_len, config.rotary_dim, config.rotary_base)

    def layer_fn(layer, x):
        y = block(x, jax.tree.map(lambda p: p.astype(dtype), layer), config, sin, cos)
        return y if activation_sharding is None else jax.lax.with_sharding_constraint(y, activation_sharding)

    return layer_fn


def head(head_params, x, config: GPTJConfig):
    """Final LayerNorm and the untied, biased lm_head; fp32 logits."""
    dtype = x.dtype
    x = layer_norm(x, head_params["ln_f_scale"], head_params["ln_f_bias"], config.layer_norm_eps)
    logits = x @ head_params["lm_head_w"].astype(dtype) + head_params["lm_head_b"].astype(dtype)
    return logits.astype(jnp.float32)


def forward(params, input_ids, config: GPTJConfig, *, dtype=jnp.float32, remat: str = "none",
            activation_sharding=None):
    """Logits [batch, seq, vocab] in fp32 for int token ids [batch, seq].

    dtype: compute dtype (weights are cast to it; bf16 for training). remat: a REMAT_POLICIES
    name applied per layer. activation_sharding: optional jax.sharding.Sharding for the
    [batch, seq, d_model] residual stream, so a mesh keeps activations batch-sharded.
    """
    check_input_ids(input_ids, config)
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose from {sorted(REMAT_POLICIES)}")
    layer_fn = make_layer_fn(config, input_ids.shape[1], dtype, activation_sharding)
    if remat != "none":
        layer_fn = jax.checkpoint(layer_fn, policy=REMAT_POLICIES[remat], prevent_cse=False)
    x = embed(params["wte"], input_ids, dtype)
    if activation_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, activation_sharding)
    x, _ = jax.lax.scan(lambda x, layer: (layer_fn(layer, x), None), x, params["blocks"])
    return head({k: params[k] for k in HEAD_PARAMS}, x, config)
