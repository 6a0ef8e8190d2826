"""Kept fraction per band on 200,000 synthetic perplexities, with the real per-document uniforms.

The perplexities are log-normal with known quartiles m * exp(+-z75 * sigma) (z75 = 0.6745),
used as the boundaries. Per band, the number kept is a sum of independent Bernoulli(p_i) with
p_i given by the formula (checked independently against BERTIN's scalar rules in
test_sampling_keep_probability), so it must lie within 3 sd = 3 sqrt(sum p_i (1 - p_i)).
"""

import numpy as np
import pytest

from sampling import (
    BAND_LABELS,
    Boundaries,
    LogHistogram,
    SamplingParams,
    band_of,
    document_uniforms,
    expected_keep_rates,
    keep_mask,
    keep_probability,
)

N = 200_000
Z75 = 0.6744897501960817  # standard normal 75th percentile
SCALES = {
    # (median, sigma): BERTIN's perplexity scale and a ccnet-like one
    "bertin": (662247.50212365, 0.35),
    "ccnet": (350.0, 0.6),
}


def synthetic(scale: str):
    median, sigma = SCALES[scale]
    rng = np.random.default_rng(20240)
    pp = np.exp(rng.normal(np.log(median), sigma, N))
    known = Boundaries(median * np.exp(-Z75 * sigma), median, median * np.exp(Z75 * sigma))
    return pp, known


@pytest.fixture(scope="module")
def uniforms():
    keys = [f"https://es.example.org/articulo/{i}" for i in range(N)]
    return {seed: document_uniforms(seed, keys) for seed in (0, 1)}


CASES = [
    ("bertin", SamplingParams("stepwise")),  # BERTIN defaults: band 1 clips to 1
    ("bertin", SamplingParams("stepwise", factor=4e4)),
    ("ccnet", SamplingParams("stepwise", factor=40.0)),
    ("bertin", SamplingParams("gaussian")),
    ("bertin", SamplingParams("gaussian", width=2 / 9)),
    ("ccnet", SamplingParams("gaussian", factor=1.2, width=0.5)),
    ("ccnet", SamplingParams("random")),
    ("bertin", SamplingParams("random", factor=0.05)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale, params", CASES, ids=lambda x: x if isinstance(x, str) else f"{x.method}-{x.factor:g}-{x.width}")
def test_kept_fraction_per_band_within_3_sigma(uniforms, seed, scale, params):
    pp, boundaries = synthetic(scale)
    band = band_of(pp, boundaries)
    # Known quartiles: each band holds about a quarter of the documents.
    np.testing.assert_allclose(np.bincount(band, minlength=4) / N, 0.25, atol=0.005)

    probability = keep_probability(pp, boundaries, params)
    kept = keep_mask(pp, uniforms[seed], boundaries, params)
    for b, label in enumerate(BAND_LABELS):
        in_band = band == b
        p = probability[in_band]
        expected = p.sum()
        sd = np.sqrt(np.sum(p * (1 - p)))
        actual = kept[in_band].sum()
        assert abs(actual - expected) <= 3 * sd + 1e-9, (label, actual, expected, sd)
        if np.all(p == 1.0):
            assert actual == in_band.sum()  # clipped to 1: every document kept

    # The histogram's expected per-band rates (written to stats.json) agree with the exact ones.
    rates = expected_keep_rates(LogHistogram().add(pp), boundaries, params)
    exact = [probability[band == b].mean() for b in range(4)]
    np.testing.assert_allclose(rates, exact, rtol=2e-3, atol=1e-6)


def test_different_seed_gives_different_sample(uniforms):
    pp, boundaries = synthetic("bertin")
    params = SamplingParams("gaussian")
    kept0 = keep_mask(pp, uniforms[0], boundaries, params)
    kept1 = keep_mask(pp, uniforms[1], boundaries, params)
    assert np.array_equal(kept0, keep_mask(pp, uniforms[0], boundaries, params))
    differing = np.count_nonzero(kept0 != kept1)
    # Two independent samples at keep rate ~0.75 differ on ~2 p (1 - p) of the documents.
    assert differing > 0.2 * N
