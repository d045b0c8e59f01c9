"""Fixtures of the interoperability tests: a synthetic study and a tiny two-fold run (hand-made result content:
``resultcontent.make_content``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="package")
def synth_study(tmp_path_factory) -> Iterator[Path]:
    """Two synthetic patients (T1W and T2W DICOM series each) and their manifest ``cohort.csv``."""
    from spinedx.synth import generate_cohort

    root = tmp_path_factory.mktemp("synth")
    generate_cohort(root, n_patients=2, n_malignant=1, seed=0, progress=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # the package is done: free the disk (tests/conftest.py)


@pytest.fixture(scope="package")
def case(synth_study: Path) -> dict:
    """The first synthetic patient: series folders, lesion slices and box (as in the manifest)."""
    row = pd.read_csv(synth_study / "cohort.csv").iloc[0]
    return {"patient_id": row.patient_id, "t1": synth_study / row.t1, "t2": synth_study / row.t2,
            "slices": tuple(int(s) for s in row.lesion_slices.split(";")),
            "box": tuple(int(v) for v in row.box.split(","))}


@pytest.fixture(scope="package")
def tiny_run(tmp_path_factory) -> Iterator[Path]:
    """A run folder as ``spinedx cv`` writes it, with two untrained resnet18 fold models (no registration)."""
    from runhelpers import write_run

    root = tmp_path_factory.mktemp("run")
    yield write_run(root, n_patients=12, n_folds=2, optimistic=False)
    shutil.rmtree(root, ignore_errors=True)
