"""Model bundles: export, checksums, the same models as the run, ONNX Runtime agreeing with torch."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from spinedx.inference import export_bundle, load_model, make_engine
from spinedx.interop import model_fingerprint
from spinedx.interop.bundle import BundleError, verify_bundle


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
    assert doc["model"]["onnx_check"]["max_abs_diff_vs_torch"] <= 1e-5
    # how the run's out-of-fold probabilities (the performance the bundle carries) were computed travels with it
    oof = doc["model"]["oof_inference"]
    assert oof["precision"] == "fp32" and oof["recorded"] is False and oof["note"] is None
    assert load_model(bundle).oof_inference == oof
    # the checksums are sha256sum's own format
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)


def test_bundle_loads_the_same_models(bundle: Path, tiny_run: Path) -> None:
    x = np.random.default_rng(1).normal(size=(5, 6, 64, 64)).astype(np.float32)
    a = make_engine(load_model(tiny_run)).predict(x)
    b = make_engine(load_model(bundle)).predict(x)
    np.testing.assert_array_equal(a, b)
    onnx = make_engine(load_model(bundle), "onnx").predict(x)  # the bundle's own model.onnx
    assert onnx.shape == a.shape and float(np.max(np.abs(onnx - a))) <= 1e-5


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
        load_model(b)


def test_export_never_silently_replaces_a_users_folder(tiny_run: Path, tmp_path: Path) -> None:
    """``--out`` may be new, empty or an earlier bundle that passes its checks (replaced whole); a foreign folder,
    or a bundle a user added files to, only with --overwrite; a run folder never."""
    from spinedx.errors import SpinedxError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.csv").write_text("1")
    with pytest.raises(SpinedxError, match=r"not empty and not a spinedx model bundle.*--overwrite"):
        export_bundle(tiny_run, tmp_path / "x")
    assert (tmp_path / "x" / "data.csv").read_text() == "1"
    earlier = export_bundle(tiny_run, tmp_path / "earlier").path
    (earlier / "notes.txt").write_text("my validation notes")  # Issue 18: replaced silently (it had bundle.json)
    with pytest.raises(SpinedxError, match=r"holds a bundle that does not pass its checks.*notes\.txt.*--overwrite"):
        export_bundle(tiny_run, earlier)
    assert (earlier / "notes.txt").read_text() == "my validation notes"
    (earlier / "notes.txt").unlink()
    assert export_bundle(tiny_run, earlier).path == earlier  # an earlier bundle is replaced whole
    shutil.rmtree(earlier)  # tens of MB: keep the suite's disk use small
    assert export_bundle(tiny_run, tmp_path / "x", overwrite=True).path == tmp_path / "x"
    assert not (tmp_path / "x" / "data.csv").exists()
    shutil.rmtree(tmp_path / "x")
    run = tmp_path / "other_run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(SpinedxError, match="a bundle never replaces a run"):
        export_bundle(tiny_run, run, overwrite=True)
    assert (run / "config.yaml").is_file()


def _substitute_fold_model(b: Path, fold: int = 1, *, bundle_json: bool = False) -> None:
    """What an attacker does: replace a fold model by a readable one with other weights and recompute SHA256SUMS
    (and, with ``bundle_json``, the fingerprint and contents bundle.json records too)."""
    from spinedx.interop.bundle import sha256_file, write_sums
    from spinedx.models import load_fold_model, save_fold_model

    path = b / "folds" / str(fold) / "model.pt"
    model = load_fold_model(path)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    save_fold_model(model, path, fold, best_epoch=1)
    if bundle_json:
        doc = json.loads((b / "bundle.json").read_text())
        doc["model"]["fingerprint"] = model_fingerprint(b)
        doc["contents"][f"folds/{fold}/model.pt"] = sha256_file(path)
        (b / "bundle.json").write_text(json.dumps(doc, indent=1))
    write_sums(b)


def test_a_substituted_model_with_recomputed_checksums_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    """Issue 18: a fold model altered and SHA256SUMS recomputed was accepted (bundle.json's record was never
    compared with the models); the SR then named a model hash that was not the one that ran."""
    b = export_bundle(tiny_run, tmp_path / "b").path  # torch only: the fold models are what matters here
    _substitute_fold_model(b)
    with pytest.raises(BundleError, match=r"folds/1/model\.pt: sha256 [0-9a-f]{64} \(as SHA256SUMS now says\) is not "
                                          r"the [0-9a-f]{64} bundle\.json recorded at export"):
        load_model(b)
    shutil.rmtree(b)  # tens of MB: keep the suite's disk use small
    # a bundle exported before bundle.json recorded every file: its models' fingerprint is compared
    old = export_bundle(tiny_run, tmp_path / "old").path
    doc = json.loads((old / "bundle.json").read_text())
    del doc["contents"], doc["contents_rule"]
    (old / "bundle.json").write_text(json.dumps(doc, indent=1))
    from spinedx.interop.bundle import write_sums

    write_sums(old)
    assert load_model(old).fingerprint == doc["model"]["fingerprint"]
    _substitute_fold_model(old)
    with pytest.raises(BundleError, match=r"folds: the fold models' fingerprint [0-9a-f]{64} is not the "
                                          + doc["model"]["fingerprint"]):
        load_model(old)


def test_the_digest_pins_the_whole_bundle(bundle: Path, tiny_run: Path, tmp_path: Path) -> None:
    """Whoever can rewrite bundle.json as well passes every check inside the bundle; --expect-digest (the sha256 of
    SHA256SUMS, printed by export) refuses it, naming both digests (predict, serve and the API)."""
    import hashlib

    from typer.testing import CliRunner

    from spinedx.cli import app
    from spinedx.errors import SpinedxError
    from spinedx.serve.settings import ServeSettings

    b = export_bundle(tiny_run, tmp_path / "b").path
    digest = hashlib.sha256((b / "SHA256SUMS").read_bytes()).hexdigest()
    assert verify_bundle(b).digest == digest
    assert load_model(b, expect_digest=digest.upper()).digest == digest
    _substitute_fold_model(b, bundle_json=True)
    forged = load_model(b)  # what checksums cannot catch (docs/interop.md, threat model)
    assert forged.digest != digest
    with pytest.raises(BundleError, match=f"bundle digest {forged.digest}, expected {digest}"):
        load_model(b, expect_digest=digest)
    res = CliRunner().invoke(app, ["predict", "--model", str(b), "--t1", "t1", "--t2", "t2", "--lesion-slices", "5",
                                   "--box", "1,1,9,9", "--out", str(tmp_path / "pred"), "--expect-digest", digest])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert forged.digest in lines[0] and digest in lines[0] and "--expect-digest" in lines[0]
    assert not (tmp_path / "pred").exists()
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("patient_id\n")
    with pytest.raises(BundleError, match=f"bundle digest {forged.digest}, expected {digest}"):
        ServeSettings(cohort=cohort, model=b, expect_digest=digest).check()
    ServeSettings(cohort=cohort, model=bundle, expect_digest=verify_bundle(bundle).digest).check()
    with pytest.raises(SpinedxError, match="64 hex digits"):
        load_model(bundle, expect_digest=digest[:16])
    with pytest.raises(SpinedxError, match="this is a run folder"):
        load_model(tiny_run, expect_digest=digest)
    with pytest.raises(SpinedxError, match="give --model BUNDLE"):
        ServeSettings(cohort=cohort, expect_digest=digest).check()


@pytest.mark.slow
def test_the_sr_names_the_models_that_ran(tiny_run: Path, case: dict, tmp_path: Path) -> None:
    """A server keeps the models it loaded; the SR named the hash of whatever the folder held at prediction time
    (re-read from disk), not of the models that ran."""
    from spinedx.interop import read_sr
    from spinedx.models import load_run
    from spinedx.predict import predict_case

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    loaded = load_run(run)
    assert loaded.fingerprint == model_fingerprint(tiny_run)
    _substitute_fold_model(run)  # the file changes under the running server
    res = predict_case(run, case["t1"], case["t2"], case["slices"], case["box"], tmp_path / "pred", explain=False,
                       run=loaded)
    assert res.record["model"]["fingerprint"] == loaded.fingerprint
    assert read_sr(tmp_path / "pred" / "dicom" / "sr.dcm").model_hash == loaded.fingerprint != model_fingerprint(run)


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
    """A bundle predicts exactly as its run; ONNX Runtime agrees with torch to 1e-5 on a real case, the bundle's
    graph and the one exported from the run alike."""
    from spinedx.predict import predict_case

    args = (case["t1"], case["t2"], case["slices"], case["box"], None)
    run = predict_case(tiny_run, *args, explain=False)
    tor = predict_case(bundle, *args, explain=False)
    onx = predict_case(bundle, *args, explain=False, engine="onnx")
    assert tor.probability == run.probability
    np.testing.assert_array_equal(tor.slice_probability, run.slice_probability)
    assert abs(onx.probability - tor.probability) <= 1e-5
    assert float(np.max(np.abs(onx.slice_probability - tor.slice_probability))) <= 1e-5
    assert onx.record["engine"] == "onnxruntime" and tor.record["engine"] == "torch"
    assert onx.record["inference"] == {"engine": "onnxruntime", "precision": "fp32", "views": 1}
    from_run = predict_case(tiny_run, *args, explain=False, engine="onnx")  # the graph exported from the run
    assert float(np.max(np.abs(from_run.slice_probability - tor.slice_probability))) <= 1e-5


@pytest.mark.slow
def test_export_and_predict_cli(tiny_run: Path, bundle: Path, case: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinedx.cli import app
    from spinedx.interop import dciodvfy, read_sr

    res = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "2 resnet18 fold models" in res.output and "research use only" in res.output
    assert "cross-validated patient AUC" in res.output and "95% CI" in res.output
    # the run predates the decision files: the export says what its predictions will decide without
    assert "warning: the run has no calibration.json, conformal.json, domain.json" in res.output
    assert verify_bundle(tmp_path / "b").onnx is None
    digest = verify_bundle(tmp_path / "b").digest
    assert f"bundle digest {digest} (sha256 of SHA256SUMS): pin it with predict/serve --expect-digest" in res.output
    out = tmp_path / "pred"  # the module's bundle has the ONNX graph (its export is checked in test_bundle_layout)
    pinned = verify_bundle(bundle).digest
    res = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--t1", str(case["t1"]), "--t2",
                                   str(case["t2"]), "--lesion-slices", ";".join(map(str, case["slices"])),
                                   "--box", ",".join(map(str, case["box"])), "--out", str(out), "--engine", "onnx",
                                   "--expect-digest", pinned])
    assert res.exit_code == 0, res.output
    assert "(TID 1500 SR)" in res.output and f"model bundle digest {pinned} (as expected)" in res.output
    doc = json.loads((out / "prediction.json").read_text())
    s = read_sr(out / "dicom" / "sr.dcm")
    # the SR states the decision's (calibrated) probability, as prediction.json does
    assert s.probability == doc["probability"] and "ONNX Runtime" in " ".join(s.algorithm["parameters"])
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


def _with_decision_files(tiny_run: Path, root: Path) -> Path:
    """A copy of the run with its decision files: domain.json fitted as cv fits it, calibration.json and
    conformal.json in their documented formats."""
    from spinedx.decision.domain import fit_run_domain

    run = root / "run"
    shutil.copytree(tiny_run, run)
    splits = json.loads((run / "splits.json").read_text())
    for sp in splits["splits"]:  # five inner-validation patients per fold: enough for an honest spread reference
        sp["inner_val"] = sorted(p for p, k in splits["fold_of"].items() if k != sp["fold"])[:5]
    (run / "splits.json").write_text(json.dumps(splits))
    assert fit_run_domain(run)["spread"] is not None
    (run / "calibration.json").write_text(json.dumps({"format": 1, "method": "platt", "params": {"a": 1.5,
                                                                                                 "b": -0.2}}))
    (run / "conformal.json").write_text(json.dumps({"format": 1, "alpha": 0.1,
                                                    "thresholds": {"benign": 0.55, "malignant": 0.55}}))
    return run


@pytest.mark.slow
def test_a_bundle_decides_exactly_like_its_run_in_torch_and_onnx(tiny_run: Path, case: dict,
                                                                 tmp_path: Path) -> None:
    """Issue 20: a bundle carries the calibrator, the conformal thresholds and the domain reference, checked like the
    models, and decides exactly like its run whatever the engine (the decision is made after the engine)."""
    from spinedx.predict import predict_case

    run = _with_decision_files(tiny_run, tmp_path)
    out = tmp_path / "b"
    export_bundle(run, out, onnx=True)
    info = verify_bundle(out)
    assert {"calibration.json", "conformal.json", "domain.json"} <= set(info.files)
    doc = json.loads((out / "bundle.json").read_text())
    assert doc["decision_files"] == ["calibration.json", "conformal.json", "domain.json"]
    assert doc["decision_files_note"] is None and doc["trained_on"]["n_patients"] == 12
    args = (case["t1"], case["t2"], case["slices"], case["box"], None)
    keys = ("decision", "refer_reasons", "conformal_set", "alpha", "trained_on", "decision_source")
    ref = predict_case(run, *args, explain=False).record
    assert ref["decision_source"] == "checks" and ref["decision_warning"] is None
    assert ref["probability"] != ref["probability_uncalibrated"]  # the run's calibrator applied
    for engine in ("torch", "onnx"):
        got = predict_case(out, *args, explain=False, engine=engine).record
        assert {k: got[k] for k in keys} == {k: ref[k] for k in keys}, engine
        assert got["probability"] == pytest.approx(ref["probability"], abs=1e-5)
        assert got["decision_checks"]["domain_distance"] == ref["decision_checks"]["domain_distance"]
    # a decision file replaced and SHA256SUMS recomputed: refused like a replaced model
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    conformal = json.loads((bad / "conformal.json").read_text())
    conformal["thresholds"] = {"benign": 1.0, "malignant": 0.0}
    (bad / "conformal.json").write_text(json.dumps(conformal))
    from spinedx.interop.bundle import write_sums

    write_sums(bad)
    with pytest.raises(BundleError, match="conformal.json"):
        predict_case(bad, *args, explain=False)


def test_a_bundle_of_a_run_made_before_the_decision_files_decides_from_the_probability(
        bundle: Path, case: dict) -> None:
    """Bad input: a bundle exported before issue 20 still predicts, warns naming what it lacks, and marks the
    decision as the probability alone."""
    from spinedx.predict import predict_case

    doc = json.loads((bundle / "bundle.json").read_text())
    assert doc["decision_files"] == [] and "calibration.json, conformal.json, domain.json" in doc["decision_files_note"]
    res = predict_case(bundle, case["t1"], case["t2"], case["slices"], case["box"], None, explain=False)
    rec = res.record
    assert rec["decision_source"] == "probability_alone" and rec["decision"] == rec["call"]
    assert "calibration.json" in rec["decision_warning"] and "conformal.json" in rec["decision_warning"]
    assert "probability alone" in rec["decision_note"] and rec["conformal_set"] is None
