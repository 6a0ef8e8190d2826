"""Guidance on sampling parameters: what they keep per band, and when they make no sense.

Pure functions of the boundaries, the parameters and the perplexity histogram (numpy only, no
Beam, no kenlm). The CLI refuses what cannot work before a pipeline starts
(`stepwise_default_problem`), the plan resolution refuses BERTIN's boundaries on another
model's perplexity scale (`bertin_scale_problem`), and the driver's summary prints
`summary_warnings(stats)` from stats.json.

"Per band" (`band_keep_probabilities`): the keep probability at one representative perplexity
of each quartile band (<=Q1, (Q1,Q2], (Q2,Q3), >=Q3):

- stepwise: the probability is constant inside a band (factor / R, clipped at 1), so the
  representative does not matter: it is the band's probability.
- gaussian: the probability varies inside a band (highest at the median Q2), so each band is
  represented by its geometric centre: sqrt(Q1 Q2) and sqrt(Q2 Q3) for the inner bands; the
  open outer bands are closed one quartile step beyond on the log scale (Q1^2/Q2 and Q3^2/Q2),
  giving Q1 sqrt(Q1/Q2) and Q3 sqrt(Q3/Q2).
- random: the factor, in every band.
"""
from __future__ import annotations

import math

import numpy as np

from sampling.boundaries import BAND_LABELS, BERTIN_BOUNDARIES, Boundaries
from sampling.expected import histogram_segments
from sampling.histogram import LogHistogram
from sampling.keep_probability import DEFAULT_FACTOR, SamplingParams, keep_probability

# A band whose keep probability is above / below these keeps everything / nothing in practice.
KEEPS_ALL = 0.999
KEEPS_NONE = 0.001
# `--boundaries bertin` is refused when at least this share of the scored documents falls in
# one band: on BERTIN's own scale each band holds about a quarter of mC4-es.
ONE_BAND_SHARE = 0.9


def representative_perplexities(boundaries: Boundaries) -> np.ndarray:
    """One perplexity per band (see the module docstring), in BAND_LABELS order."""
    q1, q2, q3 = boundaries.as_tuple()
    return np.array([q1 * math.sqrt(q1 / q2), math.sqrt(q1 * q2), math.sqrt(q2 * q3),
                     q3 * math.sqrt(q3 / q2)], dtype=np.float64)


def band_keep_probabilities(boundaries: Boundaries | None, params: SamplingParams) -> list[float]:
    """The keep probability of each band at its representative perplexity (BAND_LABELS order).

    For the random method the boundaries may be None (every band keeps `factor`)."""
    if params.method == "random":
        return [float(params.factor)] * len(BAND_LABELS)
    if boundaries is None:
        raise ValueError(f"the {params.method} method needs boundaries")
    return [float(p) for p in keep_probability(representative_perplexities(boundaries),
                                               boundaries, params)]


def format_band_probabilities(probabilities: list[float]) -> str:
    return ", ".join(f"{label} {p:.3g}" for label, p in zip(BAND_LABELS, probabilities))


def keep_warnings(boundaries: Boundaries | None, params: SamplingParams) -> list[str]:
    """One line per problem: the parameters keep (almost) every or no document of a band.

    Empty when every band keeps some and drops some; the lines end with the per-band keep
    probabilities so the user sees what to change."""
    probabilities = band_keep_probabilities(boundaries, params)
    everything = [label for label, p in zip(BAND_LABELS, probabilities) if p >= KEEPS_ALL]
    nothing = [label for label, p in zip(BAND_LABELS, probabilities) if p <= KEEPS_NONE]
    where = f"{params.method} {params.to_dict()}"
    table = f"keep probability per band: {format_band_probabilities(probabilities)}"
    lines = []
    for bands, what, consequence, change in [
            (everything, "every document", ": the sampling does nothing", "lower"),
            (nothing, "(almost) no document", "", "raise")]:
        if len(bands) == len(BAND_LABELS):
            lines.append(f"warning: {where} keeps {what}{consequence} ({table}); {change} "
                         "--factor or use --target-docs N")
        elif bands:
            lines.append(f"warning: {where} keeps {what} of band(s) {', '.join(bands)} ({table})")
    return lines


def band_shares(histogram: LogHistogram, boundaries: Boundaries) -> list[float]:
    """Share of the histogram's documents in each band (BAND_LABELS order)."""
    if not histogram.total:
        return [0.0] * len(BAND_LABELS)
    segments = histogram_segments(histogram, boundaries)
    docs = np.bincount(segments.band, weights=segments.docs, minlength=len(BAND_LABELS))
    return [float(d / histogram.total) for d in docs]


def _one_band_message(shares: list[float], scored: int, boundaries: Boundaries,
                      own: Boundaries | None) -> str | None:
    band = int(np.argmax(shares))
    if not scored or shares[band] < ONE_BAND_SHARE:
        return None
    scale = (f"this model's quartiles are {own.q1:.4g}, {own.q2:.4g}, {own.q3:.4g}"
             if own is not None else "this model's perplexities are on another scale")
    return (f"--boundaries bertin puts {shares[band]:.1%} of the {scored:,} scored documents in "
            f"band {BAND_LABELS[band]}: BERTIN's quartiles ({boundaries.q1:.4g}, "
            f"{boundaries.q2:.4g}, {boundaries.q3:.4g}) are on BERTIN's perplexity scale and "
            f"{scale}; drop --boundaries to use this model's quartiles, score with a model on "
            f"BERTIN's scale (--preset bertin), or add --force-boundaries")


def bertin_scale_problem(histogram: LogHistogram,
                         boundaries: Boundaries = BERTIN_BOUNDARIES) -> str | None:
    """A message when (almost) every scored document falls into one band of `boundaries`
    (BERTIN's, on another model's perplexity scale); None when the scales are compatible or
    nothing was scored."""
    if not histogram.total:
        return None
    own = histogram.boundaries() if histogram.total >= 3 else None
    try:
        return _one_band_message(band_shares(histogram, boundaries), histogram.total,
                                 boundaries, own)
    except ValueError:  # degenerate quartiles of a tiny histogram: no comparison to make
        return None


def stepwise_default_problem(method: str, factor: float | None, target_docs: int | None,
                             boundaries: str | None) -> str | None:
    """Why `--method stepwise` without --factor / --target-docs is refused (None when fine).

    Stepwise keeps factor / R per band, R the band's perplexity range: BERTIN's factor 1.5e5 is
    on BERTIN's perplexity scale (quartiles 5.4e5..9.2e5). On another model's scale (the bundled
    model's quartiles are ~3e2..6e2) every band clips to 1 and the sample is the whole input,
    so there is no scale-free default: the factor must come from the user or a target size.
    With `--boundaries bertin` BERTIN's default stays meaningful and is kept."""
    if method != "stepwise" or factor is not None or target_docs is not None:
        return None
    if boundaries is not None and boundaries.strip().lower() == "bertin":
        return None
    return (f"--method stepwise needs --target-docs N (recommended: the factor is solved for "
            f"about N kept documents) or --factor F: BERTIN's default {DEFAULT_FACTOR['stepwise']:g} "
            f"is on BERTIN's perplexity scale and keeps every document on another model's "
            f"(F is in perplexity units: band keep probability = F / band width; see `ppsample "
            f"stats` for the quartiles)")


def summary_warnings(stats: dict) -> list[str]:
    """The warnings of a finished stage from its stats.json fields (boundaries, method,
    parameters, total.bands): parameters that keep everything or nothing in a band, and
    boundaries that put (almost) every scored document in one band (forced bertin)."""
    method = stats.get("method")
    b = stats.get("boundaries")
    if not method:
        return []
    try:
        boundaries = Boundaries(b["q1"], b["q2"], b["q3"]) if b else None
        params = SamplingParams(method, **(stats.get("parameters") or {}))
        lines = keep_warnings(boundaries, params) if (boundaries or method == "random") else []
    except (KeyError, TypeError, ValueError):
        return []
    bands = (stats.get("total") or {}).get("bands") or []
    scored = sum(int(row.get("scored") or 0) for row in bands)
    if boundaries is not None and scored and len(bands) == len(BAND_LABELS):
        shares = [int(row.get("scored") or 0) / scored for row in bands]
        band = int(np.argmax(shares))
        if shares[band] >= ONE_BAND_SHARE:
            lines.append(f"warning: {shares[band]:.1%} of the {scored:,} scored documents are in "
                         f"band {BAND_LABELS[band]} of the {b.get('source', 'given')} boundaries "
                         f"({boundaries.q1:.4g}, {boundaries.q2:.4g}, {boundaries.q3:.4g}): they "
                         f"are not on this model's perplexity scale")
    return lines
