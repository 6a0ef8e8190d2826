"""Perplexity-sampling math (numpy only; no Beam, no kenlm).

See docs/sampling.md for the formulas, the uniforms' exact definition and the histogram's
resolution.
"""

from sampling.boundaries import BAND_LABELS, BERTIN_BOUNDARIES, BOUNDARY_PRESETS, Boundaries, band_of
from sampling.expected import expected_keep_rates, expected_kept
from sampling.histogram import LogHistogram
from sampling.keep_probability import (
    DEFAULT_FACTOR,
    DEFAULT_WIDTH,
    METHODS,
    SamplingParams,
    keep_mask,
    keep_probability,
    unit_keep_probability,
)
from sampling.target_size import solve_factor
from sampling.uniforms import document_key, document_uniform, document_uniforms

__all__ = [
    "BAND_LABELS",
    "BERTIN_BOUNDARIES",
    "BOUNDARY_PRESETS",
    "Boundaries",
    "DEFAULT_FACTOR",
    "DEFAULT_WIDTH",
    "LogHistogram",
    "METHODS",
    "SamplingParams",
    "band_of",
    "document_key",
    "document_uniform",
    "document_uniforms",
    "expected_keep_rates",
    "expected_kept",
    "keep_mask",
    "keep_probability",
    "solve_factor",
    "unit_keep_probability",
]
