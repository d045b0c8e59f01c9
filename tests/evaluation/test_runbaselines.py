"""Baselines in every run: fitted on the run's own folds, cached in the run folder, compared with the model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runhelpers import write_run

from spinedx.baselines import delong_test
from spinedx.cli.cvview import summary_lines
from spinedx.evaluation.cv import finish_run
from spinedx.evaluation.metrics import classification_report
from spinedx.evaluation.runbaselines import comparison_sentence, verdict
from spinedx.runfolder import RunFolder


@pytest.fixture(scope="module")
def finished(module_tmp: Path) -> tuple[Path, dict]:
    run = write_run(module_tmp, n_patients=24, n_folds=3, optimistic=False)
    return run, finish_run(run)


def test_baselines_use_the_runs_folds_and_its_aggregation(finished: tuple[Path, dict]) -> None:
    run, metrics = finished
    rf = RunFolder(run)
    splits = rf.read_splits()
    doc, tables = rf.read_baselines()
    assert set(tables) == {"radiomics", "features"}
    for name, table in tables.items():
        assert sorted(table["patient_id"]) == splits.patients
        assert (table["fold"] == table["patient_id"].map(splits.fold_of)).all(), name  # the run's folds
        assert ((table["probability"] >= 0.5).astype(int) == table["prediction"]).all()
    assert doc["baselines"]["radiomics"]["n_features"] == 6 * 28
    assert set(doc["baselines"]["radiomics"]["chosen_c"]) == {"0", "1", "2"}  # C chosen inside each fold
    b = metrics["baselines"]["radiomics"]
    ref = classification_report(tables["radiomics"]["label"], tables["radiomics"]["probability"], seed=0)
    for key in ("auc", "auc_low", "auc_high", "sensitivity", "sensitivity_low", "specificity_high", "tp", "fn"):
        assert b[key] == pytest.approx(ref[key]), key
    assert len(b["per_fold_auc"]) == 3


def test_paired_comparison_is_delong_on_the_same_patients(finished: tuple[Path, dict]) -> None:
    run, metrics = finished
    model = pd.read_csv(run / "oof_patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    _, tables = RunFolder(run).read_baselines()
    for name, table in tables.items():
        t = table.set_index("patient_id").loc[model.index]
        ref = delong_test(model["label"], model["probability"], t["probability"])
        vs = metrics["baselines"][name]["vs_model"]
        assert vs["n_patients"] == len(model)
        for key in ("difference", "difference_low", "difference_high", "p_value"):
            assert vs[key] == pytest.approx(ref[key]), (name, key)
        assert vs["verdict"] == verdict(ref) and vs["sentence"] == comparison_sentence(name, ref)
    # the planted patches are easy for first-order statistics: the planted model does not beat the radiomics
    radiomics = metrics["baselines"]["radiomics"]
    assert radiomics["auc"] > metrics["auc"]
    assert radiomics["vs_model"]["sentence"].startswith("the CNN does not exceed the radiomics baseline")
    lines = summary_lines(metrics)
    assert any(ln.startswith("radiomics baseline (same folds): auc") for ln in lines)
    assert any("model vs radiomics baseline: the CNN does not exceed" in ln for ln in lines)


def test_baselines_are_cached_and_refitted_when_their_inputs_change(finished: tuple[Path, dict]) -> None:
    run, metrics = finished
    rf = RunFolder(run)
    doc_path = rf.baselines_dir() / "baselines.json"
    stamp = doc_path.stat().st_mtime_ns
    again = finish_run(run)  # a resumed run re-finishes: nothing refitted
    assert doc_path.stat().st_mtime_ns == stamp
    assert again["baselines"]["radiomics"]["auc"] == metrics["baselines"]["radiomics"]["auc"]
    # another aggregation rule (written by hand here) changes the cache key: refitted
    doc = json.loads(doc_path.read_text())
    doc["key"]["aggregation"] = "mean"
    doc_path.write_text(json.dumps(doc))
    finish_run(run)
    assert json.loads(doc_path.read_text())["key"]["aggregation"] == "max"


def test_feature_regression_absent_with_the_reason(tmp_path: Path) -> None:
    no_manifest = finish_run(write_run(tmp_path / "a", n_patients=12, n_folds=2, cohort=False))
    feat = no_manifest["baselines"]["features"]
    assert feat["status"] == "absent" and "no cohort manifest" in feat["reason"]
    assert no_manifest["baselines"]["radiomics"]["status"] == "ok"
    assert any(ln.startswith("feature regression: not fitted (the patches record no cohort manifest")
               for ln in summary_lines(no_manifest))
    run = write_run(tmp_path / "b", n_patients=12, n_folds=2)
    manifest = run.parent / "cohort.csv"
    manifest.write_text(manifest.read_text() + "\n")  # edited after extraction
    changed = finish_run(run)["baselines"]["features"]
    assert changed["status"] == "absent" and "changed since the patches were extracted" in changed["reason"]
    no_features = finish_run(write_run(tmp_path / "c", n_patients=12, n_folds=2, features=False))
    assert "no feature_* columns" in no_features["baselines"]["features"]["reason"]


@pytest.mark.parametrize("diff, low, high, expected", [
    (-0.05, -0.12, 0.02, "the CNN does not exceed the radiomics baseline"),
    (0.0, -0.1, 0.1, "the CNN does not exceed the radiomics baseline"),
    (0.03, -0.02, 0.08, "the CNN is not shown to exceed the radiomics baseline"),
    (0.08, 0.02, 0.14, "the CNN exceeds the radiomics baseline"),
    (-0.2, -0.3, -0.1, "the CNN is worse than the radiomics baseline"),
])
def test_comparison_sentence_cannot_flatter_the_model(diff: float, low: float, high: float, expected: str) -> None:
    test = {"auc_a": 0.8, "auc_b": 0.8 - diff, "difference": diff, "difference_low": low, "difference_high": high,
            "p_value": 0.2}
    text = comparison_sentence("radiomics", test)
    assert text.startswith(expected)
    assert f"difference {diff:+.3f}, 95% CI {low:+.3f} to {high:+.3f}, DeLong p 0.200" in text
    words = {"exceeds": "exceeds", "worse": "is worse than", "does not exceed": "does not exceed",
             "not shown": "is not shown to exceed"}
    assert expected == f"the CNN {words[verdict(test)]} the radiomics baseline"


def test_comparison_without_an_auc_says_so() -> None:
    test = {"difference": math.nan, "difference_low": math.nan, "difference_high": math.nan, "p_value": math.nan}
    assert verdict(test) == "n/a" and "cannot be compared" in comparison_sentence("features", test)


def test_baseline_record_holds_its_timing(finished: tuple[Path, dict]) -> None:
    """The seconds spent are recorded (docs/training.md quotes them from a real run)."""
    run, _ = finished
    doc, _ = RunFolder(run).read_baselines()
    rad = doc["baselines"]["radiomics"]
    assert rad["seconds_features"] >= 0 and rad["seconds_fit"] > 0
    assert np.isfinite(doc["baselines"]["features"]["seconds_fit"])


def test_radiomics_features_are_computed_once_per_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baselines and the domain reference (issue 20) need the same features: finish_run computed them twice."""
    import spinedx.baselines.radiomics as radiomics

    calls = []
    real = radiomics.radiomics_features

    def counted(x, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(len(x))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(radiomics, "radiomics_features", counted)
    run = write_run(tmp_path / "run", n_patients=12, n_folds=2, optimistic=False)
    finish_run(run)
    assert len(calls) == 1
    assert (run / "domain.json").is_file()
    doc, _ = RunFolder(run).read_baselines()
    assert doc["baselines"]["radiomics"]["seconds_features"] > 0  # the time is still recorded
