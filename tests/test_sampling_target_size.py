"""solve_factor: asking for N documents (or T tokens) keeps N +- 3 sd with the real uniforms."""

import numpy as np
import pytest

from sampling import (
    BERTIN_BOUNDARIES,
    LogHistogram,
    SamplingParams,
    document_uniforms,
    expected_kept,
    keep_mask,
    keep_probability,
    solve_factor,
)

N = 200_000


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(31)
    pp = np.exp(rng.normal(np.log(BERTIN_BOUNDARIES.q2), 0.4, N))
    # Longer documents tend to have lower perplexity, so token and document targets differ.
    tokens = np.maximum(1, rng.poisson(400 * (BERTIN_BOUNDARIES.q2 / pp))).astype(np.int64)
    uniforms = document_uniforms(7, [f"https://es.example.org/{i}" for i in range(N)])
    histogram = LogHistogram().add(pp, tokens=tokens)
    return pp, tokens, uniforms, histogram, histogram.boundaries()


PARAMS = [
    SamplingParams("stepwise"),
    SamplingParams("gaussian"),
    SamplingParams("gaussian", width=2 / 9),
    SamplingParams("random"),
]


@pytest.mark.parametrize("target", [2_000, 50_000, 150_000])
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.method}-{p.width}")
def test_target_docs_kept_within_3_sigma(corpus, params, target):
    pp, _, uniforms, histogram, boundaries = corpus
    factor, expected = solve_factor(histogram, boundaries, params, target)
    assert expected == pytest.approx(target, rel=1e-9)
    solved = params.with_factor(factor)
    assert solved.width == params.width
    assert expected_kept(histogram, boundaries, solved) == pytest.approx(target, rel=1e-9)
    probability = keep_probability(pp, boundaries, solved)
    sd = np.sqrt(np.sum(probability * (1 - probability)))
    kept = int(keep_mask(pp, uniforms, boundaries, solved).sum())
    assert abs(kept - target) <= 3 * sd, (kept, target, sd)


@pytest.mark.parametrize("params", PARAMS[:2], ids=lambda p: p.method)
def test_target_tokens_kept_within_3_sigma(corpus, params):
    pp, tokens, uniforms, histogram, boundaries = corpus
    target = 0.3 * tokens.sum()
    factor, expected = solve_factor(histogram, boundaries, params, target_tokens=target)
    assert expected == pytest.approx(target, rel=1e-9)
    solved = params.with_factor(factor)
    probability = keep_probability(pp, boundaries, solved)
    sd = np.sqrt(np.sum(tokens.astype(float) ** 2 * probability * (1 - probability)))
    kept_tokens = int(tokens[keep_mask(pp, uniforms, boundaries, solved)].sum())
    assert abs(kept_tokens - target) <= 3 * sd, (kept_tokens, target, sd)
    # A document target gives a different factor: kept documents are not proportional to tokens.
    assert solve_factor(histogram, boundaries, params, target_docs=0.3 * N)[0] != pytest.approx(factor, rel=1e-3)


def test_solution_is_monotone_and_deterministic(corpus):
    _, _, _, histogram, boundaries = corpus
    params = SamplingParams("stepwise")
    factors = [solve_factor(histogram, boundaries, params, t)[0] for t in (1_000, 10_000, 100_000, 190_000)]
    assert factors == sorted(factors) and len(set(factors)) == 4
    assert factors == [solve_factor(histogram.copy(), boundaries, params, t)[0] for t in (1_000, 10_000, 100_000, 190_000)]


def test_random_factor_is_the_fraction(corpus):
    _, _, _, histogram, boundaries = corpus
    assert solve_factor(histogram, boundaries, SamplingParams("random"), N // 4)[0] == pytest.approx(0.25, rel=1e-12)
    factor, expected = solve_factor(histogram, None, SamplingParams("random"), N)
    assert factor == pytest.approx(1.0, rel=1e-12) and factor <= 1.0 and expected == pytest.approx(N)


def test_unreachable_and_invalid_targets(corpus):
    _, _, _, histogram, boundaries = corpus
    with pytest.raises(ValueError, match="unreachable"):
        solve_factor(histogram, boundaries, SamplingParams("stepwise"), N + 1)
    with pytest.raises(ValueError, match="unreachable"):
        solve_factor(histogram, boundaries, SamplingParams("random"), 10 * N)
    # A very narrow gaussian underflows to probability 0 far from the median: those never count.
    with pytest.raises(ValueError, match="unreachable"):
        solve_factor(histogram, boundaries, SamplingParams("gaussian", width=1e-4), N)
    # Every document can reach probability 1 with a large enough factor.
    factor, expected = solve_factor(histogram, boundaries, SamplingParams("stepwise"), N)
    assert expected == pytest.approx(N) and keep_probability(histogram.quantiles([0, 1]), boundaries, SamplingParams("stepwise", factor)).min() == 1.0
    for bad in (0, -5, float("nan"), float("inf"), "10"):
        with pytest.raises(ValueError, match="target_docs"):
            solve_factor(histogram, boundaries, SamplingParams("gaussian"), bad)
    with pytest.raises(ValueError, match="exactly one"):
        solve_factor(histogram, boundaries, SamplingParams("gaussian"), 10, target_tokens=10)
    with pytest.raises(ValueError, match="token counts"):
        solve_factor(LogHistogram().add([1.0, 2.0, 3.0]), boundaries, SamplingParams("random"), target_tokens=1)
