"""GPT-J training step on 8 simulated CPU devices: sharded == unsharded.

XLA's device count is fixed when jax first initialises, and the shared pytest process may already
have done so with one device, so the check runs in a fresh interpreter with
--xla_force_host_platform_device_count=8 and reports JSON back.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(r'''
    import json, sys
    import numpy as np
    import jax, jax.numpy as jnp
    from lm_models.gptj import init_params, to_hf, from_hf
    from lm_models.gptj.train_step import load_config, make_mesh, init_train_state, make_train_step

    assert len(jax.devices()) == 8, jax.devices()
    cfg = load_config("tiny").replace(
        model={"vocab_size": 512, "d_model": 64, "n_layer": 2, "n_head": 8, "rotary_dim": 4, "d_ff": 128,
               "init_std": 0.2},
        seq_len=32, global_batch=16, microbatches=2, warmup_steps=0, total_steps=10, lr_peak=1e-2, lr_end=1e-3,
        compute_dtype="float32", grad_accum_dtype="float32", remat="full", adam_eps=1e-3)
    params = init_params(cfg.model, jax.random.PRNGKey(0))
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    params = jax.tree.map(lambda p: np.asarray(p + 0.1 * jax.random.normal(next(keys), p.shape)), params)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 512, (16, 33)).astype(np.int32) for _ in range(2)]

    def run(mesh_axes, devices):
        c = cfg.replace(mesh=mesh_axes)
        mesh = make_mesh(c, devices)
        state = init_train_state(c, mesh, params)
        step = make_train_step(c, mesh)
        losses, norms = [], []
        for batch in batches:
            state, m = step(state, batch)
            losses.append(float(m["loss"])); norms.append(float(m["grad_norm"]))
        w_q = state.params["blocks"]["w_q"]
        mu = state.opt_state[1].mu["blocks"]["w_q"]
        layout = {"w_q_spec": str(w_q.sharding.spec), "w_q_devices": len(w_q.sharding.device_set),
                  "w_q_shard_shape": list(w_q.addressable_shards[0].data.shape),
                  "adam_mu_shard_shape": list(mu.addressable_shards[0].data.shape)}
        return losses, norms, jax.tree.map(np.asarray, state.params), layout

    ref_losses, ref_norms, ref_params, _ = run({"fsdp": 1, "tensor": 1}, jax.devices()[:1])
    report = {"reference": {"losses": ref_losses, "grad_norms": ref_norms}, "meshes": {}}
    for name, axes in {"fsdp=8": {"fsdp": 8}, "tensor=8": {"tensor": 8}, "fsdp=4,tensor=2": {"fsdp": 4, "tensor": 2},
                       "data=2,fsdp=2,tensor=2": {"data": 2, "fsdp": 2, "tensor": 2}}.items():
        losses, norms, p, layout = run(axes, jax.devices())
        diffs = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_params))]
        report["meshes"][name] = {"losses": losses, "grad_norms": norms, "max_param_diff": max(diffs), **layout}
    report["param_change"] = max(float(np.abs(a - b).max()) for a, b in
                                 zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)))

    # Conversion straight into the sharded layout.
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        to_hf(cfg.model, params, d)
        mesh = make_mesh(cfg.replace(mesh={"fsdp": 4, "tensor": 2}))
        _, loaded = from_hf(d, mesh=mesh)
        fc_in = loaded["blocks"]["fc_in_w"]
        report["from_hf_sharded"] = {
            "equal": all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params))),
            "fc_in_spec": str(fc_in.sharding.spec), "fc_in_shard_shape": list(fc_in.addressable_shards[0].data.shape)}

    # A microbatch the batch axes cannot split evenly is refused up front.
    try:
        bad = cfg.replace(global_batch=8, microbatches=2, mesh={"fsdp": 8})
        make_train_step(bad, make_mesh(bad))
        report["uneven_error"] = None
    except ValueError as e:
        report["uneven_error"] = str(e)
    print("REPORT" + json.dumps(report))
''')


@pytest.fixture(scope="module")
def sharded_report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


@pytest.mark.parametrize("mesh", ["fsdp=8", "tensor=8", "fsdp=4,tensor=2", "data=2,fsdp=2,tensor=2"])
def test_sharded_step_matches_unsharded(sharded_report, mesh):
    ref, got = sharded_report["reference"], sharded_report["meshes"][mesh]
    for a, b in zip(got["losses"], ref["losses"]):
        assert a == pytest.approx(b, rel=1e-5)
    for a, b in zip(got["grad_norms"], ref["grad_norms"]):
        assert a == pytest.approx(b, rel=1e-4)
    assert got["max_param_diff"] < 1e-5
    assert sharded_report["param_change"] > 1e-2        # two real updates happened
    assert got["w_q_devices"] == 8


def test_parameters_and_adam_state_are_really_sharded(sharded_report):
    meshes = sharded_report["meshes"]
    # w_q is [n_layer=2, d_model=64, heads*head_dim=64]: fsdp splits d_model, tensor splits heads.
    assert meshes["fsdp=8"]["w_q_shard_shape"] == [2, 8, 64]
    assert meshes["tensor=8"]["w_q_shard_shape"] == [2, 64, 8]
    assert meshes["fsdp=4,tensor=2"]["w_q_shard_shape"] == [2, 16, 32]
    for mesh in meshes.values():
        assert mesh["adam_mu_shard_shape"] == mesh["w_q_shard_shape"]


def test_from_hf_loads_straight_into_the_sharded_layout(sharded_report):
    loaded = sharded_report["from_hf_sharded"]
    assert loaded["equal"]
    assert loaded["fc_in_shard_shape"] == [2, 16, 64]    # [n_layer, d_model/4, d_ff/2]


def test_uneven_batch_split_is_refused(sharded_report):
    assert "cannot split evenly" in (sharded_report["uneven_error"] or "")
