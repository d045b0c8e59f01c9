"""Calibration: the map (Platt, isotonic), its record, how calibrated a probability is, and the run's honest
per-fold fit (inner-validation predictions, metrics.json, calibration.json, conformal.json, oof_decisions.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runhelpers import write_patches, write_run

from spinedx.decision.calibration import (
    Calibrator,
    calibration_report,
    calibration_stats,
    choose_method,
    expected_calibration_error,
    fit_calibrator,
    logit,
)
from spinedx.decision.conformal import ConformalThresholds
from spinedx.errors import SpinedxError
from spinedx.evaluation.decisioncv import decision_summary_lines, evaluate_decisions
from spinedx.runfolder import RunFolder, RunFolderError


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True probabilities, labels drawn from them, and a model's overconfident, shifted probabilities:
    logit(p_model) = 2 * logit(p_true) - 1, so Platt's inverse is a = 0.5, b = 0.5."""
    rng = np.random.default_rng(seed)
    p_true = 1 / (1 + np.exp(-rng.normal(-0.5, 1.5, n)))
    y = (rng.random(n) < p_true).astype(int)
    p_model = 1 / (1 + np.exp(-(2 * logit(p_true) - 1)))
    return p_true, y, p_model


def test_platt_recovers_a_known_miscalibration_and_improves_held_out_scores() -> None:
    _, y, p = _overconfident(4000, 0)
    cal, how = fit_calibrator(p, y, "platt")
    assert how["method"] == "platt" and cal.method == "platt"
    assert cal.params["a"] == pytest.approx(0.5, abs=0.06) and cal.params["b"] == pytest.approx(0.5, abs=0.1)
    _, yt, pt = _overconfident(4000, 1)
    before, after = calibration_stats(yt, pt), calibration_stats(yt, cal.apply(pt))
    assert after["brier"] < before["brier"] and after["ece"] < before["ece"] / 2
    assert before["slope"] == pytest.approx(0.5, abs=0.07) and after["slope"] == pytest.approx(1.0, abs=0.12)
    assert abs(after["intercept"]) < 0.1


def test_platt_params_mean_the_documented_formula() -> None:
    cal = Calibrator("platt", {"a": 1.7, "b": -0.4})
    p = np.array([1e-9, 0.01, 0.3, 0.5, 0.92, 1.0])
    q = np.clip(p, 1e-6, 1 - 1e-6)
    assert np.allclose(cal.apply(p), 1 / (1 + np.exp(-(1.7 * np.log(q / (1 - q)) - 0.4))))


def test_isotonic_map_is_scikit_learns_with_clipping() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.9, 300)
    y = (rng.random(300) < p ** 2).astype(int)
    cal, _ = fit_calibrator(p, y, "isotonic")
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    test = np.concatenate([rng.random(500), [0.0, 0.05, 0.95, 1.0]])  # outside the fitted range too
    assert np.allclose(cal.apply(test), ref.predict(test))


def test_auto_chooses_isotonic_only_when_it_scores_better() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(10), 300)
    # a step: malignant rate 0.05 below 0.5, 0.95 above; a logistic curve cannot follow it, isotonic can
    p = rng.random(3000)
    y = (rng.random(3000) < np.where(p < 0.5, 0.05, 0.95)).astype(int)
    assert choose_method(p, y, groups)["method"] == "isotonic"
    # logistic-shaped and small: Platt's two numbers win
    _, y2, p2 = _overconfident(120, 6)
    how = choose_method(p2, y2, np.arange(120) % 10)
    assert how["method"] == "platt" and how["brier_cv"]["platt"] < how["brier_cv"]["isotonic"]


def test_record_round_trip_through_json_and_refusals() -> None:
    for cal in (Calibrator("platt", {"a": 0.8, "b": 0.1}), Calibrator("identity", {}),
                Calibrator("isotonic", {"x": [0.1, 0.5, 0.9], "y": [0.0, 0.4, 1.0]})):
        back = Calibrator.from_dict(json.loads(json.dumps({"format": 1, **cal.to_dict()})))
        assert back == cal
    for bad in ({"method": "beta", "params": {}}, {"method": "platt", "params": {"a": 1.0}},
                {"method": "platt", "params": {"a": float("inf"), "b": 0}},
                {"method": "isotonic", "params": {"x": [0.1, 0.5], "y": [0.6, 0.2]}},  # not non-decreasing
                {"method": "isotonic", "params": {"x": [0.1, 0.5], "y": [0.2]}},
                {"method": "platt", "params": {"a": 1, "b": 0}, "format": 1, "extra": 0}, {"params": {}}):
        with pytest.raises(SpinedxError) as exc:
            Calibrator.from_dict(bad, where="run/calibration.json")
        assert exc.value.where == "run/calibration.json"


def test_fit_refuses_too_few_of_a_label() -> None:
    with pytest.raises(SpinedxError, match="two patients of each label"):
        fit_calibrator(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1]), "platt")


def test_statistics_of_a_calibrated_probability_and_their_intervals() -> None:
    p, y, _ = _overconfident(3000, 7)
    s = calibration_stats(y, p)  # the true probability: calibrated
    assert abs(s["intercept"]) < 0.1 and s["slope"] == pytest.approx(1.0, abs=0.1) and s["ece"] < 0.03
    assert expected_calibration_error(np.array([0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0])) == 0.0
    assert expected_calibration_error(np.array([1, 1]), np.array([0.25, 0.25])) == pytest.approx(0.75)
    r = calibration_report(y[:300], p[:300], n_resamples=100, seed=1)
    for k in ("brier", "intercept", "slope", "ece"):
        assert r[f"{k}_low"] <= r[k] <= r[f"{k}_high"]
    # perfectly separated resamples have no logistic fit: no interval, never a 1e15 estimate
    sep = calibration_report(np.array([0] * 10 + [1] * 10), np.r_[np.full(10, 0.2), np.full(10, 0.8)],
                             n_resamples=50)
    assert np.isnan(sep["slope"]) and np.isnan(sep["slope_low"]) and sep["brier"] == pytest.approx(0.04)


def _fold_data(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold patients (3 folds) and inner-validation calibration rows predicted by each fold model."""
    rng = np.random.default_rng(seed)
    n = 90
    pids = [f"P{i:03d}" for i in range(n)]
    y = (np.arange(n) % 5 < 2).astype(int)
    fold = np.arange(n) % 3  # every fold holds both labels
    _, _, p = _overconfident(n, seed)
    p = np.where(y == 1, np.maximum(p, rng.uniform(0.3, 0.99, n)), np.minimum(p, rng.uniform(0.01, 0.7, n)))
    patients = pd.DataFrame({"patient_id": pids, "fold": fold, "label": y, "probability": p})
    rows = []
    for model in range(3):
        for i in np.flatnonzero(fold != model)[::2]:  # half of the model's training patients held out as inner
            rows.append({"model": model, "patient_id": pids[i], "patient_fold": int(fold[i]), "label": int(y[i]),
                         "probability": float(np.clip(p[i] + rng.normal(0, 0.05), 0.001, 0.999))})
    return patients, pd.DataFrame(rows)


@pytest.mark.slow
def test_each_fold_is_calibrated_without_its_own_labels() -> None:
    patients, data = _fold_data()
    fit = evaluate_decisions(patients, data, 0.1, 0.5, seed=0)
    assert fit.calibration["status"] == "ok" and fit.conformal["status"] == "ok"
    # change every label (and probability) the calibration data hold of fold-0 patients: fold 0's calibrated
    # probabilities and sets cannot move, the other folds' do
    changed = data.copy()
    m = changed["patient_fold"] == 0
    changed.loc[m, "label"] = 1 - changed.loc[m, "label"]
    changed.loc[m, "probability"] = 1 - changed.loc[m, "probability"]
    fit2 = evaluate_decisions(patients, changed, 0.1, 0.5, seed=0)
    f0 = (patients["fold"] == 0).to_numpy()
    assert fit.table is not None and fit2.table is not None
    assert np.array_equal(fit.table["probability"][f0], fit2.table["probability"][f0])
    assert list(fit.table["conformal_set"][f0]) == list(fit2.table["conformal_set"][f0])
    assert not np.allclose(fit.table["probability"][~f0], fit2.table["probability"][~f0])
    # the deployed calibrator is fitted on all of the data
    assert fit.calibrator == fit_calibrator(data["probability"], data["label"], "auto", groups=data["model"])[0]
    assert fit.calibration["before"]["n"] == len(patients) and len(fit.conformal["curve"]) >= 5
    lines = decision_summary_lines({"calibration": fit.calibration, "conformal": fit.conformal})
    assert "referral rate" in lines[0] and "accepted-patient accuracy" in lines[0]
    assert lines[1].startswith(f"calibration ({fit.calibrator.method}")


@pytest.mark.slow
def test_without_inner_predictions_calibration_is_unavailable(tmp_path: Path) -> None:
    from spinedx.evaluation.finish import finish_run

    run = write_run(tmp_path, n_patients=12, cohort=False, optimistic=False)
    rf = RunFolder(run)
    rf.write_calibration(Calibrator("platt", {"a": 1.0, "b": 0.0}))  # a stale fit must not survive the finish
    m = finish_run(run)
    for block in ("calibration", "conformal"):
        assert m[block]["status"] == "unavailable" and "inner_predictions.csv" in m[block]["reason"]
    assert rf.read_calibration() is None and rf.read_conformal() is None and rf.read_oof_decisions() is None
    assert decision_summary_lines(m) == [f"conformal refer: unavailable ({m['conformal']['reason']})"]


def test_run_folder_refuses_a_damaged_or_foreign_record(tmp_path: Path) -> None:
    run = write_run(tmp_path, n_patients=12, cohort=False, models=False)
    rf = RunFolder(run)
    rf.write_conformal(ConformalThresholds(0.1, {"benign": 0.4, "malignant": 0.5}))
    assert ConformalThresholds.from_dict(rf.read_conformal() or {}).thresholds["malignant"] == 0.5
    rf.calibration_path.write_text(json.dumps({"format": 2, "method": "platt", "params": {"a": 1, "b": 0}}))
    with pytest.raises(RunFolderError, match="format 2"):
        rf.read_calibration()
    rf.calibration_path.write_text("{not json")
    with pytest.raises(RunFolderError) as exc:
        rf.read_calibration()
    assert exc.value.where == str(rf.calibration_path)


def test_alpha_outside_the_interval_is_one_error_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinedx.cli import app

    patches = write_patches(tmp_path / "patches", [f"P{i}" for i in range(8)], np.arange(8) % 2, size=32)
    for alpha in ("0.5", "0", "0.7"):
        res = CliRunner().invoke(app, ["cv", str(patches), "--out", str(tmp_path / "run"), "--alpha", alpha])
        assert res.exit_code == 2
        assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1
        assert "alpha must be a number in (0, 0.5)" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cv_stores_inner_predictions_and_deploys_its_fits(tmp_path: Path) -> None:
    from spinedx.cli.cvview import summary_lines
    from spinedx.evaluation.cv import run_cv
    from spinedx.training.config import CVConfig

    pids = [f"P{i:03d}" for i in range(24)]
    patches = write_patches(tmp_path / "patches", pids, np.arange(24) % 2, size=32, seed=1)
    cfg = CVConfig.from_profile("quick", folds=2, backbone="resnet18", pretrained="none", epochs=1, patience=0,
                                views_benign=1, views_malignant=1, compile="off", inner_val_fraction=0.4,
                                early_stop_on="none", alpha=0.2)
    m = run_cv(patches, tmp_path / "run", cfg)
    rf = RunFolder(tmp_path / "run")
    splits = rf.read_splits()
    for s in splits.splits:
        inner = rf.read_inner_predictions(s.fold, splits)
        assert inner is not None and set(inner["patient_id"]) == set(s.inner_val)
        assert not set(inner["patient_id"]) & set(s.val)
    cal = Calibrator.from_dict(rf.read_calibration() or {})
    thr = ConformalThresholds.from_dict(rf.read_conformal() or {})
    assert thr.alpha == 0.2 and m["conformal"]["deployed"] == thr.thresholds
    assert m["calibration"]["method"] == cal.method and m["calibration"]["status"] == "ok"
    table = rf.read_oof_decisions()
    oof = rf.read_oof_patients()
    assert table is not None
    merged = table.merge(oof, on="patient_id")
    assert np.allclose(merged["probability_uncalibrated"], merged["probability_y"])
    text = "\n".join(summary_lines(m))
    assert "conformal refer (alpha 0.2, out-of-fold): referral rate" in text and "calibration (" in text
    # the report shows both, with the statistics table and the curve
    from spinedx.report import build_report

    html = build_report(tmp_path / "run", gallery_per_group=0, bootstrap_resamples=50, progress=False).read_text()
    assert 'id="calibration-table"' in html and 'id="conformal-table"' in html
    assert "model, calibrated (out of fold)" in html and "coverage, malignant patients" in html
    assert (tmp_path / "run" / "report_conformal.csv").is_file()
    assert (tmp_path / "run" / "report_calibration.csv").is_file()
