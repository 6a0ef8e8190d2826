"""A fine, fixed log10-scale perplexity histogram: mergeable, with reproducible quantiles.

Bins: ``bins_per_decade`` equal bins per decade between 10**min_exponent and 10**max_exponent
(defaults: 1000 per decade over [1, 1e10), i.e. 10,000 bins), plus an underflow bin
(PP < 10**min_exponent) and an overflow bin (PP >= 10**max_exponent). Bin i covers
``[edges[i], edges[i+1])``; a value's bin is found by comparing it with ``edges`` themselves, so
assignment and edges always agree.

Because the binning is fixed, merging is adding counts: the merged histogram (and every
quantile, boundary and factor computed from it) is identical whatever the number of workers,
the bundling or the order of the documents.

Quantile resolution: a quantile is estimated inside the bin that holds the order statistic
x[floor(p (N-1))] (numpy's default "linear" quantile interpolates between that one and the
next), by geometric interpolation within the bin, with its c documents taken to sit at
fractions (i + 0.5)/c of the bin's log-width. So in the regular bins the estimate is within a
relative error of ``resolution = 10**(1/bins_per_decade) - 1`` (0.23 % by default) of that
order statistic. The under/overflow bins span [min seen, 10**min_exponent) and
[10**max_exponent, max seen]; quantiles that fall there have no such guarantee. Exact
minimum and maximum are tracked (and merged), so quantiles 0 and 1 are exact.

Non-finite or non-positive perplexities raise ValueError: the pipeline rejects those
documents before they reach a histogram.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from sampling import libm
from sampling.boundaries import Boundaries

DEFAULT_BINS_PER_DECADE = 1000
DEFAULT_MIN_EXPONENT = 0
DEFAULT_MAX_EXPONENT = 10
_SMALL_BATCH = 256


@functools.lru_cache(maxsize=16)
def _edges(bins_per_decade: int, min_exponent: int, max_exponent: int) -> np.ndarray:
    """The bin edges of one binning, computed once per process: libm's 10,001 exact pow10
    calls take ~5 ms, and a job builds a histogram per shard, bundle and merge. Read-only,
    as every histogram of that binning shares the array."""
    n = bins_per_decade * (max_exponent - min_exponent)
    edges = libm.pow10(min_exponent + np.arange(n + 1, dtype=np.float64) / bins_per_decade)
    edges.flags.writeable = False
    return edges


class LogHistogram:
    """Counts (and optionally token sums) of perplexities on fixed log10 bins."""

    def __init__(
        self,
        bins_per_decade: int = DEFAULT_BINS_PER_DECADE,
        min_exponent: int = DEFAULT_MIN_EXPONENT,
        max_exponent: int = DEFAULT_MAX_EXPONENT,
    ) -> None:
        for name, value in (("bins_per_decade", bins_per_decade), ("min_exponent", min_exponent), ("max_exponent", max_exponent)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if bins_per_decade < 1:
            raise ValueError(f"bins_per_decade must be >= 1, got {bins_per_decade}")
        if not min_exponent < max_exponent:
            raise ValueError(f"min_exponent must be < max_exponent, got {min_exponent} and {max_exponent}")
        self.bins_per_decade = int(bins_per_decade)
        self.min_exponent = int(min_exponent)
        self.max_exponent = int(max_exponent)
        n = self.n_bins
        self.edges = _edges(self.bins_per_decade, self.min_exponent, self.max_exponent)
        # Index 0 is the underflow bin, 1..n the regular bins, n+1 the overflow bin.
        self._counts = np.zeros(n + 2, dtype=np.int64)
        self._tokens = np.zeros(n + 2, dtype=np.int64)
        self.min_value = math.inf
        self.max_value = -math.inf

    # -- shape -----------------------------------------------------------------------------
    @property
    def n_bins(self) -> int:
        """Number of regular bins (without under/overflow)."""
        return self.bins_per_decade * (self.max_exponent - self.min_exponent)

    @property
    def resolution(self) -> float:
        """Relative width of a bin, the bound on the quantiles' relative error."""
        return 10.0 ** (1.0 / self.bins_per_decade) - 1.0

    @property
    def counts(self) -> np.ndarray:
        """Documents per regular bin (length n_bins, aligned with ``edges``)."""
        return self._counts[1:-1]

    @property
    def tokens(self) -> np.ndarray:
        """Token sums per regular bin (zero where add() was not given tokens)."""
        return self._tokens[1:-1]

    @property
    def underflow(self) -> int:
        return int(self._counts[0])

    @property
    def overflow(self) -> int:
        return int(self._counts[-1])

    @property
    def all_counts(self) -> np.ndarray:
        """Counts including under/overflow: [underflow, *counts, overflow]."""
        return self._counts

    @property
    def all_tokens(self) -> np.ndarray:
        return self._tokens

    @property
    def total(self) -> int:
        return int(self._counts.sum())

    @property
    def total_tokens(self) -> int:
        return int(self._tokens.sum())

    def same_binning(self, other: "LogHistogram") -> bool:
        return (self.bins_per_decade, self.min_exponent, self.max_exponent) == (
            other.bins_per_decade,
            other.min_exponent,
            other.max_exponent,
        )

    def bin_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of every bin including under/overflow, narrowed to the seen [min, max].

        Empty histograms give the nominal bounds with 0 and +inf for the outer bins.
        """
        lo = np.concatenate(([0.0], self.edges))
        hi = np.concatenate((self.edges, [math.inf]))
        if self.total:
            lo = np.clip(lo, self.min_value, self.max_value)
            hi = np.clip(hi, self.min_value, self.max_value)
        return lo, hi

    # -- filling -----------------------------------------------------------------------------
    def bin_index(self, perplexity) -> np.ndarray:
        """Index into ``all_counts`` for each perplexity (0: underflow, n_bins+1: overflow)."""
        pp = _validated(perplexity)
        return np.searchsorted(self.edges, pp, side="right").astype(np.int64)

    def add(self, perplexity, tokens=None) -> "LogHistogram":
        """Count perplexities (scalar or array); ``tokens`` (same shape, ints >= 0) adds token sums."""
        pp = _validated(perplexity).ravel()
        tok = None
        if tokens is not None:
            tok = np.asarray(tokens).ravel()
            if tok.shape != pp.shape:
                raise ValueError(f"{tok.size} token counts for {pp.size} perplexities")
            if tok.size and (not np.issubdtype(tok.dtype, np.integer) or tok.min() < 0):
                raise ValueError("token counts must be non-negative integers")
            tok = tok.astype(np.int64)
        index = np.searchsorted(self.edges, pp, side="right")
        if pp.size < _SMALL_BATCH:
            # A few documents at a time (Beam's add_input): scatter-add, no full-size bincount.
            np.add.at(self._counts, index, 1)
            if tok is not None:
                np.add.at(self._tokens, index, tok)
        else:
            size = self.n_bins + 2
            self._counts += np.bincount(index, minlength=size)
            if tok is not None:
                # Integer scatter-add: float bincount weights would round sums above 2**53.
                order = np.argsort(index, kind="stable")
                bins, starts = np.unique(index[order], return_index=True)
                self._tokens[bins] += np.add.reduceat(tok[order], starts)
        if pp.size:
            self.min_value = min(self.min_value, float(pp.min()))
            self.max_value = max(self.max_value, float(pp.max()))
        return self

    def merge(self, other: "LogHistogram") -> "LogHistogram":
        """Add another histogram's counts into this one (in place); returns self."""
        if not isinstance(other, LogHistogram):
            raise TypeError(f"can only merge a LogHistogram, got {type(other).__name__}")
        if not self.same_binning(other):
            raise ValueError(
                "cannot merge histograms with different binning: "
                f"{(self.bins_per_decade, self.min_exponent, self.max_exponent)} vs "
                f"{(other.bins_per_decade, other.min_exponent, other.max_exponent)}"
            )
        self._counts += other._counts
        self._tokens += other._tokens
        self.min_value = min(self.min_value, other.min_value)
        self.max_value = max(self.max_value, other.max_value)
        return self

    def copy(self) -> "LogHistogram":
        return LogHistogram(self.bins_per_decade, self.min_exponent, self.max_exponent).merge(self)

    def coarsen(self, bins_per_decade: int) -> "LogHistogram":
        """The same counts on fewer bins per decade (must divide the current number), e.g. for plots."""
        if bins_per_decade < 1 or self.bins_per_decade % bins_per_decade:
            raise ValueError(f"{bins_per_decade} bins per decade does not divide {self.bins_per_decade}")
        group = self.bins_per_decade // bins_per_decade
        coarse = LogHistogram(bins_per_decade, self.min_exponent, self.max_exponent)
        for mine, theirs in ((self._counts, coarse._counts), (self._tokens, coarse._tokens)):
            theirs[0], theirs[-1] = mine[0], mine[-1]
            theirs[1:-1] = mine[1:-1].reshape(-1, group).sum(axis=1)
        coarse.min_value, coarse.max_value = self.min_value, self.max_value
        return coarse

    # Pickle sparsely: Beam ships combiner accumulators between workers, and most of the
    # 10,002 bins are usually empty.
    def __getstate__(self) -> dict:
        return self.to_dict()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(LogHistogram.from_dict(state).__dict__)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, LogHistogram)
            and self.same_binning(other)
            and np.array_equal(self._counts, other._counts)
            and np.array_equal(self._tokens, other._tokens)
            and self.min_value == other.min_value
            and self.max_value == other.max_value
        )

    def __repr__(self) -> str:
        return (
            f"LogHistogram(bins_per_decade={self.bins_per_decade}, min_exponent={self.min_exponent}, "
            f"max_exponent={self.max_exponent}, total={self.total})"
        )

    # -- quantiles ---------------------------------------------------------------------------
    def quantiles(self, probabilities) -> np.ndarray:
        """Quantile estimates (see the module docstring for the method and its resolution)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
            raise ValueError(f"quantile probabilities must be in [0, 1], got {probabilities!r}")
        total = self.total
        if total == 0:
            raise ValueError("cannot compute quantiles of an empty histogram")
        cumulative = np.concatenate(([0], np.cumsum(self._counts)))
        lo, hi = self.bin_bounds()
        flat = probs.ravel()
        position = flat * (total - 1)
        order_stat = np.floor(position).astype(np.int64)
        # The bin holding the order statistic: cumulative[b] <= j < cumulative[b + 1].
        b = np.searchsorted(cumulative, order_stat, side="right") - 1
        count = self._counts[b]
        fraction = np.clip((position - cumulative[b] + 0.5) / count, 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            estimate = np.where(hi[b] > lo[b], lo[b] * libm.power(hi[b] / lo[b], fraction), lo[b])
        estimate = np.where(flat == 0.0, self.min_value, estimate)
        estimate = np.where(flat == 1.0, self.max_value, estimate)
        return estimate.reshape(probs.shape)

    def boundaries(self) -> Boundaries:
        """Quartiles (0.25, 0.5, 0.75) as Boundaries."""
        q1, q2, q3 = self.quantiles([0.25, 0.5, 0.75])
        try:
            return Boundaries(q1, q2, q3)
        except ValueError as error:
            raise ValueError(
                f"the histogram's quartiles ({q1!r}, {q2!r}, {q3!r}) are not strictly increasing "
                f"({self.total} documents): too few distinct perplexities to derive boundaries; "
                "give them with --boundaries"
            ) from error

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able, exact and compact: only the non-empty bins are listed.

        ``bins`` indexes ``all_counts`` (0 is the underflow bin, n_bins + 1 the overflow bin);
        ``counts`` (and ``tokens``, when token counts were added) align with it.
        """
        nonzero = np.flatnonzero(self._counts | self._tokens)
        data = {
            "bins_per_decade": self.bins_per_decade,
            "min_exponent": self.min_exponent,
            "max_exponent": self.max_exponent,
            "resolution": self.resolution,
            "total": self.total,
            "min": self.min_value if self.total else None,
            "max": self.max_value if self.total else None,
            "bins": nonzero.tolist(),
            "counts": self._counts[nonzero].tolist(),
        }
        if self._tokens.any():
            data["tokens"] = self._tokens[nonzero].tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LogHistogram":
        histogram = cls(data["bins_per_decade"], data["min_exponent"], data["max_exponent"])
        bins = np.asarray(data.get("bins", []), dtype=np.int64)
        counts = np.asarray(data.get("counts", []), dtype=np.int64)
        size = histogram._counts.size
        if bins.shape != counts.shape or (bins < 0).any() or (bins >= size).any() or np.unique(bins).size != bins.size:
            raise ValueError("histogram dict: bins must be distinct indices in range, aligned with counts")
        if (counts < 0).any():
            raise ValueError("histogram dict: counts must be >= 0")
        histogram._counts[bins] = counts
        if "tokens" in data:
            tokens = np.asarray(data["tokens"], dtype=np.int64)
            if tokens.shape != bins.shape or (tokens < 0).any():
                raise ValueError("histogram dict: tokens must be >= 0 and align with bins")
            histogram._tokens[bins] = tokens
        if histogram.total:
            if data.get("min") is None or data.get("max") is None:
                raise ValueError("histogram dict: a non-empty histogram needs min and max")
            histogram.min_value = float(data["min"])
            histogram.max_value = float(data["max"])
        if "total" in data and int(data["total"]) != histogram.total:
            raise ValueError(f"histogram dict: total {data['total']} != sum of counts {histogram.total}")
        return histogram


def _validated(perplexity) -> np.ndarray:
    pp = np.asarray(perplexity, dtype=np.float64)
    if not np.isfinite(pp).all():
        raise ValueError("perplexities must be finite (NaN or inf found)")
    if (pp <= 0).any():
        raise ValueError(f"perplexities must be > 0, got minimum {pp.min()!r}")
    return pp
