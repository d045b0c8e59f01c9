"""Shared test fixtures.

The real spine MRI samples live in ``../shared/data/real`` beside the repository (CI lays a
copy of shared/ beside its clone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of the real spine MRI samples (see each PROVENANCE.md)."""
    assert REAL_DATA.is_dir(), f"real data folder missing: {REAL_DATA} (shared/ must lie beside the repo)"
    return REAL_DATA
