"""Every sharding decision for GPT-J training, in one place.

Mesh axes: "data" (pure data parallel: params replicated), "fsdp" (data parallel with params,
gradients and Adam state sharded across it), "tensor" (Megatron-style model parallel: attention
heads and MLP columns split). The batch is split over ("data", "fsdp").

Parameter rules name the partitioning of each parameter's own dims; stacked per-layer weights get
an unsharded leading [n_layer] axis. A dim that the axis size does not divide stays unsharded
(tiny configs on many devices), which is always correct, just less memory-efficient.
Optimizer-state leaves follow the parameter they mirror (matched by name and shape).
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm_models.gptj.config import GPTJConfig
from lm_models.gptj.model import param_shapes

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Each matrix is split over "tensor" on its head/hidden side (column-parallel in, row-parallel
# out) and over "fsdp" on the other side, so all 8 cores of a v3-8 hold 1/8 of every matrix.
PARAM_RULES: dict[str, tuple] = {
    "wte": ("tensor", "fsdp"),          # [vocab, d_model]
    "ln_scale": (None,),
    "ln_bias": (None,),
    "w_q": ("fsdp", "tensor"),          # [d_model, heads*head_dim]
    "w_k": ("fsdp", "tensor"),
    "w_v": ("fsdp", "tensor"),
    "w_o": ("tensor", "fsdp"),          # [heads*head_dim, d_model]
    "fc_in_w": ("fsdp", "tensor"),      # [d_model, d_ff]
    "fc_in_b": ("tensor",),
    "fc_out_w": ("tensor", "fsdp"),     # [d_ff, d_model]
    "fc_out_b": (None,),
    "ln_f_scale": (None,),
    "ln_f_bias": (None,),
    "lm_head_w": ("fsdp", "tensor"),    # [d_model, vocab]
    "lm_head_b": ("tensor",),
}


def axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    size = 1
    for axis in axes:
        size *= mesh.shape.get(axis, 1)
    return size


def _fit(mesh: Mesh, shape, rule) -> P:
    """Right-align `rule` with `shape` and drop axes that do not divide their dim."""
    lead = len(shape) - len(rule)
    if lead < 0:
        raise ValueError(f"rule {rule} has more dims than shape {shape}")
    spec = [None] * lead
    for dim, axes in zip(shape[lead:], rule):
        spec.append(axes if axes is not None and dim % axis_size(mesh, axes) == 0 else None)
    return P(*spec)


def param_spec(name: str, shape, mesh: Mesh) -> P:
    if name not in PARAM_RULES:
        raise KeyError(f"no sharding rule for parameter {name!r}")
    return _fit(mesh, shape, PARAM_RULES[name])


def param_shardings(config: GPTJConfig, mesh: Mesh) -> dict:
    shapes = param_shapes(config)
    return jax.tree.map_with_path(
        lambda path, shape: NamedSharding(mesh, param_spec(path[-1].key, shape, mesh)),
        shapes, is_leaf=lambda x: isinstance(x, tuple))


def tree_shardings(tree, mesh: Mesh, config: GPTJConfig):
    """Shardings for any pytree whose leaves mirror parameters (grads, Adam mu/nu) or are scalars.

    A leaf is matched to a parameter by its innermost dict key and its shape; anything else
    (step counters, empty states) is replicated.
    """
    shapes = param_shapes(config)
    flat_params = {path[-1].key: shape for path, shape in
                   jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]}

    def sharding(path, leaf):
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        name = names[-1] if names else None
        if name in flat_params and tuple(leaf.shape) == tuple(flat_params[name]):
            return NamedSharding(mesh, param_spec(name, leaf.shape, mesh))
        return NamedSharding(mesh, P())

    return jax.tree.map_with_path(sharding, tree)


def batch_spec(mesh: Mesh, batch_size: int, leading_dims: int = 0) -> P:
    """[*leading, batch, seq] token arrays: batch split over BATCH_AXES when it divides evenly."""
    shards = axis_size(mesh, BATCH_AXES)
    axes = BATCH_AXES if batch_size % shards == 0 else None
    return P(*([None] * leading_dims), axes, None)


def activation_sharding(mesh: Mesh, batch_size: int) -> NamedSharding:
    """The [batch, seq, d_model] residual stream: batch-split, replicated over "tensor"."""
    shards = axis_size(mesh, BATCH_AXES)
    return NamedSharding(mesh, P(BATCH_AXES if batch_size % shards == 0 else None, None, None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
