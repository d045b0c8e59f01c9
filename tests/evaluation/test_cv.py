"""Cross-validation: patient-grouped stratified splits, aggregation, the run folder, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.evaluation.aggregate import aggregate_patients
from spinedx.evaluation.cv import CVConfig, run_cv
from spinedx.evaluation.splits import make_splits, patient_labels


def make_patches(path: Path, n_patients: int = 20, size: int = 32, seed: int = 0) -> Path:
    """Tiny patches.npz: noise, malignant patients get a bright central blob (learnable)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 4) ** 2).astype(np.float32)
    x, pid, sl, lab = [], [], [], []
    for p in range(n_patients):
        y = p % 2
        for s in range(3):
            x.append(rng.normal(size=(6, size, size)).astype(np.float32) + 2.0 * y * blob)
            pid.append(f"P{p:03d}")
            sl.append(10 + s)
            lab.append(y)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "patches.npz", x=np.stack(x), patient_id=np.array(pid), slice_index=np.array(sl, np.int64),
             label=np.array(lab, np.int64))
    return path


def tiny_config(**kw: object) -> CVConfig:
    base = {"folds": 3, "backbone": "resnet18", "pretrained": "none", "epochs": 2, "patience": 0, "views_benign": 1,
                "views_malignant": 1, "batch_size": 16, "threads": 1, "compile": "off"}
    base.update(kw)
    return CVConfig.from_profile("quick", **base)


def test_splits_grouped_stratified_every_patient_once() -> None:
    labels = {f"p{i:02d}": int(i < 14) for i in range(40)}
    s = make_splits(labels, folds=5, seed=0, inner_val_fraction=0.2)
    vals = [set(f["val"]) for f in s["splits"]]
    assert sorted(p for v in vals for p in v) == sorted(labels)  # every patient validated exactly once
    for f in s["splits"]:
        pos = sum(labels[p] for p in f["val"])
        assert pos in (2, 3) and len(f["val"]) == 8  # 14 malignant of 40 over 5 folds
        inner = set(f["inner_val"])
        assert inner.isdisjoint(f["val"]) and len(inner) == 6
        assert 0 < sum(labels[p] for p in inner) < len(inner)
    assert s == make_splits(labels, folds=5, seed=0, inner_val_fraction=0.2)


def test_splits_need_enough_patients_and_one_label_each() -> None:
    with pytest.raises(SpinedxError, match="at least 10 patients of each class"):
        make_splits({f"p{i}": int(i < 3) for i in range(30)}, folds=10)
    with pytest.raises(SpinedxError, match="both benign and malignant"):
        patient_labels(np.array(["a", "a"]), np.array([0, 1]))


def test_aggregation_max_and_mean() -> None:
    slices = pd.DataFrame({"patient_id": ["a", "a", "a", "b", "b"], "fold": [0, 0, 0, 1, 1],
                           "label": [1, 1, 1, 0, 0], "probability": [0.1, 0.7, 0.4, 0.2, 0.45]})
    mx = aggregate_patients(slices, "max").set_index("patient_id")
    assert mx.loc["a", "probability"] == 0.7 and mx.loc["a", "prediction"] == 1
    assert mx.loc["b", "probability"] == 0.45 and mx.loc["b", "prediction"] == 0
    mean = aggregate_patients(slices, "mean", threshold=0.4).set_index("patient_id")
    assert mean.loc["a", "probability"] == pytest.approx(0.4) and mean.loc["a", "prediction"] == 1
    assert list(mx.columns) == ["fold", "label", "probability", "prediction"]


@pytest.mark.slow
def test_cli_end_to_end_outputs_complete(tmp_path: Path) -> None:
    patches = make_patches(tmp_path / "patches", n_patients=20)
    run = tmp_path / "run"
    args = ["cv", str(patches), "--out", str(run), "--folds", "3", "--profile", "quick", "--backbone", "resnet18",
            "--pretrained", "none", "--epochs", "2", "--early-stop-on", "outer", "--threads", "1", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "OPTIMISTIC" in res.output and "patient level" in res.output and "weights: none" in res.output
    for name in ("config.yaml", "splits.json", "oof_slices.csv", "oof_patients.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "folds").iterdir()) == ["0", "1", "2"]  # no temporary left
    for k in range(3):
        for name in ("model.pt", "history.csv", "curves.png", "predictions.csv", "done.json"):
            assert (run / "folds" / str(k) / name).is_file(), (k, name)
        assert (run / "folds" / str(k) / "curves.png").read_bytes()[:4] == b"\x89PNG"
        hist = pd.read_csv(run / "folds" / str(k) / "history.csv")
        assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "lr", "seconds"] and len(hist) == 2
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["format"] == 1 and cfg["optimistic"] is True and "OPTIMISTIC" in cfg["warning"]
    assert cfg["patches"]["path"] == str((patches / "patches.npz").resolve()) and len(cfg["patches"]["sha256"]) == 64
    assert cfg["patches"]["patch_size"] == 32 and cfg["patches"]["synthetic"] is False
    assert cfg["weights"]["source"] == "none" and cfg["config"]["backbone"] == "resnet18"
    assert cfg["provenance"]["versions"]["torch"] and cfg["device"]["type"] == "cpu"
    slices = pd.read_csv(run / "oof_slices.csv")
    assert list(slices.columns) == ["patient_id", "slice_index", "fold", "label", "probability"] and len(slices) == 60
    patients = pd.read_csv(run / "oof_patients.csv")
    assert list(patients.columns) == ["patient_id", "fold", "label", "probability", "prediction"]
    assert len(patients) == 20 and patients["patient_id"].is_unique
    top = slices.groupby("patient_id")["probability"].max()
    np.testing.assert_allclose(patients.set_index("patient_id")["probability"].loc[top.index], top)
    splits = json.loads((run / "splits.json").read_text())
    for f in splits["splits"]:
        assert set(slices.loc[slices.fold == f["fold"], "patient_id"]) == set(f["val"])
    m = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "auc", "tp", "tn", "fp", "fn",
                "accuracy_low", "sensitivity_high", "auc_low", "auc_high"):
        assert key in m and key in m["slice"], key
    assert m["tp"] + m["tn"] + m["fp"] + m["fn"] == 20 and m["slice"]["n"] == 60
    assert len(m["per_fold_auc"]) == 3 and m["optimistic"] is True and "OPTIMISTIC" in m["warning"]
    assert m["threshold"] == 0.5 and m["aggregation"] == "max"
    assert m["auc"] > 0.7  # the blob is easy: the pipeline learns
    # the baselines on the same folds, next to the model in metrics.json and in the summary
    assert m["baselines"]["radiomics"]["status"] == "ok" and m["baselines"]["radiomics"]["n"] == 20
    assert m["baselines"]["features"]["status"] == "absent"  # these patches record no manifest
    assert "radiomics baseline (same folds): auc" in res.output and "model vs radiomics baseline: the CNN" in res.output
    assert (run / "baselines" / "baselines.json").is_file() and (run / "baselines" / "radiomics_patients.csv").is_file()


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_interrupted_fold_gives_same_results(tmp_path: Path) -> None:
    patches = make_patches(tmp_path / "patches", n_patients=18, size=32, seed=1)
    cfg = tiny_config(epochs=1)
    full = run_cv(patches, tmp_path / "full", cfg, progress=False)

    def kill_after_first(k: int) -> None:
        if k == 0:
            raise _Killed

    with pytest.raises(_Killed):
        run_cv(patches, tmp_path / "resumed", cfg, progress=False, on_fold_done=kill_after_first)
    fold0 = tmp_path / "resumed" / "folds" / "0" / "model.pt"
    assert fold0.is_file() and sorted(p.name for p in (tmp_path / "resumed" / "folds").iterdir()) == ["0"]
    stamp = fold0.stat().st_mtime_ns
    trained: list[int] = []
    resumed = run_cv(patches, tmp_path / "resumed", cfg, progress=False, on_fold_done=trained.append)
    assert trained == [1, 2] and fold0.stat().st_mtime_ns == stamp  # fold 0 was not retrained
    a = pd.read_csv(tmp_path / "full" / "oof_slices.csv")
    b = pd.read_csv(tmp_path / "resumed" / "oof_slices.csv")
    pd.testing.assert_frame_equal(a, b)
    assert resumed["auc"] == full["auc"] and resumed["tp"] == full["tp"]
    # the same folder with other settings is refused rather than silently mixed
    with pytest.raises(SpinedxError, match="other settings"):
        run_cv(patches, tmp_path / "resumed", tiny_config(epochs=3), progress=False)


def test_bad_patches_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(SpinedxError, match="patches.npz not found"):
        run_cv(tmp_path, tmp_path / "run", tiny_config())
    np.savez(tmp_path / "patches.npz", x=np.zeros((2, 3, 8, 8), np.float32), patient_id=np.array(["a", "b"]),
             slice_index=np.array([0, 0]), label=np.array([0, 1]))
    with pytest.raises(SpinedxError, match=r"\(N, 6, P, P\)"):
        run_cv(tmp_path, tmp_path / "run", tiny_config())
    res = CliRunner().invoke(app, ["cv", str(tmp_path), "--out", str(tmp_path / "r"), "--profile", "fast"])
    assert res.exit_code == 2 and "unknown profile" in res.output


def test_profiles() -> None:
    paper = CVConfig.from_profile("paper")
    assert (paper.epochs, paper.views_benign, paper.views_malignant, paper.lr, paper.betas, paper.batch_size,
            paper.folds, paper.backbone, paper.threshold, paper.aggregation) == (
        100, 20, 40, 1e-4, (0.5, 0.999), 32, 10, "resnet50", 0.5, "max")
    quick = CVConfig.from_profile("quick", epochs=None, seed=3)
    assert quick.epochs < paper.epochs and quick.views_benign < 20 and quick.seed == 3
    assert (quick.lr, quick.betas, quick.batch_size, quick.backbone) == (paper.lr, paper.betas, 32, "resnet50")
    assert not quick.optimistic and CVConfig.from_profile("quick", early_stop_on="outer").optimistic
    with pytest.raises(SpinedxError, match="aggregation"):
        CVConfig.from_profile("paper", aggregation="median")


@pytest.mark.slow
def test_early_stop_none_keeps_every_fold_last_epoch(tmp_path: Path) -> None:
    # the cpu profile's setting: every epoch runs, the last weights are scored and saved, the inner patients stay
    # held out (the splits are those of "inner") and the curves mark the kept epoch
    patches = make_patches(tmp_path / "p", n_patients=18)
    run_cv(patches, tmp_path / "run", tiny_config(epochs=3, patience=1, early_stop_on="none"), progress=False)
    inner_run = tmp_path / "inner"
    run_cv(patches, inner_run, tiny_config(epochs=3, patience=1), progress=False)
    assert json.loads((tmp_path / "run" / "splits.json").read_text()) == json.loads(
        (inner_run / "splits.json").read_text())
    for k in range(3):
        done = json.loads((tmp_path / "run" / "folds" / str(k) / "done.json").read_text())
        hist = pd.read_csv(tmp_path / "run" / "folds" / str(k) / "history.csv")
        assert done["epochs_run"] == 3 and done["best_epoch"] == 3
        assert done["best_val_loss"] == pytest.approx(hist["val_loss"].iloc[-1])
        assert done["n_early_stop_slices"] > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["early_stop_on"] == "none" and metrics["optimistic"] is False
