"""keep_probability against a scalar transliteration of BERTIN's rules, boundary equality, validation."""

import math

import numpy as np
import pytest

from sampling import (
    BAND_LABELS,
    BERTIN_BOUNDARIES,
    Boundaries,
    SamplingParams,
    band_of,
    keep_mask,
    keep_probability,
)

Q1, Q2, Q3 = BERTIN_BOUNDARIES.as_tuple()


def bertin_reference(pp: float, boundaries: Boundaries, method: str, factor: float, width: float | None) -> float:
    """BERTIN's mc4.py rules, one document at a time, with the PP == Q2 / Q3 gap closed as the issue defines."""
    q1, q2, q3 = boundaries.as_tuple()
    if method == "stepwise":
        if pp <= q1:
            quartile_range = q1
        elif pp <= q2:
            quartile_range = q2 - q1
        elif pp < q3:
            quartile_range = q3 - q2
        else:
            quartile_range = 10 * q3
        probability = factor / quartile_range
    elif method == "gaussian":
        probability = factor * math.exp((-1 / width) * ((pp - q2) / q2) ** 2)
    else:
        probability = factor
    return min(1.0, max(0.0, probability))


PARAMS = [
    SamplingParams("stepwise"),
    SamplingParams("stepwise", factor=5e4),
    SamplingParams("stepwise", factor=2e6),
    SamplingParams("gaussian"),
    SamplingParams("gaussian", width=2 / 9),
    SamplingParams("gaussian", factor=1.3, width=1.0),
    SamplingParams("random"),
    SamplingParams("random", factor=0.1),
]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.method}-{p.factor}-{p.width}")
def test_vectorised_probability_matches_scalar_reference(params):
    rng = np.random.default_rng(7)
    pp = np.concatenate([np.exp(rng.uniform(np.log(1e4), np.log(1e8), 3000)), [Q1, Q2, Q3, 1.0, 1e12]])
    got = keep_probability(pp, BERTIN_BOUNDARIES, params)
    want = np.array([bertin_reference(x, BERTIN_BOUNDARIES, params.method, params.factor, params.width) for x in pp])
    assert got.dtype == np.float64 and got.shape == pp.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_defaults_are_bertins():
    assert SamplingParams("stepwise").factor == 1.5e5
    gaussian = SamplingParams("gaussian")
    assert (gaussian.factor, gaussian.width) == (0.78, 4.5)
    assert SamplingParams("random").factor == 0.5
    assert SamplingParams("stepwise").width is None
    assert gaussian.to_dict() == {"factor": 0.78, "width": 4.5}
    assert SamplingParams("random").to_dict() == {"factor": 0.5}


def test_stepwise_boundary_equality():
    factor = 1e4  # small enough that no band clips
    params = SamplingParams("stepwise", factor=factor)
    pp = np.array([Q1, Q2, Q3])
    assert band_of(pp, BERTIN_BOUNDARIES).tolist() == [0, 1, 3]
    np.testing.assert_allclose(
        keep_probability(pp, BERTIN_BOUNDARIES, params), [factor / Q1, factor / (Q2 - Q1), factor / (10 * Q3)], rtol=1e-15
    )
    # One ulp either side moves to the neighbouring band.
    above = np.nextafter(pp, np.inf)
    below = np.nextafter(pp, 0)
    assert band_of(above, BERTIN_BOUNDARIES).tolist() == [1, 2, 3]
    assert band_of(below, BERTIN_BOUNDARIES).tolist() == [0, 1, 2]
    np.testing.assert_allclose(
        keep_probability(above, BERTIN_BOUNDARIES, params)[:2], [factor / (Q2 - Q1), factor / (Q3 - Q2)], rtol=1e-15
    )
    assert keep_probability(below[2:], BERTIN_BOUNDARIES, params)[0] == pytest.approx(factor / (Q3 - Q2), rel=1e-15)
    assert len(BAND_LABELS) == 4


def test_bertin_default_stepwise_probabilities_on_bertin_scale():
    # 1.5e5 / (Q2 - Q1) > 1 clips to 1; the others follow factor / R.
    got = keep_probability(np.array([5e5, 6e5, 8e5, 2e6]), BERTIN_BOUNDARIES, SamplingParams("stepwise"))
    np.testing.assert_allclose(got, [1.5e5 / Q1, 1.0, 1.5e5 / (Q3 - Q2), 1.5e5 / (10 * Q3)], rtol=1e-15)


def test_gaussian_peak_and_width_9_2_vs_2_9():
    pp = np.array([Q2, 2 * Q2])
    wide = keep_probability(pp, BERTIN_BOUNDARIES, SamplingParams("gaussian"))
    narrow = keep_probability(pp, BERTIN_BOUNDARIES, SamplingParams("gaussian", width=2 / 9))
    assert wide[0] == narrow[0] == 0.78
    assert wide[1] == pytest.approx(0.78 * math.exp(-2 / 9), rel=1e-15)
    assert narrow[1] == pytest.approx(0.78 * math.exp(-9 / 2), rel=1e-15)
    clipped = keep_probability(pp, BERTIN_BOUNDARIES, SamplingParams("gaussian", factor=3.0))
    assert clipped[0] == 1.0 and clipped[1] == pytest.approx(min(1.0, 3.0 * math.exp(-2 / 9)))


def test_keep_mask_comparisons_follow_bertin():
    b = BERTIN_BOUNDARIES
    # random keeps U <= factor (equality kept); the others keep U < p (equality dropped).
    assert keep_mask([1.0], [0.5], None, SamplingParams("random", factor=0.5)).tolist() == [True]
    assert keep_mask([1.0], [np.nextafter(0.5, 1)], None, SamplingParams("random", factor=0.5)).tolist() == [False]
    p = float(keep_probability(Q1, b, SamplingParams("stepwise")))
    assert keep_mask([Q1, Q1], [p, np.nextafter(p, 0)], b, SamplingParams("stepwise")).tolist() == [False, True]
    assert keep_mask([Q2], [0.78], b, SamplingParams("gaussian")).tolist() == [False]
    with pytest.raises(ValueError, match="uniforms"):
        keep_mask([1.0, 2.0], [0.1], b, SamplingParams("gaussian"))


def test_random_ignores_perplexity_and_boundaries():
    got = keep_probability(np.array([1.0, 1e3, 1e9]), None, SamplingParams("random", factor=0.3))
    assert got.tolist() == [0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "gausian"}, "unknown sampling method"),
        ({"method": "stepwise", "factor": 0}, "factor must be finite and > 0"),
        ({"method": "gaussian", "factor": -1.0}, "factor must be finite and > 0"),
        ({"method": "gaussian", "factor": float("nan")}, "factor must be finite"),
        ({"method": "gaussian", "width": 0.0}, "width must be finite and > 0"),
        ({"method": "gaussian", "width": float("inf")}, "width must be finite"),
        ({"method": "stepwise", "width": 2.0}, "width only applies to the gaussian"),
        ({"method": "random", "factor": 1.5}, r"factor must be in \(0, 1\]"),
        ({"method": "random", "factor": "0.5"}, "factor must be a number"),
    ],
)
def test_parameter_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_perplexity_validation_and_missing_boundaries():
    with pytest.raises(ValueError, match="NaN"):
        keep_probability(np.array([1.0, np.nan]), BERTIN_BOUNDARIES, SamplingParams("gaussian"))
    with pytest.raises(ValueError, match="> 0"):
        keep_probability(np.array([0.0]), BERTIN_BOUNDARIES, SamplingParams("stepwise"))
    with pytest.raises(ValueError, match="needs boundaries"):
        keep_probability(np.array([5.0]), None, SamplingParams("stepwise"))
    # +inf is a valid (huge) perplexity: last band, gaussian probability 0.
    assert keep_probability(np.inf, BERTIN_BOUNDARIES, SamplingParams("gaussian")) == 0.0
    assert band_of(np.inf, BERTIN_BOUNDARIES) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        ((3.0, 2.0, 4.0), "strictly increasing"),
        ((1.0, 1.0, 2.0), "strictly increasing"),
        ((0.0, 1.0, 2.0), "> 0"),
        ((1.0, 2.0, float("inf")), "finite"),
        (("1", 2.0, 3.0), "must be a number"),
    ],
)
def test_boundaries_validation(args, message):
    with pytest.raises(ValueError, match=message):
        Boundaries(*args)


def test_boundaries_parse():
    assert Boundaries.parse("bertin") is BERTIN_BOUNDARIES
    assert Boundaries.parse(" BERTIN ") == BERTIN_BOUNDARIES
    assert BERTIN_BOUNDARIES.as_tuple() == (536394.99320948, 662247.50212365, 919250.87225178)
    assert Boundaries.parse("10, 20.5,3e1") == Boundaries(10.0, 20.5, 30.0)
    assert Boundaries.from_dict(Boundaries(1, 2, 3).to_dict()) == Boundaries(1.0, 2.0, 3.0)
    for bad, message in [("1,2", "three comma-separated"), ("a,b,c", "must be numbers"), ("3,2,1", "strictly increasing"), ("nan,1,2", "finite")]:
        with pytest.raises(ValueError, match=message):
            Boundaries.parse(bad)


def _bertin_stepwise(perplexity, factor, boundaries):
    """BERTIN's `_should_keep_doc_step` probability verbatim (mc4.py), one float at a time;
    PP == Q2 had no branch there (UnboundLocalError): it is in the (Q1, Q2] band here."""
    if perplexity <= boundaries[0]:
        quartile_range = boundaries[0]
    elif boundaries[0] < perplexity < boundaries[1]:
        quartile_range = boundaries[1] - boundaries[0]
    elif boundaries[1] < perplexity < boundaries[2]:
        quartile_range = boundaries[2] - boundaries[1]
    elif perplexity >= boundaries[2]:
        quartile_range = 10 * boundaries[2]
    else:
        raise UnboundLocalError("quartile_range")  # what BERTIN's code raised at PP == Q2
    probability = factor / quartile_range
    return probability


@pytest.mark.parametrize("boundaries", [BERTIN_BOUNDARIES, Boundaries(212.3, 377.9, 731.04)],
                         ids=["bertin", "ccnet-scale"])
def test_stepwise_is_bit_identical_to_bertins_expression_on_a_dense_grid(boundaries):
    q = list(boundaries.as_tuple())
    edges = np.array(q)
    grid = np.concatenate([
        np.geomspace(q[0] / 50, q[2] * 50, 4001),
        edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    grid = grid[grid != q[1]]  # BERTIN crashed there; checked below
    for factor in [1.5e5, 5e4, 2e6, 1.0, 0.3, 123.456, q[0] / 3]:
        got = keep_probability(grid, boundaries, SamplingParams("stepwise", factor=factor))
        want = np.array([min(1.0, _bertin_stepwise(float(x), factor, q)) for x in grid])
        assert got.tobytes() == want.tobytes(), factor  # bit for bit, not approximately
    at_q2 = keep_probability(np.array([q[1]]), boundaries, SamplingParams("stepwise", factor=7.0))
    assert at_q2.tobytes() == np.array([min(1.0, 7.0 / (q[1] - q[0]))]).tobytes()


def test_stepwise_factor_over_range_differs_from_factor_times_reciprocal():
    """The grid above would not notice a regression to factor * (1/R) if no pair differed."""
    q1, q2, q3 = BERTIN_BOUNDARIES.as_tuple()
    ranges = [q1, q2 - q1, q3 - q2, 10 * q3]
    factors = np.geomspace(1e3, 1e6, 2000)
    differ = sum(f / r != f * (1 / r) for f in factors for r in ranges)
    assert differ > 100
