"""Token budgets: solve the factor for N kept tokens, and estimate token counts that are too
costly to count for every document.

The exact path needs no code of its own: fill the LogHistogram with each document's tokens in
the budget's unit (``add(pp, tokens=...)``) and ``solve_factor(..., target_tokens=N)`` returns
the factor whose expected kept tokens equal N (see sampling.target_size).

When the unit is expensive to count (GPT-2 BPE for a GPT-J finetune) but a cheap count is at
hand for every document (KenLM's pieces from scoring), a ``TokenCalibration`` fits the ratio
expensive / cheap on a deterministic subsample of the documents, per tenth of a perplexity decade (the
ratio differs between clean prose and boilerplate), and ``estimated_histogram`` rescales the
cheap histogram's token sums with it. The subsample is ``calibration_mask(keys, rate)``: a pure
function of the document key (not of the sampling seed), so the same documents are counted on
any runner and for any seed, and merging calibrations is adding sums, like histograms.

The estimate's error is measured, not assumed: every calibration document falls in one of two
halves (another bit of its hash); ratios fitted on the first half estimate the second half's
expensive total, and ``measured_error`` is that estimate's relative error.
"""

from __future__ import annotations

import numpy as np

from sampling.histogram import LogHistogram
from sampling.uniforms import document_uniforms

# Salts of the calibration subsample and of its halves: fixed, so the subsample does not move
# with the sampling seed (and is independent of the keep uniforms for every seed but these).
CALIBRATION_SALT = 0x70_70_73_61_6D_70_6C_65  # "ppsample"
HALF_SALT = CALIBRATION_SALT + 1
DEFAULT_CALIBRATION_RATE = 0.02
# Ten calibration bins per decade: the ratio drifts with perplexity (a decade spans clean prose
# to boilerplate), and a real corpus spans ~3 decades, so ~30 bins each hold hundreds of
# subsample documents already at 400k documents and a 2 % rate.
DEFAULT_BINS_PER_DECADE = 10


def calibration_mask(keys, rate: float = DEFAULT_CALIBRATION_RATE) -> np.ndarray:
    """True for the documents (by key, see sampling.document_key) in the calibration subsample."""
    if not 0 < rate <= 1:
        raise ValueError(f"calibration rate must be in (0, 1], got {rate!r}")
    keys = list(keys)
    return document_uniforms(CALIBRATION_SALT, keys) < rate


def check_half(keys) -> np.ndarray:
    """True for the calibration documents whose count checks the estimate (not used to fit it)."""
    return document_uniforms(HALF_SALT, list(keys)) < 0.5


class TokenCalibration:
    """Sums of cheap and expensive token counts of the calibration documents, per tenth of a
    perplexity decade and per half (fit, check). Mergeable; JSON-able."""

    def __init__(self, bins_per_decade: int = DEFAULT_BINS_PER_DECADE, min_exponent: int = 0, max_exponent: int = 10):
        self._binning = LogHistogram(bins_per_decade, min_exponent, max_exponent)
        size = self._binning.n_bins + 2
        # [half, bin]: half 0 fits, half 1 checks.
        self.cheap = np.zeros((2, size), dtype=np.int64)
        self.counted = np.zeros((2, size), dtype=np.int64)
        self.documents = np.zeros((2, size), dtype=np.int64)

    @property
    def total_documents(self) -> int:
        return int(self.documents.sum())

    def add(self, perplexity, cheap, counted, in_check_half) -> "TokenCalibration":
        """Adds calibration documents: their perplexities, cheap and expensive token counts
        (integers >= 0) and whether each is in the check half (see check_half)."""
        index = self._binning.bin_index(perplexity).ravel()
        cheap = _counts("cheap", cheap, index.size)
        counted = _counts("counted", counted, index.size)
        half = np.asarray(in_check_half, dtype=bool).ravel().astype(np.int64)
        if half.size != index.size:
            raise ValueError(f"{half.size} half flags for {index.size} documents")
        np.add.at(self.cheap, (half, index), cheap)
        np.add.at(self.counted, (half, index), counted)
        np.add.at(self.documents, (half, index), 1)
        return self

    def merge(self, other: "TokenCalibration") -> "TokenCalibration":
        if not self._binning.same_binning(other._binning):
            raise ValueError("cannot merge token calibrations with different binning")
        self.cheap += other.cheap
        self.counted += other.counted
        self.documents += other.documents
        return self

    def _ratios(self, halves) -> np.ndarray:
        """Expensive / cheap per bin over the given halves; bins without cheap tokens get the
        overall ratio (a bin the subsample missed holds few documents)."""
        cheap = self.cheap[halves].sum(axis=0)
        counted = self.counted[halves].sum(axis=0)
        if cheap.sum() == 0:
            raise ValueError("the token calibration holds no documents with tokens: raise the calibration rate")
        overall = counted.sum() / cheap.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(cheap > 0, counted / np.maximum(cheap, 1), overall)

    def ratios(self) -> np.ndarray:
        """Fitted expensive / cheap ratio per bin (both halves), including under/overflow."""
        return self._ratios([0, 1])

    def measured_error(self) -> float | None:
        """Relative error of the check half's expensive total estimated with ratios fitted on the
        fit half; None when a half is empty."""
        if self.cheap[0].sum() == 0 or self.counted[1].sum() == 0:
            return None
        estimate = float(np.sum(self.cheap[1] * self._ratios([0])))
        actual = float(self.counted[1].sum())
        return abs(estimate - actual) / actual

    def estimate(self, perplexity, cheap) -> np.ndarray:
        """Estimated expensive tokens of documents from their perplexities and cheap counts."""
        return np.asarray(cheap, dtype=np.float64) * self.ratios()[self._binning.bin_index(perplexity)]

    def estimated_histogram(self, cheap_histogram: LogHistogram) -> LogHistogram:
        """A copy of ``cheap_histogram`` whose token sums are the estimated expensive counts."""
        fine = cheap_histogram
        coarse = self._binning
        if fine.min_exponent != coarse.min_exponent or fine.max_exponent != coarse.max_exponent \
                or fine.bins_per_decade % coarse.bins_per_decade:
            raise ValueError("the histogram's binning does not refine the calibration's")
        group = fine.bins_per_decade // coarse.bins_per_decade
        fine_index = np.arange(fine.n_bins + 2)
        coarse_index = np.where(fine_index == 0, 0, np.where(fine_index == fine.n_bins + 1, coarse.n_bins + 1,
                                                              (fine_index - 1) // group + 1))
        ratio = self.ratios()[coarse_index]
        estimate = fine.copy()
        estimate._tokens = np.rint(fine.all_tokens * ratio).astype(np.int64)
        return estimate

    def to_dict(self) -> dict:
        b = self._binning
        used = np.flatnonzero(self.documents.sum(axis=0))
        return {
            "bins_per_decade": b.bins_per_decade, "min_exponent": b.min_exponent, "max_exponent": b.max_exponent,
            "bins": used.tolist(),
            "cheap": self.cheap[:, used].tolist(), "counted": self.counted[:, used].tolist(),
            "documents": self.documents[:, used].tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TokenCalibration":
        calibration = cls(data["bins_per_decade"], data["min_exponent"], data["max_exponent"])
        bins = np.asarray(data["bins"], dtype=np.int64)
        size = calibration.cheap.shape[1]
        if bins.size and (bins.min() < 0 or bins.max() >= size or np.unique(bins).size != bins.size):
            raise ValueError("token calibration dict: bins must be distinct indices in range")
        for name in ("cheap", "counted", "documents"):
            values = np.asarray(data[name], dtype=np.int64).reshape(2, bins.size)
            if (values < 0).any():
                raise ValueError(f"token calibration dict: {name} must be >= 0")
            getattr(calibration, name)[:, bins] = values
        return calibration

    def __eq__(self, other) -> bool:
        return isinstance(other, TokenCalibration) and self.to_dict() == other.to_dict()

    def __getstate__(self) -> dict:
        return self.to_dict()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(TokenCalibration.from_dict(state).__dict__)


def _counts(name: str, values, size: int) -> np.ndarray:
    array = np.asarray(values).ravel()
    if array.size != size:
        raise ValueError(f"{array.size} {name} token counts for {size} documents")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError(f"{name} token counts must be non-negative integers")
    return array.astype(np.int64)

