"""BERTIN's three keep-probability functions (stepwise, gaussian, random), vectorised.

A document with perplexity PP and uniform U (see sampling.uniforms) is kept iff
``U < keep_probability(PP)`` for stepwise and gaussian, and ``U <= factor`` for random, exactly
as in BERTIN's mc4 loading script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sampling import libm
from sampling.boundaries import Boundaries, band_of

METHODS = ("gaussian", "stepwise", "random")

# BERTIN's defaults. The stepwise factor 1.5e5 is on BERTIN's perplexity scale (quartiles
# around 5e5..9e5); on another scale it clips to 1 almost everywhere, so use a target size or
# scale it with the quartiles.
DEFAULT_FACTOR = {"stepwise": 1.5e5, "gaussian": 0.78, "random": 0.5}
# BERTIN's published code uses exp(-(1/width) * ((PP - m)/m)^2) with width 9/2; an earlier
# version used the coefficient 9/2 itself, i.e. width = 2/9 (a much narrower curve).
DEFAULT_WIDTH = 9 / 2


@dataclass(frozen=True)
class SamplingParams:
    """Method and its parameters; ``None`` means the method's BERTIN default.

    After construction ``factor`` is always a float, and ``width`` is a float for gaussian and
    ``None`` for the other methods.
    """

    method: str = "gaussian"
    factor: float | None = None
    width: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown sampling method {self.method!r}; choose one of {', '.join(METHODS)}")
        factor = DEFAULT_FACTOR[self.method] if self.factor is None else _positive_number("factor", self.factor)
        if self.method == "random" and factor > 1:
            raise ValueError(f"random sampling keeps a fraction: factor must be in (0, 1], got {factor!r}")
        object.__setattr__(self, "factor", factor)
        if self.method == "gaussian":
            width = DEFAULT_WIDTH if self.width is None else _positive_number("width", self.width)
            object.__setattr__(self, "width", width)
        elif self.width is not None:
            raise ValueError(f"width only applies to the gaussian method, not {self.method!r}")

    def to_dict(self) -> dict:
        """The parameters as written to stats.json "parameters"."""
        if self.method == "gaussian":
            return {"factor": self.factor, "width": self.width}
        return {"factor": self.factor}

    def with_factor(self, factor: float) -> "SamplingParams":
        return SamplingParams(self.method, factor, self.width)


def _positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {number!r}")
    return number


def _validated_perplexity(perplexity) -> np.ndarray:
    pp = np.asarray(perplexity, dtype=np.float64)
    if np.isnan(pp).any():
        raise ValueError("perplexity contains NaN")
    if (pp <= 0).any():
        raise ValueError(f"perplexity must be > 0, got minimum {pp.min()!r}")
    return pp


def unit_keep_probability(perplexity, boundaries: Boundaries | None, method: str, width: float | None = None) -> np.ndarray:
    """The keep probability per unit of factor, before clipping: ``p = min(1, factor * g)``.

    stepwise: g = 1/R with R = Q1, Q2-Q1, Q3-Q2, 10*Q3 for bands 0..3; gaussian:
    g = exp(-(1/width) ((PP-Q2)/Q2)^2); random: g = 1. Used by the factor solver, whose
    expected kept count is piecewise linear in the factor with these slopes.
    """
    pp = _validated_perplexity(perplexity)
    if method == "random":
        return np.ones_like(pp)
    if boundaries is None:
        raise ValueError(f"the {method} method needs boundaries")
    if method == "stepwise":
        return 1.0 / stepwise_quartile_range(pp, boundaries)
    if method == "gaussian":
        if width is None:
            raise ValueError("the gaussian method needs a width")
        median = boundaries.q2
        with np.errstate(over="ignore"):
            return libm.exp(-(1.0 / width) * ((pp - median) / median) ** 2)
    raise ValueError(f"unknown sampling method {method!r}; choose one of {', '.join(METHODS)}")


def stepwise_quartile_range(perplexity, boundaries: Boundaries) -> np.ndarray:
    """BERTIN's R per document: Q1, Q2-Q1, Q3-Q2 or 10*Q3 by band (see band_of)."""
    q1, q2, q3 = boundaries.as_tuple()
    quartile_range = np.array([q1, q2 - q1, q3 - q2, 10 * q3])
    return quartile_range[band_of(np.asarray(perplexity, dtype=np.float64), boundaries)]


def keep_probability(perplexity, boundaries: Boundaries | None, params: SamplingParams) -> np.ndarray:
    """Probability in [0, 1] that a document of this perplexity is kept (float64 array).

    ``boundaries`` may be None for the random method. NaN or non-positive perplexities raise
    ValueError; +inf is valid (last band for stepwise, probability 0 for gaussian).
    """
    if params.method == "stepwise" and boundaries is not None:
        # BERTIN computes `factor / quartile_range`; factor * (1/R) differs in the last bit
        # for most (factor, R) pairs, which flips a keep decision when U falls between them.
        pp = _validated_perplexity(perplexity)
        return np.clip(params.factor / stepwise_quartile_range(pp, boundaries), 0.0, 1.0)
    unit = unit_keep_probability(perplexity, boundaries, params.method, params.width)
    return np.clip(params.factor * unit, 0.0, 1.0)


def keep_mask(perplexity, uniforms, boundaries: Boundaries | None, params: SamplingParams) -> np.ndarray:
    """Boolean keep decision per document, with BERTIN's comparison (random uses ``<=``)."""
    u = np.asarray(uniforms, dtype=np.float64)
    probability = keep_probability(perplexity, boundaries, params)
    if u.shape != probability.shape:
        raise ValueError(f"{u.shape} uniforms for {probability.shape} perplexities")
    if params.method == "random":
        return u <= probability
    return u < probability
