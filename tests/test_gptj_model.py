"""GPT-J model and checkpoint conversion against transformers' PyTorch GPTJForCausalLM."""
from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm_models.gptj import GPTJConfig, forward, from_hf, init_params, param_shapes, to_hf  # noqa: E402
from lm_models.gptj import model as gptj_model  # noqa: E402

PARITY_TOL = 1e-4
# Lengths 1..64: the edges, odd sizes and powers of two (the full sweep is a slow test).
LENGTHS = (1, 2, 7, 33, 64)

HF_CONFIGS = {
    # partial rotary (4 of 8 head dims), default d_ff = 4 d_model
    "partial-rotary": dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4),
    # rotary over the whole head, odd head count, explicit n_inner
    "full-rotary": dict(vocab_size=61, n_positions=64, n_embd=48, n_layer=3, n_head=3, rotary_dim=16, n_inner=80),
}


def make_hf_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    hf_config = transformers.GPTJConfig(**HF_CONFIGS[name], initializer_range=0.3, tie_word_embeddings=False,
                                        bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = transformers.GPTJForCausalLM(hf_config).eval()
    with torch.no_grad():
        # Biases start at zero and LayerNorms at (1, 0): perturb them so a dropped or misplaced
        # bias/LN parameter shows up in the logits.
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias") or ".ln_" in param_name or "ln_f" in param_name:
                param.add_(0.5 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def hf_checkpoint(request, tmp_path_factory):
    model = make_hf_model(request.param)
    path = str(tmp_path_factory.mktemp(f"hf-{request.param}"))
    model.save_pretrained(path)
    return model, path


def max_logit_diff(model, path, lengths, batch=3, seed=1) -> float:
    config, params = from_hf(path)
    # A fresh jit per call: monkeypatched building blocks must be re-traced.
    run = jax.jit(lambda p, ids: forward(p, ids, config))
    rng = np.random.default_rng(seed)
    worst = 0.0
    for length in lengths:
        ids = rng.integers(0, config.vocab_size, size=(batch, length))
        with torch.no_grad():
            expected = model(torch.tensor(ids)).logits.numpy()
        got = np.asarray(run(params, jnp.asarray(ids, jnp.int32)))
        assert got.shape == expected.shape == (batch, length, config.vocab_size)
        assert got.dtype == np.float32
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def test_logits_match_transformers(hf_checkpoint):
    model, path = hf_checkpoint
    assert max_logit_diff(model, path, LENGTHS) <= PARITY_TOL


@pytest.mark.slow
def test_logits_match_transformers_every_length(hf_checkpoint):
    model, path = hf_checkpoint
    assert max_logit_diff(model, path, range(1, 65), batch=2) <= PARITY_TOL


def rotate_half(x):
    """GPT-NeoX/LLaMA layout: rotate the two halves instead of interleaved pairs."""
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def erf_gelu(x):
    return jax.nn.gelu(x, approximate=False)


@pytest.mark.parametrize("block, wrong", [("rotate_every_two", rotate_half), ("gelu_new", erf_gelu)],
                         ids=["neox-rotate-half", "exact-erf-gelu"])
def test_parity_check_catches_wrong_variants(hf_checkpoint, monkeypatch, block, wrong):
    """Negative controls: the parity tolerance is tight enough to reject near-miss variants."""
    model, path = hf_checkpoint
    monkeypatch.setattr(gptj_model, block, wrong)
    assert max_logit_diff(model, path, (64,)) > PARITY_TOL


def test_rotary_layout_is_interleaved_pairs():
    x = jnp.arange(6.0).reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(np.asarray(gptj_model.rotate_every_two(x)).ravel(), [-1, 0, -3, 2, -5, 4])


def test_greedy_generation_matches_transformers(hf_checkpoint):
    model, path = hf_checkpoint
    config, params = from_hf(path)
    prompt = np.random.default_rng(5).integers(0, config.vocab_size, size=(2, 5))
    new_tokens = 12
    with torch.no_grad():
        expected = model.generate(torch.tensor(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, pad_token_id=0, attention_mask=torch.ones(prompt.shape, dtype=torch.long)).numpy()

    # Fixed-size buffer: causal attention makes trailing padding irrelevant, so one compile.
    total = prompt.shape[1] + new_tokens
    run = jax.jit(lambda p, ids: forward(p, ids, config))
    tokens = np.zeros((prompt.shape[0], total), dtype=np.int32)
    tokens[:, :prompt.shape[1]] = prompt
    for position in range(prompt.shape[1], total):
        logits = np.asarray(run(params, jnp.asarray(tokens)))
        tokens[:, position] = logits[:, position - 1].argmax(-1)
    np.testing.assert_array_equal(tokens, expected)


# --- conversion --------------------------------------------------------------------------

def read_safetensors(path):
    from safetensors.numpy import load_file
    out = {}
    index = os.path.join(path, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    for name in files:
        out.update(load_file(os.path.join(path, name)))
    return out


def test_round_trip_hf_jax_hf_is_bit_identical(hf_checkpoint, tmp_path):
    model, path = hf_checkpoint
    config, params = from_hf(path)
    to_hf(config, params, str(tmp_path))
    original, written = read_safetensors(path), read_safetensors(str(tmp_path))
    assert set(written) == set(original)
    for name, tensor in original.items():
        assert written[name].dtype == tensor.dtype == np.float32, name
        assert written[name].shape == tensor.shape, name
        assert np.array_equal(written[name], tensor), name

    reloaded = transformers.GPTJForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    ids = torch.tensor(np.random.default_rng(2).integers(0, config.vocab_size, size=(2, 9)))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_sharded_safetensors_round_trip(hf_checkpoint, tmp_path):
    _, path = hf_checkpoint
    config, params = from_hf(path)
    files = to_hf(config, params, str(tmp_path), max_shard_bytes=20_000)
    assert "model.safetensors.index.json" in files and len(files) > 3
    config2, params2 = from_hf(str(tmp_path))
    assert config2 == config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def _upload(local_dir, url_root: str):
    import fsspec
    fs = fsspec.filesystem("memory")
    for name in os.listdir(local_dir):
        fs.pipe(f"{url_root}/{name}", open(os.path.join(local_dir, name), "rb").read())


def _no_copies(monkeypatch):
    """Streaming means ranged reads only: any whole-file download from the 'bucket' fails."""
    from fsspec.implementations.memory import MemoryFileSystem

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was copied instead of streamed")
    for method in ("get", "get_file", "download"):
        monkeypatch.setattr(MemoryFileSystem, method, refuse)


@pytest.mark.parametrize("dtype,max_shard_bytes", [(np.float32, 20_000), (np.float16, 1 << 30)])
def test_init_from_a_url_streams_safetensors_tensor_by_tensor(hf_checkpoint, tmp_path, monkeypatch, dtype,
                                                               max_shard_bytes):
    """gs:// stand-in: fsspec's memory filesystem, sharded and single-file safetensors."""
    _, path = hf_checkpoint
    config, params = from_hf(path)
    to_hf(config, params, str(tmp_path), dtype=dtype, max_shard_bytes=max_shard_bytes)
    url = f"memory://bucket-{tmp_path.name}/gpt-j"
    _upload(str(tmp_path), url)
    expected_config, expected = from_hf(str(tmp_path))        # the local read of the same files
    _no_copies(monkeypatch)
    got_config, got = from_hf(url)
    assert got_config == expected_config == config
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert a.dtype == jnp.float32 and np.array_equal(np.asarray(a), np.asarray(b))


def test_trainer_init_from_a_url_goes_straight_into_the_mesh_layout(hf_checkpoint, tmp_path, monkeypatch):
    from lm_models.gptj.train_step import TrainConfig, make_mesh
    from lm_models.gptj.train_loop import _load_init_params
    _, path = hf_checkpoint
    url = f"memory://bucket-{tmp_path.name}/hf"
    _upload(path, url)
    config, expected = from_hf(path)
    cfg = TrainConfig(model=config, seq_len=8, global_batch=2, microbatches=1)
    mesh = make_mesh(cfg)
    _no_copies(monkeypatch)
    got = _load_init_params(url, cfg, mesh)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert isinstance(a.sharding, jax.sharding.NamedSharding) and np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="but the config trains"):
        _load_init_params(url, cfg.replace(model={"n_layer": config.n_layer + 1}), mesh)


def test_pytorch_bin_checkpoint_loads(hf_checkpoint, tmp_path):
    model, path = hf_checkpoint
    config, params = from_hf(path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(open(os.path.join(path, "config.json")).read())
    _, from_bin = from_hf(str(tmp_path))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(from_bin)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pytorch_bin_with_pickled_code_is_refused(hf_checkpoint, tmp_path, monkeypatch):
    _, path = hf_checkpoint
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": _RunsCode()}, f)
    (tmp_path / "config.json").write_text(open(os.path.join(path, "config.json")).read())
    with pytest.raises(pickle.UnpicklingError):
        from_hf(str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_bfloat16_checkpoint_converts_to_float32(tmp_path):
    model = make_hf_model("partial-rotary").to(torch.bfloat16)
    model.save_pretrained(str(tmp_path))
    config, params = from_hf(str(tmp_path))
    assert params["wte"].dtype == jnp.float32
    expected = model.transformer.wte.weight.detach().float().numpy()
    assert np.array_equal(np.asarray(params["wte"]), expected)


def test_broken_checkpoints_give_clear_errors(hf_checkpoint, tmp_path):
    from safetensors.numpy import save_file
    _, path = hf_checkpoint
    tensors = read_safetensors(path)
    (tmp_path / "config.json").write_text(open(os.path.join(path, "config.json")).read())

    missing = {k: v for k, v in tensors.items() if k != "transformer.h.1.mlp.fc_in.bias"}
    save_file(missing, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensors.*fc_in_b.*\[1\]"):
        from_hf(str(tmp_path))

    wrong_shape = dict(tensors, **{"lm_head.bias": np.zeros(3, np.float32)})
    save_file(wrong_shape, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head.bias: shape"):
        from_hf(str(tmp_path))

    unexpected = dict(tensors, **{"transformer.h.0.attn.q_proj.bias": np.zeros(1, np.float32)})
    save_file(unexpected, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected tensor"):
        from_hf(str(tmp_path))

    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf(str(tmp_path / "nowhere"))


def test_6b_config_shapes_and_parameter_count():
    config = GPTJConfig()
    assert (config.n_layer, config.d_model, config.n_head, config.rotary_dim, config.d_ff, config.vocab_size) == \
        (28, 4096, 16, 64, 16384, 50400)
    shapes = jax.tree.leaves(param_shapes(config), is_leaf=lambda x: isinstance(x, tuple))
    assert sum(math.prod(s) for s in shapes) == config.n_params() == 6_050_882_784
    round_trip = GPTJConfig.from_hf_dict(config.to_hf_dict())
    assert round_trip == config


def test_forward_rejects_bad_input():
    config = GPTJConfig(vocab_size=16, n_ctx=8, d_model=8, n_layer=1, n_head=2, rotary_dim=2, d_ff=16)
    params = None  # the input is checked before any weight is touched
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        forward(params, jnp.zeros((1, 9), jnp.int32), config)
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        forward(params, jnp.zeros((9,), jnp.int32), config)
    with pytest.raises(ValueError, match="remat"):
        forward(params, jnp.zeros((1, 4), jnp.int32), config, remat="sometimes")
    with pytest.raises(ValueError, match="rotary_dim"):
        GPTJConfig(d_model=8, n_head=2, rotary_dim=6)


@pytest.mark.slow
def test_remat_policies_give_the_same_gradients():
    config = GPTJConfig(vocab_size=32, n_ctx=16, d_model=16, n_layer=2, n_head=2, rotary_dim=4, d_ff=32, init_std=0.2)
    params = init_params(config, jax.random.PRNGKey(1))
    ids = jax.random.randint(jax.random.PRNGKey(2), (2, 16), 0, 32)

    def loss(p, remat):
        return forward(p, ids, config, remat=remat).mean()

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    base = grad(params, "none")
    for remat in ("full",):
        for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(grad(params, remat))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
