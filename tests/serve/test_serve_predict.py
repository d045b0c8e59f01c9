"""POST /predict equals `spinedx predict` on the same inputs; the saved manifest feeds `spinedx extract`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
    with TestClient(create_app(settings_for(manifest, model=ws_run)), base_url=BASE_URL) as client:
        key = key_of(client, rec.patient_id)
        model = client.get("/api/health").json()["model"]
        assert model["folds"] == [0, 1] and model["engine"] == "onnxruntime (fp32)"  # the warm batched ensemble
        r = client.post(f"/api/cases/{key}/predict")
        assert r.status_code == 200, r.text
        got = r.json()
        stored_dir = manifest.with_name(manifest.stem + ".predictions") / rec.patient_id
        stored = json.loads((stored_dir / "prediction.json").read_text())
        assert stored["engine"] == "ensemble (onnxruntime, fp32)"
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
    assert got["probability"] == pytest.approx(doc["patient_probability"], abs=1e-4)
    assert got["call"] == doc["call"] and got["threshold"] == doc["threshold"]
    assert got["fold_probabilities"] == pytest.approx([doc["spread"]["per_fold"][k] for k in ("0", "1")], abs=1e-4)
    assert [s["probability"] for s in got["slices"]] == pytest.approx(
        [s["probability"] for s in doc["slices"]], abs=1e-4)
    assert [s["slice_index"] for s in got["slices"]] == list(rec.lesion_slices)
    assert "research use only" in got["research_use_only"]
    # both averaged over the run's test-time views (the workstation's ensemble and the CLI's loop alike)
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
