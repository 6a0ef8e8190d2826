"""sampling.guidance: per-band keep probabilities, warnings for parameters that keep everything
or nothing in a band, BERTIN's boundaries on another perplexity scale, and the stepwise default
that only makes sense on BERTIN's scale."""
import math

import numpy as np
import pytest

from sampling import BERTIN_BOUNDARIES, Boundaries, LogHistogram, SamplingParams, keep_probability
from sampling.guidance import (band_keep_probabilities, band_shares, bertin_scale_problem,
                               keep_warnings, representative_perplexities,
                               stepwise_default_problem, summary_warnings)

# The bundled model's quartiles on the bundled sample (ppsample run's summary).
BUNDLED = Boundaries(332.086, 429.207, 584.79)


def test_stepwise_band_probability_is_factor_over_band_width():
    b = Boundaries(100.0, 200.0, 400.0)
    got = band_keep_probabilities(b, SamplingParams("stepwise", factor=20.0))
    assert got == pytest.approx([20 / 100, 20 / 100, 20 / 200, 20 / 4000])


def test_gaussian_bands_use_their_geometric_centres():
    b = Boundaries(100.0, 200.0, 400.0)
    reps = representative_perplexities(b)
    assert reps == pytest.approx([100 * math.sqrt(0.5), math.sqrt(2e4), math.sqrt(8e4), 400 * math.sqrt(2)])
    params = SamplingParams("gaussian", factor=0.9, width=0.5)
    assert band_keep_probabilities(b, params) == pytest.approx(keep_probability(reps, b, params).tolist())


def test_random_keeps_its_factor_in_every_band_without_boundaries():
    assert band_keep_probabilities(None, SamplingParams("random", factor=0.3)) == [0.3] * 4


def test_bertin_stepwise_default_keeps_everything_on_another_scale():
    lines = keep_warnings(BUNDLED, SamplingParams("stepwise"))
    assert len(lines) == 1
    assert "keeps every document" in lines[0] and "--target-docs" in lines[0]
    assert "<=Q1 1, (Q1,Q2] 1, (Q2,Q3) 1, >=Q3 1" in lines[0]


def test_bertin_stepwise_default_on_its_own_scale_only_names_the_saturated_band():
    lines = keep_warnings(BERTIN_BOUNDARIES, SamplingParams("stepwise"))
    assert len(lines) == 1 and "of band(s) (Q1,Q2]" in lines[0]


def test_gaussian_default_needs_no_warning_but_a_narrow_one_drops_the_tails():
    assert keep_warnings(BUNDLED, SamplingParams("gaussian")) == []
    lines = keep_warnings(BUNDLED, SamplingParams("gaussian", factor=0.8, width=0.01))
    assert len(lines) == 1 and "no document of band(s) <=Q1, >=Q3" in lines[0]


def test_tiny_factor_keeps_nothing_anywhere():
    lines = keep_warnings(BUNDLED, SamplingParams("stepwise", factor=1e-6))
    assert len(lines) == 1 and "keeps (almost) no document (" in lines[0]


def _histogram(values):
    h = LogHistogram()
    h.add(np.asarray(values, dtype=np.float64))
    return h


def test_bertin_boundaries_on_the_bundled_scale_put_everything_in_one_band():
    h = _histogram(np.exp(np.random.default_rng(0).normal(6.0, 0.4, 1000)))
    message = bertin_scale_problem(h, BERTIN_BOUNDARIES)
    assert message is not None
    assert "100.0% of the 1,000 scored documents in band <=Q1" in message
    assert "--force-boundaries" in message


def test_bertin_boundaries_on_bertin_scale_are_fine():
    rng = np.random.default_rng(1)
    h = _histogram(rng.uniform(4e5, 1.2e6, 2000))
    assert bertin_scale_problem(h, BERTIN_BOUNDARIES) is None
    assert sum(band_shares(h, BERTIN_BOUNDARIES)) == pytest.approx(1.0)


def test_bertin_scale_threshold_is_ninety_percent():
    q = BERTIN_BOUNDARIES
    values = [q.q1 / 2] * 89 + [q.q2 * 1.1] * 11
    assert bertin_scale_problem(_histogram(values), q) is None
    values = [q.q1 / 2] * 91 + [q.q2 * 1.1] * 9
    assert "91.0%" in bertin_scale_problem(_histogram(values), q)
    assert bertin_scale_problem(LogHistogram(), q) is None  # nothing scored: nothing to say


@pytest.mark.parametrize("method,factor,target,boundaries,refused", [
    ("stepwise", None, None, None, True),
    ("stepwise", None, None, "1,2,3", True),
    ("stepwise", 300.0, None, None, False),
    ("stepwise", None, 100, None, False),
    ("stepwise", None, None, "bertin", False),
    ("gaussian", None, None, None, False),
])
def test_stepwise_has_no_default_off_bertin_scale(method, factor, target, boundaries, refused):
    message = stepwise_default_problem(method, factor, target, boundaries)
    assert (message is not None) == refused
    if refused:
        assert "--target-docs" in message and "--factor" in message


def _stats(method, parameters, boundaries, band_scored):
    return {"method": method, "parameters": parameters,
            "boundaries": {**boundaries.to_dict(), "source": "bertin"},
            "total": {"bands": [{"band": i, "scored": n} for i, n in enumerate(band_scored)]}}


def test_summary_warnings_read_stats_json_fields():
    ok = _stats("gaussian", {"factor": 0.78, "width": 4.5}, BUNDLED, [10, 10, 10, 10])
    assert summary_warnings(ok) == []
    saturated = _stats("stepwise", {"factor": 1.5e5}, BUNDLED, [10, 10, 10, 10])
    assert len(summary_warnings(saturated)) == 1
    one_band = _stats("gaussian", {"factor": 0.78, "width": 4.5}, BERTIN_BOUNDARIES, [458, 0, 0, 0])
    (line,) = summary_warnings(one_band)
    assert "100.0% of the 458 scored documents are in band <=Q1 of the bertin boundaries" in line
    assert summary_warnings({"method": "gaussian", "boundaries": None, "parameters": {}}) == []
    assert summary_warnings({}) == []
