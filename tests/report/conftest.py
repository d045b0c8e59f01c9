"""A hand-made run folder (the `spinedx cv` contract) with a cohort, patches and stats inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS


def make_run(root: Path, *, n_patients: int = 16, n_folds: int = 2, cohort: bool = True, features: bool = True,
             optimistic: bool = True, models: bool = False, seed: int = 0) -> Path:
    """Write cohort.csv, patches/{patches.npz,extract.json} and run/ under ``root``; return the run folder."""
    rng = np.random.default_rng(seed)
    pids = [f"P{i:03d}" for i in range(n_patients)]
    y = np.array([1 if i % 3 == 0 else 0 for i in range(n_patients)])
    fold = np.zeros(n_patients, dtype=int)
    for cls in (0, 1):  # stratified: every fold has both classes
        fold[y == cls] = np.arange(int((y == cls).sum())) % n_folds
    # per-patient probabilities: mostly right, with one false negative and one false positive
    prob = np.where(y == 1, rng.uniform(0.6, 0.95, n_patients), rng.uniform(0.05, 0.4, n_patients))
    prob[0] = 0.2   # malignant called benign
    prob[1] = 0.8   # benign called malignant

    rows = []
    for i, pid in enumerate(pids):
        row = {"patient_id": pid, "label": "malignant" if y[i] else "benign", "t1": f"img/{pid}_t1.nii.gz",
               "t2": f"img/{pid}_t2.nii.gz", "lesion_slices": "7;8", "box": "10,10,40,40"}
        if features:
            for c in FEATURE_COLUMNS:
                row[c] = int(rng.random() < (0.7 if (y[i] and c.endswith("change")) else 0.3))
            for r, err in zip(READER_COLUMNS, (0.0, 0.1, 0.35), strict=True):
                call = y[i] if rng.random() >= err else 1 - y[i]
                row[r] = "malignant" if call else "benign"
        rows.append(row)
    cohort_csv = root / "cohort.csv"
    pd.DataFrame(rows).to_csv(cohort_csv, index=False)

    patches = root / "patches"
    patches.mkdir()
    xs, pid_arr, sl, lab, slice_rows = [], [], [], [], []
    for i, pid in enumerate(pids):
        for j, s in enumerate((7, 8)):
            x = rng.normal(0, 1, (6, 64, 64)).astype(np.float32)
            if y[i]:
                x[:, 20:40, 20:40] += 2.0
            xs.append(x)
            pid_arr.append(pid)
            sl.append(s)
            lab.append(y[i])
            slice_rows.append({"patient_id": pid, "slice_index": s, "fold": fold[i], "label": y[i],
                               "probability": prob[i] if j == 1 else prob[i] * 0.8})
    np.savez(patches / "patches.npz", x=np.stack(xs), patient_id=np.array(pid_arr, dtype=str),
             slice_index=np.array(sl, dtype=np.int64), label=np.array(lab, dtype=np.int64))
    extract = {"manifest": {"path": str(cohort_csv.resolve()) if cohort else "/nonexistent/cohort.csv",
                            "sha256": "x"},
               "config": {"patch_size": 64, "register": False}}
    (patches / "extract.json").write_text(json.dumps(extract))

    run = root / "run"
    run.mkdir()
    config = {  # the layout `spinedx cv` writes
        "config": {"profile": "quick", "folds": n_folds, "seed": 0, "backbone": "resnet18", "pretrained": "none",
                   "weights": None, "threshold": 0.5, "aggregation": "max"},
        "optimistic": optimistic,
        "patches_dir": str(patches.resolve()),
        "weights": {"source": "none", "path": None, "sha256": None, "message": "resnet18 trained from scratch"},
        "provenance": {"versions": {"torch": "2.14.1", "spinedx": "0.1.0"}, "git_commit": "abc123"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "splits.json").write_text(json.dumps(
        {"folds": [{"fold": k, "val": [p for p, f in zip(pids, fold, strict=True) if f == k]}
                   for k in range(n_folds)]}))
    pd.DataFrame(slice_rows).to_csv(run / "oof_slices.csv", index=False)
    pd.DataFrame({"patient_id": pids, "fold": fold, "label": y, "probability": prob,
                  "prediction": (prob >= 0.5).astype(int)}).to_csv(run / "oof_patients.csv", index=False)
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, prob))
    (run / "metrics.json").write_text(json.dumps({"auc": auc, "auc_low": auc - 0.1, "auc_high": min(auc + 0.05, 1.0),
                                                  "threshold": 0.5, "optimistic": optimistic}))
    if models:
        save_tiny_fold_models(run, n_folds)
    return run


def save_tiny_fold_models(run: Path, n_folds: int) -> None:
    """Untrained resnet18 fold models in the run-folder format (folds/<k>/model.pt)."""
    import warnings

    import torch

    from spinedx.models import build_model, save_fold_model

    for k in range(n_folds):
        torch.manual_seed(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model("resnet18", pretrained="none")
        (run / "folds" / str(k)).mkdir(parents=True, exist_ok=True)
        save_fold_model(model.eval(), run / "folds" / str(k) / "model.pt", k)


@pytest.fixture
def run_factory(tmp_path: Path):
    """Make a run folder under a fresh tmp dir: ``run_factory(**kwargs) -> run_dir``."""
    counter = iter(range(100))

    def _make(**kw) -> Path:
        root = tmp_path / f"r{next(counter)}"
        root.mkdir()
        return make_run(root, **kw)

    return _make
