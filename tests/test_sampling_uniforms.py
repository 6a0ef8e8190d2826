"""Per-document uniforms: range, determinism, seed dependence, uniformity, order independence."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from sampling import document_key, document_uniform, document_uniforms

N = 200_000
KEYS = [f"https://example.com/doc/{i}" for i in range(N)]


@pytest.fixture(scope="module")
def uniforms_by_seed():
    return {seed: document_uniforms(seed, KEYS) for seed in (0, 1, 2)}


def test_range_and_dtype(uniforms_by_seed):
    for u in uniforms_by_seed.values():
        assert u.dtype == np.float64 and u.shape == (N,)
        assert u.min() >= 0.0 and u.max() < 1.0


def test_matches_documented_definition():
    """The formula in sampling/uniforms.py, recomputed with plain Python integers."""
    keys = ["https://example.com/a", "", "año ñandú €", "\ud800 lone surrogate", "x" * 100_000]
    for seed in (0, 1, 2**64 - 1):
        want = []
        for key in keys:
            digest = hashlib.blake2b(
                key.encode("utf-8", "surrogatepass"), digest_size=8, key=seed.to_bytes(8, "little")
            ).digest()
            want.append((int.from_bytes(digest, "little") >> 11) / 2**53)
        assert document_uniforms(seed, keys).tolist() == want
        assert document_uniform(seed, keys[0]) == want[0]


def test_deterministic_across_processes():
    """Same values in a fresh interpreter with a different string-hash seed (not Python's hash())."""
    code = "from sampling import document_uniforms; print(document_uniforms(5, ['a', 'b', 'https://x.es/1']).tolist())"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == str(document_uniforms(5, ["a", "b", "https://x.es/1"]).tolist())
    assert document_uniforms(5, KEYS[:1000]).tolist() == document_uniforms(5, KEYS[:1000]).tolist()


def test_seeds_give_different_independent_streams(uniforms_by_seed):
    u0, u1, u2 = uniforms_by_seed[0], uniforms_by_seed[1], uniforms_by_seed[2]
    assert not np.any(u0 == u1)  # collisions would be a 2**-53 event per document
    for a, b in ((u0, u1), (u0, u2), (u1, u2)):
        # Correlation of independent uniforms has sd 1/sqrt(N); 5 sd is a fixed, loose bound.
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(N)


def test_look_uniform(uniforms_by_seed):
    for u in uniforms_by_seed.values():
        assert stats.kstest(u, "uniform").pvalue > 1e-3
        counts = np.bincount((u * 100).astype(int), minlength=100)
        assert stats.chisquare(counts).pvalue > 1e-3
        # Neighbouring keys (differing in one digit) must not be correlated.
        assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(N)


def test_independent_of_input_order(uniforms_by_seed):
    permutation = np.random.default_rng(3).permutation(N)
    shuffled = document_uniforms(0, [KEYS[i] for i in permutation])
    assert np.array_equal(shuffled, uniforms_by_seed[0][permutation])
    # One at a time equals in a batch: no state carried between keys.
    assert [document_uniform(0, KEYS[i]) for i in range(50)] == uniforms_by_seed[0][:50].tolist()


def test_bad_seed_and_keys():
    for seed in (-1, 2**64, 1.0, True, "0"):
        with pytest.raises(ValueError, match="seed"):
            document_uniforms(seed, ["a"])
    assert document_uniforms(np.int64(3), ["a"]).tolist() == document_uniforms(3, ["a"]).tolist()
    with pytest.raises(TypeError, match="document keys must be strings"):
        document_uniforms(0, ["a", None])
    assert document_uniforms(0, []).shape == (0,)


def test_document_key():
    assert document_key("https://a.es/x", "texto") == "https://a.es/x"
    assert document_key(None, "texto") == "texto"
    assert document_key("", "texto") == "texto"
    assert document_key("  ", "texto") == "texto"
    with pytest.raises(TypeError, match="no url"):
        document_key(None, None)
