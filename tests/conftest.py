import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The part of the shared Spanish data the tests use, shipped in tests/data (its SOURCES.md
    says what and how it was made): no test depends on a folder outside the checkout."""
    if not (TEST_DATA / "es" / "web.jsonl.gz").exists():
        pytest.fail(f"test data missing from the checkout: {TEST_DATA}")
    return TEST_DATA


@pytest.fixture(scope="session")
def full_shared_data() -> Path:
    """The full-size shared data (../shared/data or $PPSAMPLE_SHARED_DATA), outside the
    repository: only slow tests use it (rebuilding the bundled model, regenerating tests/data)."""
    path = Path(os.environ.get("PPSAMPLE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "es" / "reference.txt.gz").exists():
        pytest.skip(f"full shared data not found at {path}; set PPSAMPLE_SHARED_DATA")
    return path
