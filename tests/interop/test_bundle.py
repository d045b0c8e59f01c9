"""Model bundles: export, checksums, the same models as the run, ONNX Runtime agreeing with torch."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spinedx.interop import model_fingerprint
from spinedx.interop.bundle import BundleError, export_bundle, open_model, verify_bundle
from spinedx.interop.onnxexport import OnnxEnsemble
from spinedx.models import predict_patches


@pytest.fixture(scope="module")
def bundle(tiny_run: Path, module_tmp: Path) -> Path:
    out = module_tmp / "b"
    export_bundle(tiny_run, out, onnx=True)
    return out


def test_bundle_layout_and_record(bundle: Path, tiny_run: Path) -> None:
    info = verify_bundle(bundle)
    assert sorted(info.files) == ["bundle.json", "config.yaml", "folds/0/model.pt", "folds/1/model.pt", "metrics.json",
                                  "model.onnx"]
    doc = json.loads((bundle / "bundle.json").read_text())
    assert doc["research_use_only"] == "research use only, not for clinical decisions"
    assert "research use only" in doc["intended_use"]
    assert doc["model"]["fingerprint"] == model_fingerprint(tiny_run) == model_fingerprint(bundle)
    assert doc["model"]["folds"] == [0, 1] and doc["model"]["backbone"] == "resnet18"
    assert doc["preprocessing"]["patch_size"] == 64 and doc["preprocessing"]["threshold"] == 0.5
    assert doc["model"]["onnx_check"]["max_abs_diff_vs_torch"] <= 1e-4
    # the checksums are sha256sum's own format
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)


def test_bundle_loads_the_same_models(bundle: Path, tiny_run: Path) -> None:
    x = np.random.default_rng(1).normal(size=(5, 6, 64, 64)).astype(np.float32)
    a = predict_patches(open_model(tiny_run), x, bf16=False)
    b = predict_patches(open_model(bundle), x, bf16=False)
    np.testing.assert_array_equal(a, b)
    onnx = OnnxEnsemble(bundle / "model.onnx").predict(x)
    assert onnx.shape == a.shape and float(np.max(np.abs(onnx - a))) <= 1e-4


@pytest.mark.parametrize("damage", ["change", "remove", "add"])
def test_altered_bundle_is_refused(bundle: Path, tmp_path: Path, damage: str) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    if damage == "change":
        with open(b / "folds" / "1" / "model.pt", "r+b") as fh:
            fh.seek(-100, 2)
            byte = fh.read(1)
            fh.seek(-100, 2)
            fh.write(bytes([byte[0] ^ 1]))
        match = r"checksum mismatch"
    elif damage == "remove":
        (b / "model.onnx").unlink()
        match = r"missing: model\.onnx"
    else:
        (b / "notes.txt").write_text("x")
        match = r"not in SHA256SUMS: notes\.txt"
    with pytest.raises(BundleError, match=match):
        open_model(b)


def test_export_refuses_a_foreign_output_folder(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.csv").write_text("1")
    with pytest.raises(Exception, match="not an \\(empty\\) folder or a bundle"):
        export_bundle(tiny_run, tmp_path / "x")
    assert (tmp_path / "x" / "data.csv").read_text() == "1"


@pytest.mark.parametrize("stray", ["1.bak", "7"])
def test_export_and_fingerprint_refuse_a_stray_fold_folder(tiny_run: Path, tmp_path: Path, stray: str) -> None:
    """A copied-aside ``folds/1.bak`` (or a fold the run does not have) is refused by name, never a traceback
    and never silently in or out of the bundle and of the model hash an SR carries."""
    from spinedx.errors import SpinedxError

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(run / "folds" / "1", run / "folds" / stray)
    with pytest.raises(SpinedxError, match=stray.replace(".", r"\.")):
        export_bundle(run, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    if not stray.isdigit():
        with pytest.raises(SpinedxError, match="unexpected entry '1.bak'"):
            model_fingerprint(run)
    # the folds that answered name the model, whatever else lies in the folder
    assert model_fingerprint(run, [0, 1]) == model_fingerprint(tiny_run)
    with pytest.raises(SpinedxError, match="fold 5 has no model.pt"):
        model_fingerprint(run, [0, 5])


def test_bundle_holds_no_training_patient(bundle: Path, tiny_run: Path) -> None:
    """Only models and figures travel: no patient identifier of the training cohort is in any bundle file."""
    pids = json.loads((tiny_run / "splits.json").read_text())["fold_of"]
    assert pids
    for f in bundle.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not [p for p in pids if p.encode() in data], f.name


@pytest.mark.slow
def test_predict_with_a_bundle_torch_and_onnx(bundle: Path, tiny_run: Path, case: dict) -> None:
    """A bundle predicts exactly as its run; ONNX Runtime agrees with torch to 1e-4 on a real case."""
    from spinedx.predict import predict_case

    args = (case["t1"], case["t2"], case["slices"], case["box"], None)
    run = predict_case(tiny_run, *args, explain=False)
    tor = predict_case(bundle, *args, explain=False)
    onx = predict_case(bundle, *args, explain=False, engine="onnx")
    assert tor.probability == run.probability
    np.testing.assert_array_equal(tor.slice_probability, run.slice_probability)
    assert abs(onx.probability - tor.probability) <= 1e-4
    assert float(np.max(np.abs(onx.slice_probability - tor.slice_probability))) <= 1e-4
    assert onx.record["engine"] == "onnxruntime" and tor.record["engine"] == "torch"
    with pytest.raises(BundleError, match="needs a model bundle"):
        predict_case(tiny_run, *args, explain=False, engine="onnx")


@pytest.mark.slow
def test_export_and_predict_cli(tiny_run: Path, bundle: Path, case: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinedx.cli import app
    from spinedx.interop import dciodvfy, read_sr

    res = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "2 resnet18 fold models" in res.output and "research use only" in res.output
    assert "cross-validated patient AUC" in res.output and "95% CI" in res.output
    assert verify_bundle(tmp_path / "b").onnx is None
    out = tmp_path / "pred"  # the module's bundle has the ONNX graph (its export is checked in test_bundle_layout)
    res = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--t1", str(case["t1"]), "--t2",
                                   str(case["t2"]), "--lesion-slices", ";".join(map(str, case["slices"])),
                                   "--box", ",".join(map(str, case["box"])), "--out", str(out), "--engine", "onnx"])
    assert res.exit_code == 0, res.output
    assert "(TID 1500 SR)" in res.output
    doc = json.loads((out / "prediction.json").read_text())
    s = read_sr(out / "dicom" / "sr.dcm")
    assert s.probability == doc["patient_probability"] and "ONNX Runtime" in " ".join(s.algorithm["parameters"])
    assert dciodvfy(out / "dicom" / "sr.dcm").errors == []
    res = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "c"), "--format", "tflite"])
    assert res.exit_code == 2 and "--format must be torch or onnx" in res.output


@pytest.mark.slow
def test_serve_predictor_accepts_a_bundle(bundle: Path, tiny_run: Path, case: dict, synth_study: Path,
                                          tmp_path: Path) -> None:
    """The workstation's predictor loads a bundle like a run folder and answers the same."""
    from spinedx.cohort import CaseRecord
    from spinedx.serve.predictor import Predictor
    from spinedx.serve.settings import ServeSettings

    rec = CaseRecord(patient_id=case["patient_id"], label=None, t1=case["t1"], t2=case["t2"],  # type: ignore[arg-type]
                     lesion_slices=case["slices"], box=case["box"])
    a = Predictor(tiny_run).predict(rec, tmp_path / "a", explain=False)
    p = Predictor(bundle)
    b = p.predict(rec, tmp_path / "b", explain=False)
    assert p.describe()["folds"] == [0, 1] and b.probability == a.probability
    assert b.dicom is not None and b.dicom.sr.is_file()  # DICOM inputs: the SR is written for the workstation too
    ServeSettings(cohort=synth_study / "cohort.csv", model=bundle).check()  # serve's check of --model takes it
