"""Leakage check: with labels shuffled across patients, out-of-fold AUC must stay at chance.

Each patient's three slices share a strong patient-specific pattern (like the same vertebra
seen on neighbouring slices), and the patient labels are a random permutation, unrelated to
the images. A model can then only score above chance out of fold by recognising a patient it
has seen in training (or in early stopping), i.e. through leakage.

Tolerance: with 30 benign and 30 malignant patients the AUC of a score unrelated to the label
has a null standard deviation of sqrt((n0 + n1 + 1) / (12 n0 n1)) = 0.075 (Mann-Whitney), so
|AUC - 0.5| <= 0.25 is a 3.3 SD band (false alarm p < 0.001; and the run is deterministic, so
it does not flake). The positive control, where slices are (wrongly) treated as patients so a
patient's other slices sit in training, shows the check detects leakage: its AUC exceeds 0.75 (0.94 measured;
0.57 for the grouped run). The radiomics baseline of every run gets the same check on the same folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinedx.evaluation.cv import CVConfig, run_cv

N_PATIENTS = 60


def _patches(path: Path, slice_level_ids: bool) -> Path:
    rng = np.random.default_rng(42)
    labels = rng.permutation(np.arange(N_PATIENTS) % 2)  # shuffled across patients: no signal
    x, pid, sl, lab = [], [], [], []
    for p in range(N_PATIENTS):
        signature = rng.normal(size=(6, 16, 16)).astype(np.float32)
        for s in range(3):
            x.append(signature + 0.3 * rng.normal(size=(6, 16, 16)).astype(np.float32))
            pid.append(f"P{p:02d}-s{s}" if slice_level_ids else f"P{p:02d}")
            sl.append(s)
            lab.append(labels[p])
    path.mkdir(parents=True)
    np.savez(path / "patches.npz", x=np.stack(x), patient_id=np.array(pid), slice_index=np.array(sl, np.int64),
             label=np.array(lab, np.int64))
    return path


def _config() -> CVConfig:
    # bf16 off: on a CPU with AVX512-BF16, oneDNN's bf16 convolutions on these 16x16 patches gave a non-finite output
    # in about one process in four (the same fold, the same bytes in; seen on the code before issue 18 too), which
    # failed this test at random; the check is about leakage, in fp32 it is deterministic.
    return CVConfig.from_profile("quick", folds=3, backbone="resnet18", pretrained="none", epochs=3, patience=0,
                                 views_benign=2, views_malignant=2, batch_size=16, threads=1, compile="off",
                                 bf16="off", augment={"rotation_deg": 0.0, "translation": 0.0, "scale": (1.0, 1.0)})


@pytest.mark.slow
def test_shuffled_labels_give_chance_auc(tmp_path: Path) -> None:
    metrics = run_cv(_patches(tmp_path / "p", slice_level_ids=False), tmp_path / "run", _config(), progress=False)
    assert metrics["n_patients"] == N_PATIENTS
    assert abs(metrics["auc"] - 0.5) <= 0.25, metrics["auc"]
    # the radiomics baseline is fitted on the same folds (C chosen inside them): no leak there either
    radiomics = metrics["baselines"]["radiomics"]
    assert radiomics["status"] == "ok" and radiomics["n"] == N_PATIENTS
    assert abs(radiomics["auc"] - 0.5) <= 0.25, radiomics["auc"]
    assert metrics["baselines"]["features"]["status"] == "absent"  # no manifest: said, not guessed


@pytest.mark.slow
def test_positive_control_leaky_grouping_is_detected(tmp_path: Path) -> None:
    metrics = run_cv(_patches(tmp_path / "p", slice_level_ids=True), tmp_path / "run", _config(), progress=False)
    assert metrics["slice"]["auc"] > 0.75, metrics["slice"]["auc"]
