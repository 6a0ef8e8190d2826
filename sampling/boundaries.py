"""Perplexity boundaries (the quartiles Q1 < Q2 < Q3) and the band a perplexity falls in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Band labels, in band order, as written to stats.json. The half-open choices follow the
# stepwise rule of the issue: BERTIN's code left PP == Q2 and PP == Q3 unassigned (and
# crashed); we put Q2 in the second band and Q3 in the last one.
BAND_LABELS = ("<=Q1", "(Q1,Q2]", "(Q2,Q3)", ">=Q3")


@dataclass(frozen=True)
class Boundaries:
    """Validated perplexity quartiles: 0 < q1 < q2 < q3, all finite."""

    q1: float
    q2: float
    q3: float

    def __post_init__(self) -> None:
        values = []
        for name in ("q1", "q2", "q3"):
            raw = getattr(self, name)
            if isinstance(raw, bool) or not isinstance(raw, (int, float, np.integer, np.floating)):
                raise ValueError(f"boundary {name} must be a number, got {raw!r}")
            value = float(raw)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"boundary {name} must be finite and > 0, got {value!r}")
            object.__setattr__(self, name, value)
            values.append(value)
        if not values[0] < values[1] < values[2]:
            raise ValueError(
                "boundaries must be strictly increasing (q1 < q2 < q3), got "
                f"q1={values[0]!r}, q2={values[1]!r}, q3={values[2]!r}"
            )

    @classmethod
    def parse(cls, text: str) -> "Boundaries":
        """Parse "q1,q2,q3" or a preset name (see BOUNDARY_PRESETS, e.g. "bertin")."""
        if not isinstance(text, str):
            raise ValueError(f"boundaries must be given as text, got {text!r}")
        name = text.strip().lower()
        if name in BOUNDARY_PRESETS:
            return BOUNDARY_PRESETS[name]
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 3:
            presets = ", ".join(sorted(BOUNDARY_PRESETS))
            raise ValueError(
                f"boundaries must be three comma-separated numbers q1,q2,q3 or a preset "
                f"name ({presets}), got {text!r}"
            )
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"boundaries must be numbers, got {text!r}") from None
        return cls(*numbers)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.q1, self.q2, self.q3)

    def to_dict(self) -> dict:
        return {"q1": self.q1, "q2": self.q2, "q3": self.q3}

    @classmethod
    def from_dict(cls, data: dict) -> "Boundaries":
        return cls(data["q1"], data["q2"], data["q3"])


# BERTIN's published quartiles of mC4-es perplexities under their KenLM model (the "bertin"
# perplexity scale); only meaningful for perplexities computed the same way.
BERTIN_BOUNDARIES = Boundaries(536394.99320948, 662247.50212365, 919250.87225178)

BOUNDARY_PRESETS = {"bertin": BERTIN_BOUNDARIES}


def band_of(perplexity, boundaries: Boundaries) -> np.ndarray:
    """Band index per perplexity: 0: PP <= Q1, 1: Q1 < PP <= Q2, 2: Q2 < PP < Q3, 3: PP >= Q3."""
    pp = np.asarray(perplexity, dtype=np.float64)
    if np.isnan(pp).any():
        raise ValueError("perplexity contains NaN")
    band = (
        (pp > boundaries.q1).astype(np.int64)
        + (pp > boundaries.q2).astype(np.int64)
        + (pp >= boundaries.q3).astype(np.int64)
    )
    return band
