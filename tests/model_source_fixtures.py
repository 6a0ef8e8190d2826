"""What the model-source test modules share: the bundled model, a text, its perplexity under
the bundled model, and an empty model cache per test (imported by those modules; pytest finds
fixtures in a module's namespace)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lm_models.perplexity import PerplexityModel

BUNDLED = Path(__file__).resolve().parents[1] / "lm_models" / "bundled" / "es-reference"
TEXT = "La biblioteca abre todos los días a las nueve."


@pytest.fixture(scope="module")
def expected() -> float:
    return PerplexityModel.load("es-reference").perplexity(TEXT)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PPSAMPLE_CACHE", str(root))
    return root
