"""Expected kept amounts from a perplexity histogram, per band and in total.

Within a bin, documents (and tokens) are taken as spread uniformly in log(perplexity). Each
non-empty bin is cut at the boundaries Q1, Q2, Q3 into segments, each segment weighted by its
share of the bin's log-width and given the keep probability at its geometric midpoint. This is
exact for the stepwise method under that assumption (its probability is constant between
boundaries) and a midpoint rule for the gaussian (error O(bin width^2), negligible at the
default 0.23 % bins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampling import libm
from sampling.boundaries import BAND_LABELS, Boundaries, band_of
from sampling.histogram import LogHistogram
from sampling.keep_probability import SamplingParams, unit_keep_probability

UNITS = ("docs", "tokens")


@dataclass(frozen=True)
class Segments:
    """Pieces of the non-empty bins, none straddling a boundary."""

    representative: np.ndarray  # geometric midpoint (the value itself for a point mass)
    docs: np.ndarray  # expected documents in the piece (float)
    tokens: np.ndarray  # expected tokens in the piece (float)
    band: np.ndarray  # band index of the piece


def histogram_segments(histogram: LogHistogram, boundaries: Boundaries | None) -> Segments:
    counts = histogram.all_counts
    tokens = histogram.all_tokens
    used = np.flatnonzero((counts > 0) | (tokens > 0))
    lo, hi = histogram.bin_bounds()
    lo, hi = lo[used], hi[used]
    cuts = np.array(boundaries.as_tuple() if boundaries is not None else (), dtype=np.float64)
    # Per bin: its two ends and every boundary clipped into it, sorted -> consecutive pieces.
    points = np.sort(np.column_stack([lo, hi] + [np.clip(cut, lo, hi) for cut in cuts]), axis=1)
    a, b = points[:, :-1], points[:, 1:]
    width = libm.log(hi / lo)[:, None]
    point_mass = width[:, 0] <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(point_mass[:, None], 0.0, libm.log(b / a) / width)
    # A bin narrowed to a single value (min == max inside it) holds a point mass there.
    share[point_mass, 0] = 1.0
    representative = np.where(point_mass[:, None], lo[:, None], np.sqrt(a * b))
    docs = share * counts[used][:, None]
    token_weight = share * tokens[used][:, None]
    keep = docs.ravel() > 0
    keep |= token_weight.ravel() > 0
    rep = representative.ravel()[keep]
    band = band_of(rep, boundaries) if boundaries is not None else np.zeros(rep.shape, dtype=np.int64)
    return Segments(rep, docs.ravel()[keep], token_weight.ravel()[keep], band)


def _weights(segments: Segments, unit: str) -> np.ndarray:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    return segments.docs if unit == "docs" else segments.tokens


def expected_kept(histogram: LogHistogram, boundaries: Boundaries | None, params: SamplingParams, unit: str = "docs") -> float:
    """Expected number of kept documents (or tokens) for the histogram's perplexities."""
    segments = histogram_segments(histogram, boundaries)
    unit_probability = unit_keep_probability(segments.representative, boundaries, params.method, params.width)
    probability = np.clip(params.factor * unit_probability, 0.0, 1.0)
    return float(np.sum(_weights(segments, unit) * probability))


def expected_keep_rates(histogram: LogHistogram, boundaries: Boundaries, params: SamplingParams) -> list[float | None]:
    """Expected fraction of documents kept per band (BAND_LABELS order); None for an empty band."""
    if boundaries is None:
        raise ValueError("per-band rates need boundaries")
    segments = histogram_segments(histogram, boundaries)
    unit_probability = unit_keep_probability(segments.representative, boundaries, params.method, params.width)
    probability = np.clip(params.factor * unit_probability, 0.0, 1.0)
    bands = len(BAND_LABELS)
    docs = np.bincount(segments.band, weights=segments.docs, minlength=bands)
    kept = np.bincount(segments.band, weights=segments.docs * probability, minlength=bands)
    return [float(kept[i] / docs[i]) if docs[i] > 0 else None for i in range(bands)]
