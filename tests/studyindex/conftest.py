"""A tiny synthetic cohort shared by the index tests (three patients, rendered once, removed after these tests)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="package")
def synth_cohort(tmp_path_factory) -> Iterator[Path]:
    """``spinedx synth`` output folder with 3 patients (1 malignant)."""
    from spinedx.synth import generate_cohort

    out = tmp_path_factory.mktemp("index_synth")
    generate_cohort(out, n_patients=3, n_malignant=1, seed=3, progress=False)
    yield out
    shutil.rmtree(out, ignore_errors=True)  # the package is done: free the disk (tests/conftest.py)
