"""POST /predict equals `spinedx predict` on the same inputs, and both the run's out-of-fold probabilities (issue 20:
reported = deployed); the saved manifest feeds `spinedx extract`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.cohort import load_manifest
from spinedx.explain import DEFAULT_METHOD, method_caption

from .conftest import BASE_URL, key_of


@pytest.mark.slow
def test_predict_equals_the_cli(manifest: Path, settings_for, ws_run: Path, tmp_path: Path) -> None:
    from spinedx.serve import create_app

    rec = load_manifest(manifest, draft=True).cases[0]
    app = create_app(settings_for(manifest, model=ws_run))
    with TestClient(app, base_url=BASE_URL) as client:
        assert app.state.ws.predictor.wait_ready(600)  # the ONNX Runtime engine is built in the background
        key = key_of(client, rec.patient_id)
        model = client.get("/api/health").json()["model"]
        assert model["folds"] == [0, 1] and model["engine"] == "onnxruntime (fp32)"  # the warm engine
        assert model["oof_inference_note"] is None  # the run's out-of-fold probabilities: the same engine, fp32
        r = client.post(f"/api/cases/{key}/predict")
        assert r.status_code == 200, r.text
        got = r.json()
        stored_dir = manifest.with_name(manifest.stem + ".predictions") / rec.patient_id
        stored = json.loads((stored_dir / "prediction.json").read_text())
        assert stored["engine"] == "onnxruntime"
        assert stored["inference"] == {"engine": "onnxruntime", "precision": "fp32", "views": 9}
        assert all(s["overlay"] is None for s in got["slices"])  # the fast answer: no heatmaps yet
        assert got["explanation"] is None
        r = client.post(f"/api/cases/{key}/explain")
        assert r.status_code == 200, r.text
        explained = r.json()
        # the overlays are the default explanation method's (one place decides: spinedx.explain.DEFAULT_METHOD)
        assert explained["explanation"]["method"] == DEFAULT_METHOD
        assert explained["explanation"]["caption"] == method_caption(DEFAULT_METHOD)
        assert json.loads((stored_dir / "explanation.json").read_text())["method"] == DEFAULT_METHOD
        assert explained["fold_probabilities"] == pytest.approx(got["fold_probabilities"], abs=1e-6)
        got = explained
        cases = {c["patient_id"]: c for c in client.get("/api/cases").json()}
        assert cases[rec.patient_id]["predicted"] is True
        assert client.get(f"/api/cases/{key}").json()["prediction"]["probability"] == got["probability"]
        overlay = client.get(got["slices"][0]["overlay"])
        assert overlay.status_code == 200 and overlay.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(f"/api/cases/{key}/prediction/..%2Fcohort.csv").status_code == 404
        # a new annotation makes the stored prediction stale
        new_box = [rec.box[0] + 2, rec.box[1], rec.box[2] + 2, rec.box[3]]
        assert client.put(f"/api/cases/{key}/annotation", json={"box": new_box}).status_code == 200
        assert {c["patient_id"]: c for c in client.get("/api/cases").json()}[rec.patient_id]["predicted"] is False

    out = tmp_path / "cli_pred"
    res = CliRunner().invoke(cli, ["predict", "--model", str(ws_run), "--t1", str(rec.t1), "--t2", str(rec.t2),
                                   "--lesion-slices", ";".join(map(str, rec.lesion_slices)),
                                   "--box", ",".join(map(str, rec.box)), "--out", str(out), "--id", rec.patient_id])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "prediction.json").read_text())
    # one contract: the API's answer holds prediction.json's decision fields (calibrated probability beside the
    # uncalibrated ensemble mean)
    assert got["probability"] == pytest.approx(doc["probability"], abs=1e-5)
    assert got["probability_uncalibrated"] == pytest.approx(doc["patient_probability"], abs=1e-5)
    for key in ("decision", "refer_reasons", "conformal_set", "alpha", "trained_on"):
        assert got[key] == doc[key], key
    assert got["decision"] in ("benign", "malignant", "refer") and got["trained_on"]["synthetic"] is True
    assert got["call"] == doc["call"] and got["threshold"] == doc["threshold"]
    assert got["fold_probabilities"] == pytest.approx([doc["spread"]["per_fold"][k] for k in ("0", "1")], abs=1e-5)
    assert [s["probability"] for s in got["slices"]] == pytest.approx(
        [s["probability"] for s in doc["slices"]], abs=1e-5)
    assert [s["slice_index"] for s in got["slices"]] == list(rec.lesion_slices)
    assert "research use only" in got["research_use_only"]
    # both averaged over the run's test-time views (the workstation's engine and the CLI's alike)
    assert got["test_time_views"] == 9 and doc["test_time_augmentation"]["n_views"] == 9


@pytest.mark.slow
def test_saved_manifest_feeds_extract_with_the_same_patches(manifest: Path, settings_for, tmp_path: Path) -> None:
    from spinedx.serve import create_app

    original = load_manifest(manifest, draft=True)
    with TestClient(create_app(settings_for(manifest)), base_url=BASE_URL) as client:
        for c in original.cases[:2]:  # clear, then annotate again through the API as the page does
            key = key_of(client, c.patient_id)
            assert client.put(f"/api/cases/{key}/annotation",
                              json={"lesion_slices": None, "box": None, "label": None}).status_code == 200
            body = {"label": c.label, "lesion_slices": list(c.lesion_slices), "box": list(c.box)}
            assert client.put(f"/api/cases/{key}/annotation", json=body).status_code == 200
    outs = []
    for name, path in (("api", manifest), ("orig", original.path)):
        out = tmp_path / name
        res = CliRunner().invoke(cli, ["extract", str(path), "--out", str(out), "--no-register"])
        assert res.exit_code == 0, res.output
        outs.append(np.load(out / "patches.npz"))
    assert np.array_equal(outs[0]["x"], outs[1]["x"])
    assert np.array_equal(outs[0]["patient_id"], outs[1]["patient_id"])
    assert np.array_equal(outs[0]["label"], outs[1]["label"])


def _oof(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.read_csv(run / "oof_patients.csv", dtype={"patient_id": str}),
            pd.read_csv(run / "oof_slices.csv", dtype={"patient_id": str}))


@pytest.mark.slow
def test_predict_with_the_fold_that_held_a_patient_out_reproduces_its_oof_probability(
        ws_cohort: Path, ws_run: Path, tmp_path: Path) -> None:
    """Issue 20: cv's out-of-fold probabilities took another route (bf16 autocast on CPUs with AVX512-BF16) than
    predict, the workstation and the bundle (fp32): the reported performance was not the deployed model's. A
    cohort patient's DICOM and box through `spinedx predict --fold K` (K the fold that held it out) now give its
    out-of-fold probability, slice by slice, within 1e-5."""
    from spinedx.inference import load_model
    from spinedx.predict import predict_case
    from spinedx.runfolder import RunFolder

    patients, slices = _oof(ws_run)
    assert patients["probability"].std() > 1e-3  # trained models, not constant outputs: the check means something
    cases = {c.patient_id: c for c in load_manifest(ws_cohort / "cohort.csv", draft=True).cases}
    for _, row in patients.groupby("fold").head(1).iterrows():  # one patient of each fold model
        c = cases[row["patient_id"]]
        res = predict_case(ws_run, c.t1, c.t2, c.lesion_slices, c.box, folds=[int(row["fold"])], explain=False)
        want = slices[slices["patient_id"] == row["patient_id"]].sort_values("slice_index")
        assert res.slice_index == want["slice_index"].tolist()
        np.testing.assert_allclose(res.slice_probability[0], want["probability"].to_numpy(), atol=1e-5, rtol=0)
        assert res.probability == pytest.approx(float(row["probability"]), abs=1e-5)
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", "--model", str(ws_run), "--t1", str(c.t1), "--t2", str(c.t2),
                                   "--lesion-slices", ";".join(map(str, c.lesion_slices)),
                                   "--box", ",".join(map(str, c.box)), "--out", str(out), "--fold", str(row["fold"])])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "prediction.json").read_text())
    assert doc["patient_probability"] == pytest.approx(float(row["probability"]), abs=1e-5)
    assert "note: answered by fold model(s)" in res.output and "bf16" not in res.output
    # the run records how its out-of-fold probabilities were computed
    rf = RunFolder(ws_run)
    for k in (0, 1):
        assert rf.read_done(k)["inference"] == {"engine": "torch", "precision": "fp32", "views": 9}
        assert rf.read_done(k)["numerics"]["bf16"] is False  # bf16: auto trains in fp32 on every CPU
    oof = load_model(ws_run).oof_inference
    assert oof["precision"] == "fp32" and oof["recorded"] is True and oof["note"] is None
    assert doc["model"]["oof_inference"] == oof


@pytest.mark.slow
def test_every_engine_gives_the_out_of_fold_probabilities(ws_run: Path, tmp_path: Path) -> None:
    """The run's out-of-fold probabilities = the torch engine = ONNX Runtime on the run = the bundle (torch) = the
    bundle's model.onnx, on the run's own patches, within 1e-5."""
    from spinedx.inference import export_bundle, load_model, make_engine
    from spinedx.runfolder import RunFolder, load_patches

    _, slices = _oof(ws_run)
    want = {(p, int(s)): (int(f), float(v)) for p, s, f, v in
            slices[["patient_id", "slice_index", "fold", "probability"]].itertuples(index=False)}
    ps = load_patches(RunFolder(ws_run).read_record().patches.path)
    rows = np.array([want[(p, int(s))][0] for p, s in zip(ps.patient_id, ps.slice_index, strict=True)])
    oof = np.array([want[(p, int(s))][1] for p, s in zip(ps.patient_id, ps.slice_index, strict=True)])
    run = load_model(ws_run)
    bundle = load_model(export_bundle(ws_run, tmp_path / "bundle", onnx=True).path)
    assert run.folds == bundle.folds == [0, 1]
    engines = {"torch, run": make_engine(run), "onnxruntime, run": make_engine(run, "onnx"),
               "torch, bundle": make_engine(bundle), "onnxruntime, bundle model.onnx": make_engine(bundle, "onnx")}
    for name, eng in engines.items():
        got = eng.predict(ps.x)[rows, np.arange(len(rows))]  # each slice by the fold model that held it out
        assert float(np.max(np.abs(got - oof))) <= 1e-5, name


@pytest.mark.slow
def test_a_real_cohort_read_by_a_synthetic_model_says_so(manifest: Path, settings_for, ws_run: Path,
                                                         tmp_path: Path) -> None:
    """Issue 20: serving a real cohort with a run trained on a synthetic phantom, /api/health said "synthetic": false
    and nothing on the page said what the model was trained on."""
    import pandas as pd

    from spinedx.serve import create_app

    real = tmp_path / "real" / "cohort.csv"
    real.parent.mkdir()
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["synthetic"] = "0"  # the same images, declared a real cohort
    table.to_csv(real, index=False)
    rec = load_manifest(real, draft=True).cases[0]
    app = create_app(settings_for(real, model=ws_run))
    with TestClient(app, base_url=BASE_URL) as client:
        health = client.get("/api/health").json()
        assert health["cohort_synthetic"] is False and health["model_synthetic"] is True
        assert health["synthetic"] is True and health["trained_on"]["synthetic"] is True
        assert health["model"]["trained_on"]["n_patients"] == 8
        assert health["model"]["decision_missing"] == [] or "calibration.json" in health["model"]["decision_warning"]
        key = key_of(client, rec.patient_id)
        got = client.post(f"/api/cases/{key}/predict").json()
        assert got["synthetic_training"] is True and got["trained_on"]["synthetic"] is True
        assert got["decision"] in ("benign", "malignant", "refer")
        assert (got["decision"] == "refer") == bool(got["refer_reasons"])
        assert client.get(f"/api/cases/{key}").json()["prediction"]["decision"] == got["decision"]
