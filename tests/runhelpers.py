"""Run folders for tests, written through spinedx.runfolder exactly as `spinedx cv` writes them (without training).

``write_run`` makes a cohort manifest, ``patches/{patches.npz, extract.json}`` and a complete run folder:
``config.yaml``, ``splits.json``, every fold folder (tiny untrained resnet18 models, copied from one saved
file per process), ``oof_slices.csv``, ``oof_patients.csv`` and ``metrics.json`` from planted probabilities.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.common import CHANNEL_NAMES
from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS
from spinedx.runfolder import RunFolder, RunRecord, WeightsRecord, load_patches
from spinedx.training.config import CVConfig

_MODEL_CACHE: dict[tuple[str, int], Path] = {}


def tiny_config(**kw: object) -> CVConfig:
    """A resnet18 configuration small enough for tests."""
    base: dict[str, object] = {"folds": 3, "backbone": "resnet18", "pretrained": "none", "epochs": 2, "patience": 0,
                               "views_benign": 1, "views_malignant": 1, "batch_size": 16, "threads": 1,
                               "compile": "off"}
    base.update(kw)
    return CVConfig.from_profile("quick", **base)  # type: ignore[arg-type]


#: ``spinedx cv`` options of the executor tests' tiny run (resnet18, one epoch, the default thread count per
#: fold): what :func:`executor_cv_config` makes, so the CLI and the Python API train the same folds.
EXECUTOR_CV_OPTIONS = ["--folds", "3", "--backbone", "resnet18", "--pretrained", "none", "--profile", "quick",
                       "--epochs", "1", "--patience", "0", "--views-benign", "1", "--views-malignant", "1",
                       "--compile", "off", "--quiet"]

#: torch threads of the test process while :func:`executor_reference` trains in it: not the folds' default (1),
#: so a fold that ran with its process's count instead of the run's would give other bytes than a worker's.
REFERENCE_PROCESS_THREADS = 2


def executor_cv_config() -> CVConfig:
    """The configuration :data:`EXECUTOR_CV_OPTIONS` make."""
    return CVConfig.from_profile("quick", folds=3, backbone="resnet18", pretrained="none", epochs=1, patience=0,
                                 views_benign=1, views_malignant=1, compile="off")


def executor_reference(root: Path) -> tuple[Path, Path]:
    """Patches of 18 patients under ``root`` and the one-process ``spinedx cv`` run of them (folds one after the
    other in this process, which runs :data:`REFERENCE_PROCESS_THREADS` torch threads): the bytes every executor
    must reproduce. The process's thread count is checked to be back after the run."""
    import torch
    from typer.testing import CliRunner

    from spinedx.cli import app

    pids = [f"P{i:03d}" for i in range(18)]
    patches = write_patches(root / "patches", pids, np.arange(18) % 2, size=32, seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(REFERENCE_PROCESS_THREADS)
    try:
        res = CliRunner().invoke(app, ["cv", str(patches), "--out", str(root / "local"), *EXECUTOR_CV_OPTIONS])
        assert torch.get_num_threads() == REFERENCE_PROCESS_THREADS  # the folds' own count was undone
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    return patches, root / "local"


def run_bytes(run: Path) -> dict[str, bytes]:
    """The out-of-fold tables and every fold's ``predictions.csv`` of a run, by relative path: what must be
    byte-identical however the folds ran."""
    names = ["oof_slices.csv", "oof_patients.csv"] + sorted(
        str(p.relative_to(run)) for p in run.glob("folds/*/predictions.csv"))
    return {n: (run / n).read_bytes() for n in names}


def write_patches(folder: Path, pids: list[str], y: np.ndarray, *, slices: tuple[int, ...] = (7, 8),
                  size: int = 64, seed: int = 0, manifest: Path | None = None, synthetic: bool = False,
                  extract: bool = True) -> Path:
    """patches.npz (and extract.json with the extraction settings, like spinedx extract) in ``folder``."""
    from spinedx.preprocess import ExtractConfig
    from spinedx.provenance import sha256_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, pid_arr, sl, lab = [], [], [], []
    for i, pid in enumerate(pids):
        for s in slices:
            x = rng.normal(0, 1, (6, size, size)).astype(np.float32)
            if y[i]:
                x[:, size // 3:2 * size // 3, size // 3:2 * size // 3] += 2.0
            xs.append(x)
            pid_arr.append(pid)
            sl.append(s)
            lab.append(int(y[i]))
    with open(folder / "patches.npz", "wb") as fh:
        np.savez(fh, x=np.stack(xs), patient_id=np.array(pid_arr, dtype=str), slice_index=np.array(sl, np.int64),
                 label=np.array(lab, np.int64), synthetic=np.array(synthetic))
    if extract:
        doc = {"config": ExtractConfig(patch_size=size, register=False).to_dict(),
               "channel_names": list(CHANNEL_NAMES), "synthetic": synthetic,
               "patches_sha256": sha256_file(folder / "patches.npz")}
        if manifest is not None:
            doc["manifest"] = {"path": str(manifest.resolve()), "sha256": sha256_file(manifest)}
        (folder / "extract.json").write_text(json.dumps(doc))
    return folder


def _model_file(backbone: str, fold: int, cache: Path) -> Path:
    """One saved untrained fold model per (backbone, fold) and process; runs copy it."""
    key = (backbone, fold)
    if key not in _MODEL_CACHE or not _MODEL_CACHE[key].is_file():
        import torch

        from spinedx.models import build_model, save_fold_model

        torch.manual_seed(10 + fold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model(backbone, pretrained="none")
        path = cache / f"{backbone}_{fold}.pt"
        cache.mkdir(parents=True, exist_ok=True)
        save_fold_model(model.eval(), path, fold, best_epoch=1)
        _MODEL_CACHE[key] = path
    return _MODEL_CACHE[key]


def record_for(patches_dir: Path, config: CVConfig) -> RunRecord:
    """The RunRecord `spinedx cv` would write for these patches and this configuration (scratch weights)."""
    return RunRecord(config=config, patches=load_patches(patches_dir).info(),
                     weights=WeightsRecord("none", None, None, f"{config.backbone} trained from scratch"),
                     device={"type": "cpu", "name": "cpu", "threads": 1, "bf16": False, "compile": False,
                             "channels_last": True},
                     channel_names=CHANNEL_NAMES,
                     provenance={"created": "2024-01-01T00:00:00+00:00", "git_commit": "abc123",
                                 "versions": {"torch": "2.14.1", "spinedx": "0.1.0"}})


def write_run_from(root: Path, pids: list[str], y: np.ndarray, prob: np.ndarray, fold: np.ndarray, *,
                   config: CVConfig, manifest: Path | None = None, synthetic: bool = False, models: bool = True,
                   seed: int = 0, extract: bool = True) -> Path:
    """patches/ and a finished run/ under ``root`` for these patients, labels, patient probabilities and folds.

    Each patient gets slices 7 and 8, slice 8 with the patient probability and slice 7 with 0.8 times it (so
    the max aggregation gives the patient probability back). ``models=False`` leaves out the fold folders (a
    run folder only ``spinedx stats`` can use).
    """
    from spinedx.evaluation.aggregate import aggregate_patients
    from spinedx.evaluation.metrics import classification_report
    from spinedx.provenance import sha256_file

    patches = write_patches(root / "patches", pids, y, seed=seed, manifest=manifest, synthetic=synthetic,
                            extract=extract)
    rf = RunFolder(root / "run")
    rf.path.mkdir(parents=True)
    rf.write_record(record_for(patches, config))
    fold_of = {p: int(k) for p, k in zip(pids, fold, strict=True)}
    rf.write_splits({
        "folds": config.folds, "seed": config.seed, "inner_val_fraction": config.inner_val_fraction,
        "n_patients": len(pids), "fold_of": fold_of,
        "splits": [{"fold": k, "val": sorted(p for p in pids if fold_of[p] == k),
                    "inner_val": sorted(p for p in pids if fold_of[p] != k)[:2]} for k in range(config.folds)]})
    slices = pd.DataFrame([{"patient_id": pid, "slice_index": s, "fold": fold_of[pid], "label": int(y[i]),
                            "probability": float(prob[i] if j == 1 else prob[i] * 0.8)}
                           for i, pid in enumerate(pids) for j, s in enumerate((7, 8))])
    if models:
        cache = root.parent / ".model_cache"
        for k in range(config.folds):
            with rf.fold_writer(k) as tmp:
                shutil.copyfile(_model_file(config.backbone, k, cache), tmp / "model.pt")
                pd.DataFrame({"epoch": [1], "train_loss": [0.7], "val_loss": [0.69], "lr": [1e-4],
                              "seconds": [1.0]}).to_csv(tmp / "history.csv", index=False)
                (tmp / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
                slices[slices["fold"] == k].to_csv(tmp / "predictions.csv", index=False)
                (tmp / "done.json").write_text(json.dumps({"fold": k, "best_epoch": 1, "notes": [],
                                                           "model_sha256": sha256_file(tmp / "model.pt")}))
    patients = aggregate_patients(slices.sort_values(["patient_id", "slice_index"]), config.aggregation,
                                  config.threshold)
    rf.write_oof(slices, patients)
    metrics = classification_report(patients["label"].to_numpy(), patients["probability"].to_numpy(),
                                    threshold=config.threshold, seed=0, n_resamples=200)
    metrics["slice"] = classification_report(slices["label"].to_numpy(), slices["probability"].to_numpy(),
                                             threshold=config.threshold, seed=0, n_resamples=200)
    metrics.update({"aggregation": config.aggregation, "folds": config.folds, "per_fold": [], "per_fold_auc": [],
                    "optimistic": config.optimistic, "synthetic": synthetic})
    rf.write_metrics(metrics)
    return rf.path


def write_run(root: Path, *, n_patients: int = 16, n_folds: int = 2, cohort: bool = True, features: bool = True,
              optimistic: bool = True, synthetic: bool = False, seed: int = 0, threshold: float = 0.5,
              aggregation: str = "max", extract: bool = True, models: bool = True, tta: str = "none") -> Path:
    """Write cohort.csv, patches/ and run/ under ``root``; return the run folder.

    Patients P000.. have label malignant when ``i % 3 == 0``; probabilities are mostly right, with a planted
    false negative (P000) and false positive (P001). ``cohort=False``: the patches record no manifest.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pids = [f"P{i:03d}" for i in range(n_patients)]
    y = np.array([1 if i % 3 == 0 else 0 for i in range(n_patients)])
    fold = np.zeros(n_patients, dtype=int)
    for cls in (0, 1):  # stratified: every fold has both classes
        fold[y == cls] = np.arange(int((y == cls).sum())) % n_folds
    prob = np.where(y == 1, rng.uniform(0.6, 0.95, n_patients), rng.uniform(0.05, 0.4, n_patients))
    prob[0] = 0.2  # malignant called benign
    prob[1] = 0.8  # benign called malignant

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
    config = tiny_config(folds=n_folds, early_stop_on="outer" if optimistic else "inner", threshold=threshold,
                         aggregation=aggregation, tta=tta)
    return write_run_from(root, pids, y, prob, fold, config=config, manifest=cohort_csv if cohort else None,
                          synthetic=synthetic, models=models, seed=seed, extract=extract)
