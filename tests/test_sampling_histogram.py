"""LogHistogram: quantiles vs numpy within the documented resolution, merging, serialisation."""

import json

import numpy as np
import pytest

from sampling import BERTIN_BOUNDARIES, Boundaries, LogHistogram

DISTRIBUTIONS = {
    # ccnet-like scale (perplexities in the hundreds)
    "lognormal-ccnet": lambda rng, n: np.exp(rng.normal(np.log(300.0), 0.6, n)),
    # BERTIN's scale, centred on its published median
    "lognormal-bertin": lambda rng, n: np.exp(rng.normal(np.log(BERTIN_BOUNDARIES.q2), 0.4, n)),
    # heavy right tail
    "pareto": lambda rng, n: 10.0 * (1.0 + rng.pareto(1.5, n)),
    # many exact ties
    "rounded": lambda rng, n: np.round(np.exp(rng.normal(5.0, 0.5, n))),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_boundaries_match_numpy_within_resolution(name):
    rng = np.random.default_rng(11)
    pp = DISTRIBUTIONS[name](rng, 200_000)
    histogram = LogHistogram().add(pp)
    assert histogram.resolution == pytest.approx(10 ** (1 / 1000) - 1)
    exact = np.quantile(pp, [0.25, 0.5, 0.75])
    boundaries = histogram.boundaries()
    relative_error = np.abs(np.array(boundaries.as_tuple()) - exact) / exact
    assert (relative_error <= histogram.resolution).all(), relative_error


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 50_000])
@pytest.mark.parametrize("bins_per_decade", [10, 1000])
def test_quantile_is_in_the_bin_of_the_order_statistic(n, bins_per_decade):
    """The documented guarantee, for any size: within resolution of x[floor(p (N-1))]."""
    rng = np.random.default_rng(n)
    pp = np.exp(rng.normal(6.0, 2.0, n))
    histogram = LogHistogram(bins_per_decade=bins_per_decade).add(pp)
    probabilities = np.linspace(0, 1, 41)
    estimate = histogram.quantiles(probabilities)
    order_statistic = np.quantile(pp, probabilities, method="lower")
    in_range = (order_statistic >= 1.0) & (order_statistic < 1e10)
    relative_error = np.abs(estimate - order_statistic) / order_statistic
    assert (relative_error[in_range] <= histogram.resolution * (1 + 1e-12)).all()
    assert estimate[0] == pp.min() and estimate[-1] == pp.max()
    assert (np.diff(estimate) >= 0).all()


def test_merge_is_independent_of_split_and_order():
    rng = np.random.default_rng(5)
    pp = np.exp(rng.normal(6.0, 1.0, 30_000))
    tokens = rng.integers(1, 500, pp.size)
    whole = LogHistogram().add(pp, tokens=tokens)
    for split_seed in range(3):
        split_rng = np.random.default_rng(split_seed)
        order = split_rng.permutation(pp.size)
        cuts = np.sort(split_rng.choice(pp.size, size=split_rng.integers(1, 8), replace=False))
        parts = [LogHistogram().add(pp[idx], tokens=tokens[idx]) for idx in np.split(order, cuts)]
        merged = LogHistogram()
        for part in reversed(parts):
            merged.merge(part)
        assert merged == whole
        assert merged.total == pp.size and merged.total_tokens == int(tokens.sum())
        assert merged.quantiles([0.25, 0.5, 0.75]).tolist() == whole.quantiles([0.25, 0.5, 0.75]).tolist()
    assert LogHistogram().merge(LogHistogram()).total == 0


def test_json_round_trip_is_exact_and_compact():
    rng = np.random.default_rng(9)
    pp = np.concatenate([np.exp(rng.normal(6.0, 1.0, 10_000)), [0.5, 2e11]])
    histogram = LogHistogram().add(pp, tokens=rng.integers(0, 100, pp.size))
    data = json.loads(json.dumps(histogram.to_dict()))
    restored = LogHistogram.from_dict(data)
    assert restored == histogram
    assert restored.boundaries() == histogram.boundaries()
    assert data["total"] == pp.size and data["resolution"] == histogram.resolution
    # Only the non-empty bins are stored, not all 10,002; the outliers sit in the outer bins.
    assert len(data["counts"]) == np.count_nonzero(histogram.all_counts) < 2000
    assert data["bins"][0] == 0 and data["bins"][-1] == histogram.n_bins + 1
    empty = LogHistogram.from_dict(json.loads(json.dumps(LogHistogram(10).to_dict())))
    assert empty == LogHistogram(10) and empty.total == 0


def test_from_dict_rejects_inconsistent_data():
    data = LogHistogram(10).add([5.0, 50.0]).to_dict()
    with pytest.raises(ValueError, match="total"):
        LogHistogram.from_dict(dict(data, total=3))
    with pytest.raises(ValueError, match="indices in range"):
        LogHistogram.from_dict(dict(data, bins=[0, 10_000]))
    with pytest.raises(ValueError, match="indices in range"):
        LogHistogram.from_dict(dict(data, bins=[5, 5]))
    with pytest.raises(ValueError, match="min and max"):
        LogHistogram.from_dict(dict(data, min=None))


def test_bins_agree_with_edges_and_outliers_are_counted():
    histogram = LogHistogram(bins_per_decade=10, min_exponent=0, max_exponent=3)
    edges = histogram.edges
    assert edges.size == histogram.n_bins + 1 == 31
    # A value exactly on an edge belongs to the bin that starts there.
    values = np.concatenate([edges[:-1], [0.5, 1e3, 5e4]])
    histogram.add(values)
    assert histogram.counts.tolist() == [1] * 30
    assert (histogram.underflow, histogram.overflow) == (1, 2)
    assert histogram.total == 33
    assert histogram.quantiles([0.0, 1.0]).tolist() == [0.5, 5e4]
    index = histogram.bin_index(np.nextafter(edges[5], 0))
    assert index == 5  # all_counts index: regular bin 4, just below edge 5


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [-np.inf], [0.0], [-3.0]])
def test_rejects_non_finite_and_non_positive(bad):
    histogram = LogHistogram()
    with pytest.raises(ValueError, match="finite|> 0"):
        histogram.add(np.array([10.0] + bad))
    assert histogram.total == 0  # nothing half-added


def test_validation_messages():
    with pytest.raises(ValueError, match="empty histogram"):
        LogHistogram().quantiles([0.5])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        LogHistogram().add([3.0]).quantiles([1.5])
    with pytest.raises(ValueError, match="too few distinct"):
        LogHistogram().add(np.full(100, 42.0)).boundaries()
    with pytest.raises(ValueError, match="different binning"):
        LogHistogram(100).merge(LogHistogram(1000))
    with pytest.raises(ValueError, match="token counts"):
        LogHistogram().add([3.0, 4.0], tokens=[1])
    with pytest.raises(ValueError, match="token counts"):
        LogHistogram().add([3.0], tokens=[-1])
    with pytest.raises(ValueError, match="min_exponent must be < max_exponent"):
        LogHistogram(10, 3, 3)


def test_coarsen_keeps_totals():
    rng = np.random.default_rng(2)
    pp = np.exp(rng.normal(6.0, 1.0, 5000))
    fine = LogHistogram().add(pp)
    coarse = fine.coarsen(10)
    assert coarse.n_bins == 100 and coarse.total == fine.total
    assert coarse == LogHistogram(10).add(pp)
    with pytest.raises(ValueError, match="does not divide"):
        fine.coarsen(7)


def test_boundaries_result_type():
    pp = np.exp(np.random.default_rng(1).normal(6.0, 1.0, 1000))
    assert isinstance(LogHistogram().add(pp).boundaries(), Boundaries)


def test_pickles_exactly_and_sparsely():
    """Beam ships accumulators pickled: exact, and small when most bins are empty."""
    import pickle

    pp = np.exp(np.random.default_rng(4).normal(6.0, 0.5, 20_000))
    histogram = LogHistogram().add(pp, tokens=np.arange(pp.size))
    restored = pickle.loads(pickle.dumps(histogram))
    assert restored == histogram
    assert restored.quantiles([0.1, 0.9]).tolist() == histogram.quantiles([0.1, 0.9]).tolist()
    assert len(pickle.dumps(histogram)) < histogram.all_counts.nbytes
    assert pickle.loads(pickle.dumps(LogHistogram())) == LogHistogram()


def test_small_and_large_batches_count_the_same():
    rng = np.random.default_rng(8)
    pp = np.exp(rng.normal(6.0, 1.0, 3000))
    tokens = rng.integers(0, 10**6, pp.size)
    one_by_one = LogHistogram()
    for value, n in zip(pp[:500], tokens[:500]):
        one_by_one.add([value], tokens=np.array([n]))
    one_by_one.add(pp[500:], tokens=tokens[500:])
    assert one_by_one == LogHistogram().add(pp, tokens=tokens)
    assert one_by_one.total_tokens == int(tokens.sum())
    # Token sums stay exact integers beyond float precision.
    big = LogHistogram().add(np.full(1000, 50.0), tokens=np.full(1000, 2**53 + 1, dtype=np.int64))
    assert big.total_tokens == 1000 * (2**53 + 1)


def test_shared_edges_are_exact_and_cannot_be_altered():
    """Histograms of one binning share one edges array (computed once per process): it holds
    10 ** (i / bins_per_decade) as Python's float power gives it, and writing to it through one
    histogram raises instead of moving every other histogram's bins."""
    a, b = LogHistogram(10, 0, 3), LogHistogram(10, 0, 3)
    assert [float(e) for e in a.edges] == [10.0 ** (i / 10) for i in range(31)]
    assert b.edges is a.edges
    with pytest.raises(ValueError):
        a.edges[5] = 0.0
    assert LogHistogram(20, 0, 3).edges.size == 61  # another binning, its own edges
