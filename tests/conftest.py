from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# CI clones the project with ../shared beside it; HUGGINGTWEETS_SHARED overrides.
SHARED = Path(os.environ.get("HUGGINGTWEETS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():  # a hard failure, not a skip: these tests matter
        pytest.fail(f"the shared test data is missing: expected it at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def real_archive(shared: Path) -> Path:
    return shared / "data" / "archives" / "andreruffert"
