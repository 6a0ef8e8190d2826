import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Spanish data in ../shared/data (see its SOURCES.md)."""
    path = Path(os.environ.get("PPSAMPLE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "es" / "web.jsonl.gz").exists():
        pytest.fail(f"shared data not found at {path}; set PPSAMPLE_SHARED_DATA")
    return path
