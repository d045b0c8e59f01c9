"""A tiny synthetic cohort shared by the index tests (three patients, rendered once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> Path:
    """``spinedx synth`` output folder with 3 patients (1 malignant)."""
    from spinedx.synth import generate_cohort

    out = tmp_path_factory.mktemp("index_synth")
    generate_cohort(out, n_patients=3, n_malignant=1, seed=3, progress=False)
    return out
