"""Solve a method's factor so the expected kept amount hits a target size.

Every method's keep probability is ``min(1, factor * g(PP))`` (see unit_keep_probability), so
the expected kept amount E(factor) = sum_s w_s min(1, factor g_s) over the histogram segments
(see sampling.expected) is continuous, non-decreasing and piecewise linear in the factor, with
a breakpoint at 1/g_s where segment s saturates. The solver walks the sorted breakpoints and
solves the linear piece exactly: no iteration, no tolerance, same answer for the same histogram.
"""

from __future__ import annotations

import math

import numpy as np

from sampling.boundaries import Boundaries
from sampling.expected import _weights, histogram_segments
from sampling.histogram import LogHistogram
from sampling.keep_probability import SamplingParams, unit_keep_probability

# Relative slack when the target equals the maximum (float sums of shares are not exact).
_REACHABLE_SLACK = 1e-9


def solve_factor(
    histogram: LogHistogram,
    boundaries: Boundaries | None,
    params: SamplingParams,
    target_docs: float | None = None,
    *,
    target_tokens: float | None = None,
) -> tuple[float, float]:
    """(factor, expected kept amount) for a target number of documents or tokens (give one).

    The expected amount is in the target's unit. ``params.factor`` is ignored (other
    parameters, e.g. the gaussian width, are used). Raises ValueError when the target is not
    positive or cannot be reached: more than the documents (tokens) whose probability can
    reach 1.
    """
    if (target_docs is None) == (target_tokens is None):
        raise ValueError("give exactly one of target_docs and target_tokens")
    unit, target = ("docs", target_docs) if target_docs is not None else ("tokens", target_tokens)
    if isinstance(target, bool) or not isinstance(target, (int, float, np.integer, np.floating)):
        raise ValueError(f"target_{unit} must be a number, got {target!r}")
    target = float(target)
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"target_{unit} must be finite and > 0, got {target!r}")
    if unit == "tokens" and histogram.total_tokens == 0:
        raise ValueError("target_tokens needs a histogram filled with token counts (add(pp, tokens=...))")

    segments = histogram_segments(histogram, boundaries)
    weight = _weights(segments, unit)
    slope = unit_keep_probability(segments.representative, boundaries, params.method, params.width)
    live = (weight > 0) & (slope > 0)
    weight, slope = weight[live], slope[live]
    reachable = float(weight.sum())
    if target > reachable * (1 + _REACHABLE_SLACK):
        available = histogram.total if unit == "docs" else histogram.total_tokens
        raise ValueError(
            f"target of {target:g} {unit} is unreachable with the {params.method} method: at most "
            f"{reachable:.6g} of the {available} {unit} can be kept (keep probabilities clip at 1)"
        )
    target = min(target, reachable)

    saturation = 1.0 / slope  # factor at which each segment's probability reaches 1
    order = np.argsort(saturation, kind="stable")
    saturation, weight, slope = saturation[order], weight[order], slope[order]
    saturated_weight = np.cumsum(weight)  # weight of segments saturated at saturation[k]
    unsaturated_slope = float(np.sum(weight * slope)) - np.cumsum(weight * slope)
    amount_at = saturated_weight + saturation * unsaturated_slope
    k = int(np.searchsorted(amount_at, target, side="left"))
    k = min(k, saturation.size - 1)
    # On [saturation[k-1], saturation[k]] the amount is linear: done + factor * rising_slope.
    done = float(saturated_weight[k - 1]) if k > 0 else 0.0
    rising_slope = float(unsaturated_slope[k - 1]) if k > 0 else float(np.sum(weight * slope))
    factor = (target - done) / rising_slope
    factor = min(max(factor, 0.0), float(saturation[-1]))
    expected = float(np.sum(weight * np.minimum(1.0, factor * slope)))
    return factor, expected
