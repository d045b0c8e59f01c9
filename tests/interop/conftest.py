"""Fixtures of the interoperability tests: a synthetic study, a tiny two-fold run, hand-made result content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinedx.interop.content import ALGORITHM_NAME, AlgorithmInfo, ResultContent


@pytest.fixture(scope="session")
def synth_study(tmp_path_factory) -> Path:
    """Two synthetic patients (T1W and T2W DICOM series each) and their manifest ``cohort.csv``."""
    from spinedx.synth import generate_cohort

    root = tmp_path_factory.mktemp("synth")
    generate_cohort(root, n_patients=2, n_malignant=1, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def case(synth_study: Path) -> dict:
    """The first synthetic patient: series folders, lesion slices and box (as in the manifest)."""
    row = pd.read_csv(synth_study / "cohort.csv").iloc[0]
    return {"patient_id": row.patient_id, "t1": synth_study / row.t1, "t2": synth_study / row.t2,
            "slices": tuple(int(s) for s in row.lesion_slices.split(";")),
            "box": tuple(int(v) for v in row.box.split(","))}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder as ``spinedx cv`` writes it, with two untrained resnet18 fold models (no registration)."""
    from runhelpers import write_run

    return write_run(tmp_path_factory.mktemp("run"), n_patients=12, n_folds=2, optimistic=False)


def make_content(slices: tuple[int, ...], box: tuple[int, int, int, int], *, probability: float = 0.7312345678901234,
                 per_model: tuple[float, ...] = (0.6712345678901234, 0.7912345678901234), seed: int = 0,
                 heat: bool = True) -> ResultContent:
    """Result content made by hand (no model): known values to find again in the written objects."""
    rng = np.random.default_rng(seed)
    return ResultContent(
        probability=probability, call="malignant" if probability >= 0.5 else "benign", threshold=0.5,
        aggregation="max over the lesion slices per fold model, then the mean over the 2 fold models",
        per_model=per_model, box=box, slice_index=slices,
        slice_probability=tuple(float(v) for v in rng.uniform(0, 1, len(slices))),
        heatmaps=rng.uniform(0, 1, (len(slices), 64, 64)).astype(np.float32) if heat else None,
        patch_size=64, margin=0.1,
        algorithm=AlgorithmInfo(ALGORITHM_NAME, "0.1.0", "ab" * 32, "resnet18, ensemble mean of 2 fold models"))
