"""spinedx predict: one case through a run's fold models (synthetic pair and the real DzZ T1/T2 pair)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch
import yaml
from runhelpers import write_patches, write_run
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.explain import DEFAULT_METHOD, explain, method_caption
from spinedx.io import read_image
from spinedx.models import load_fold_model
from spinedx.predict import predict_case
from spinedx.preprocess import ExtractConfig, extract_patches


# NIfTI (RAS) affine whose third file axis runs left-right (a sagittal stack), first axis anterior->posterior,
# second superior->inferior, 1 mm in-plane.
def _affine(slice_mm: float) -> np.ndarray:
    return np.array([[0.0, 0.0, slice_mm, -20.0], [-1.0, 0.0, 0.0, 60.0], [0.0, -1.0, 0.0, 60.0], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def tiny_run(module_tmp: Path) -> Path:
    """A run folder as `spinedx cv` writes it, with two untrained resnet18 fold models, trained (so its record
    says) on 64x64 patches made without registration."""
    return write_run(module_tmp / "run", n_patients=12, n_folds=2, optimistic=False)


@pytest.fixture(scope="module")
def synthetic_pair(module_tmp: Path) -> Path:
    """T1/T2 NIfTI of a bright 'vertebra' (T2) / dark (T1) on a smooth background, 10 sagittal slices."""
    tmp = module_tmp / "case"
    tmp.mkdir()
    rng = np.random.default_rng(0)
    a, s, _ = np.meshgrid(np.arange(90), np.arange(100), np.arange(10), indexing="ij")
    body = ((a - 45) ** 2 / 18**2 + (s - 50) ** 2 / 15**2) < 1
    t2 = 100 + 300 * body + rng.normal(0, 10, body.shape)
    t1 = 500 - 200 * body + rng.normal(0, 10, body.shape)
    nib.save(nib.Nifti1Image(t2.astype(np.float32), _affine(4.0)), tmp / "t2.nii.gz")
    nib.save(nib.Nifti1Image(t1.astype(np.float32), _affine(4.0)), tmp / "t1.nii.gz")
    return tmp


@pytest.mark.slow
def test_predict_synthetic_case(tiny_run: Path, synthetic_pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    res = CliRunner().invoke(app, ["predict", "--model", str(tiny_run), "--t1", str(synthetic_pair / "t1.nii.gz"),
                                   "--t2", str(synthetic_pair / "t2.nii.gz"), "--lesion-slices", "4;5",
                                   "--box", "27,35,63,65", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "research use only, not for clinical decisions" in res.output
    doc = json.loads((out / "prediction.json").read_text())
    assert "research use only, not for clinical decisions" in json.dumps(doc).lower()
    per_fold = doc["spread"]["per_fold"]
    assert set(per_fold) == {"0", "1"}
    # patient probability = mean over fold models of each model's max over slices
    for k in ("0", "1"):
        assert per_fold[k] == pytest.approx(max(s["per_fold"][k] for s in doc["slices"]), abs=1e-7)
    assert doc["patient_probability"] == pytest.approx(np.mean(list(per_fold.values())), abs=1e-7)
    assert doc["spread"]["min"] <= doc["patient_probability"] <= doc["spread"]["max"]
    assert doc["call"] == ("malignant" if doc["patient_probability"] >= 0.5 else "benign")
    # a run made before the decision files (issue 20) still predicts: a warning names what it lacks, and the
    # decision is the call from the probability alone, marked as such
    assert doc["decision"] == doc["call"] and doc["decision_source"] == "probability_alone"
    assert doc["probability"] == doc["probability_uncalibrated"] == doc["patient_probability"]
    assert doc["conformal_set"] is None and doc["alpha"] is None and doc["refer_reasons"] == []
    assert doc["trained_on"] == {"synthetic": False, "n_patients": 12, "prevalence": None,
                                 "origin": f"cohort {tiny_run.parent / 'cohort.csv'}"}
    warning = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "no calibration.json, conformal.json, domain.json" in warning[0], res.output
    assert f"decision: {doc['decision'].upper()}; p(malignant) {doc['probability']:.3f} (uncalibrated: no " \
           "calibrator)" in res.output
    assert "[decided without calibration.json, conformal.json, domain.json; benign or malignant is the call at " \
           "the run's threshold from the probability alone]" in res.output
    assert [s["slice_index"] for s in doc["slices"]] == [4, 5]
    assert doc["model"]["backbone"] == "resnet18" and doc["model"]["imagenet_weights"] is False
    assert doc["model"]["optimistic"] is False and doc["model"]["folds"] == [0, 1]
    assert doc["preprocessing"]["extract_config"]["register"] is False  # as the run was trained
    assert "the run's config.yaml" in doc["preprocessing"]["config_source"]
    assert doc["model"]["missing_folds"] == [] and doc["model"]["synthetic"] is False
    assert doc["registration"]["performed"] is False
    assert doc["spinedx_version"] and "versions" in doc["provenance"]
    for s in doc["slices"]:
        assert (out / s["overlay"]).read_bytes()[:4] == b"\x89PNG"
    # the overlays are the default explanation method's, named in prediction.json and explanation.json
    assert doc["explanation"]["method"] == DEFAULT_METHOD and doc["explanation"]["n_models"] == 2
    expl = json.loads((out / "explanation.json").read_text())
    assert expl["method"] == DEFAULT_METHOD and expl["caption"] == method_caption(DEFAULT_METHOD)
    assert expl["overlays"] == [s["overlay"] for s in doc["slices"]]
    assert f"heatmaps: {method_caption(DEFAULT_METHOD)}" in res.output

    # Independent re-derivation: the same preprocessing and each fold model by hand.
    t1 = read_image(synthetic_pair / "t1.nii.gz")
    t2 = read_image(synthetic_pair / "t2.nii.gz")
    x = extract_patches(t1, t2, [4, 5], (27, 35, 63, 65), ExtractConfig(register=False)).x
    for k in ("0", "1"):
        m = load_fold_model(tiny_run / "folds" / k / "model.pt")
        with torch.no_grad():
            p = torch.sigmoid(m(torch.from_numpy(x))).reshape(-1).numpy()
        np.testing.assert_allclose([s["per_fold"][k] for s in doc["slices"]], p, atol=1e-5)


def test_predict_heatmaps_follow_the_one_default(tiny_run: Path, synthetic_pair: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """spinedx.explain.DEFAULT_METHOD alone decides the method: changed there, the maps, record and files follow."""
    import spinedx.explain

    other = "gradcam-layer2"
    assert other != DEFAULT_METHOD
    monkeypatch.setattr(spinedx.explain, "DEFAULT_METHOD", other)
    res = predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", (4, 5),
                       (27, 35, 63, 65), tmp_path / "out")
    assert res.record["explanation"]["method"] == other
    assert json.loads((tmp_path / "out" / "explanation.json").read_text())["method"] == other
    t1 = read_image(synthetic_pair / "t1.nii.gz")
    t2 = read_image(synthetic_pair / "t2.nii.gz")
    x = extract_patches(t1, t2, [4, 5], (27, 35, 63, 65), ExtractConfig(register=False)).x
    models = [load_fold_model(tiny_run / "folds" / k / "model.pt") for k in ("0", "1")]
    assert res.heatmaps is not None
    np.testing.assert_allclose(res.heatmaps, explain(models, x, other), atol=1e-5)


def test_predict_api_without_output_or_heatmaps(tiny_run: Path, synthetic_pair: Path) -> None:
    res = predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", (5,), (27, 35, 63, 65),
                       explain=False)
    assert res.heatmaps is None and res.out_dir is None and res.record["explanation"] is None
    assert res.slice_probability.shape == (2, 1)
    assert 0.0 <= res.probability <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_predict_with_a_warm_engine_equals_a_fresh_one(tiny_run: Path, synthetic_pair: Path, engine: str) -> None:
    """The workstation's warm engine gives spinedx predict's probabilities (1e-5) and says which engine ran."""
    from spinedx.inference import TorchEngine, load_model, make_engine
    from spinedx.models.tta import TTAViews

    run = load_model(tiny_run)
    args = (tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", (4, 5, 6), (27, 35, 63, 65))
    fresh = predict_case(*args, explain=False, engine=engine)
    warm_engine = make_engine(run, engine)
    warm = predict_case(*args, explain=False, run=run, engine=warm_engine)
    assert warm.slice_probability.shape == fresh.slice_probability.shape == (2, 3)
    assert np.abs(warm.slice_probability - fresh.slice_probability).max() < 1e-5
    assert warm.probability == pytest.approx(fresh.probability, abs=1e-5) and warm.call == fresh.call
    name = {"torch": "torch", "onnx": "onnxruntime"}[engine]
    assert fresh.record["engine"] == warm.record["engine"] == name
    assert warm.record["inference"] == {"engine": name, "precision": "fp32", "views": 1}
    one = predict_case(*args, explain=False, run=run, engine=warm_engine, folds=[1])  # a warm engine's rows
    np.testing.assert_allclose(one.slice_probability, warm.slice_probability[1:], atol=0)
    other = TorchEngine(run.models[:1], folds=run.folds[:1])
    with pytest.raises(SpinedxError, match="engine holds folds"):
        predict_case(*args, explain=False, run=run, engine=other)
    assert fresh.record["test_time_augmentation"]["name"] == "none"  # this run predicts the patch alone
    augmented = TorchEngine(run.models, folds=run.folds, views=TTAViews.make("affine8"))
    with pytest.raises(SpinedxError, match="test-time views 'affine8', the run over 'none'"):
        predict_case(*args, explain=False, run=run, engine=augmented)


@pytest.mark.slow
def test_predict_one_fold_model(tiny_run: Path, synthetic_pair: Path, tmp_path: Path) -> None:
    """--fold K answers with fold model K alone (what reproduces a cohort patient's out-of-fold probability); the
    record, the fingerprint and the console say so; a fold the run lacks is refused by name."""
    from spinedx.interop import model_fingerprint

    out = tmp_path / "pred"
    base = ["predict", "--model", str(tiny_run), "--t1", str(synthetic_pair / "t1.nii.gz"), "--t2",
            str(synthetic_pair / "t2.nii.gz"), "--lesion-slices", "4;5", "--box", "27,35,63,65"]
    res = CliRunner().invoke(app, [*base, "--out", str(out), "--fold", "1"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "prediction.json").read_text())
    assert doc["model"]["folds"] == [1] and list(doc["spread"]["per_fold"]) == ["1"]
    assert doc["model"]["fingerprint"] == model_fingerprint(tiny_run, [1])
    assert "fold model(s) 1 only (--fold)" in doc["model"]["fold_selection_note"]
    both = predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", (4, 5),
                        (27, 35, 63, 65), explain=False)
    assert doc["patient_probability"] == pytest.approx(both.per_model[1], abs=1e-6)
    assert f"p(malignant) = {doc['patient_probability']:.3f} (fold model 1 alone; torch engine, fp32)" in res.output
    assert "note: answered by fold model(s) 1 only (--fold)" in res.output
    # this run's folds record no inference precision, but they trained (so predicted out of fold) in fp32
    oof = doc["model"]["oof_inference"]
    assert oof["precision"] == "fp32" and oof["recorded"] is False and oof["note"] is None
    assert "bf16" not in res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p2"), "--fold", "2"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0] == "error: --fold: fold(s) 2 not in this model: it has fold(s) 0, 1"
    assert not (tmp_path / "p2").exists()


@pytest.mark.parametrize("args, message", [
    (["--box", "27,35,200,65"], "box"),
    (["--box", "1,2,3"], "--box"),
    (["--lesion-slices", "a;b"], "--lesion-slices"),
    (["--lesion-slices", "12"], "slice"),
    (["--t1", "/nonexistent/t1.nii.gz"], "no such file"),
])
def test_predict_bad_input_one_line_exit_2(tiny_run: Path, synthetic_pair: Path, tmp_path: Path,
                                           args: list[str], message: str) -> None:
    base = {"--model": str(tiny_run), "--t1": str(synthetic_pair / "t1.nii.gz"),
            "--t2": str(synthetic_pair / "t2.nii.gz"), "--lesion-slices": "4;5", "--box": "27,35,63,65",
            "--out": str(tmp_path / "o")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    res = CliRunner().invoke(app, ["predict", *[v for kv in base.items() for v in kv]])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert message.lower() in lines[0].lower()
    assert not (tmp_path / "o" / "prediction.json").exists()


def test_predict_run_without_models(tmp_path: Path, synthetic_pair: Path) -> None:
    (tmp_path / "config.yaml").write_text("config: {}\n")
    with pytest.raises(SpinedxError, match="no 'format'"):
        predict_case(tmp_path, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", "5", "27,35,63,65")


@pytest.mark.slow
def test_predict_real_dzz_pair(tiny_run: Path, real_data: Path, tmp_path: Path) -> None:
    """The real same-subject T1 (10.mat) / T2 (11.mat) pair, box from a vertebral-body mask."""
    folder = real_data / "fastcleverseg_VB1_DzZ_T1_T2"
    m1, m2 = scipy.io.loadmat(folder / "10.mat"), scipy.io.loadmat(folder / "11.mat")
    # Arrays: axis 0 superior->inferior, 1 anterior->posterior, 2 = 50 sagittal 1-mm planes. Written as
    # (AP, SI, LR) so the reader's x is anterior-posterior and y superior-inferior; one affine for both.
    for name, m in (("t1", m1), ("t2", m2)):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(m["I"].transpose(1, 0, 2)), _affine(1.0)),
                 tmp_path / f"{name}.nii.gz")
    # Box of the middle vertebral body (instance 1 in 11.mat) on its widest sagittal slice.
    vb = m2["GT"] == 1
    k = int(np.argmax(vb.sum(axis=(0, 1))))
    si, ap = np.nonzero(vb[:, :, k])
    box = (int(ap.min()), int(si.min()), int(ap.max()) + 1, int(si.max()) + 1)
    out = tmp_path / "pred"
    res = predict_case(tiny_run, tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz", f"{k};{k + 1}", box, out,
                       patient_id="DzZ")
    assert res.slice_index == [k, k + 1]
    assert res.heatmaps is not None and res.heatmaps.shape == (2, 64, 64)
    assert 0.0 <= res.heatmaps.min() and res.heatmaps.max() <= 1.0
    doc = json.loads((out / "prediction.json").read_text())
    assert doc["inputs"]["box"] == list(box) and doc["patient_id"] == "DzZ"
    assert 0.0 <= doc["patient_probability"] <= 1.0
    assert len(list(out.glob("overlay_slice*.png"))) == 2
    # The patch centre is the chosen vertebral body: bright on T1 relative to the crop's z-scored mean is not
    # guaranteed, but the two sequences of the same slice must be strongly related (same anatomy, same grid).
    t1 = read_image(tmp_path / "t1.nii.gz")
    t2 = read_image(tmp_path / "t2.nii.gz")
    x = extract_patches(t1, t2, [k], box, ExtractConfig(register=False)).x[0]
    assert np.isfinite(x).all() and abs(np.corrcoef(x[1].ravel(), x[4].ravel())[0, 1]) > 0.3


def _predict_args(run: Path, pair: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--model", str(run), "--t1", str(pair / "t1.nii.gz"), "--t2", str(pair / "t2.nii.gz"),
            "--lesion-slices", "4;5", "--box", "27,35,63,65", "--out", str(out), *extra]


def _one_error(args: list[str], *needles: str) -> None:
    res = CliRunner().invoke(app, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.slow
def test_predict_missing_or_stray_fold_models(tmp_path: Path, synthetic_pair: Path) -> None:
    """Issue 8: with one of 2 model.pt gone predict answered from 1 model (spread 0.000); 1.bak crashed it."""
    run = write_run(tmp_path / "r", n_patients=12, n_folds=2)
    (run / "folds" / "1" / "model.pt").unlink()
    _one_error(_predict_args(run, synthetic_pair, tmp_path / "o"), "incomplete fold folder", "folds/1")
    shutil.rmtree(run / "folds" / "1")
    _one_error(_predict_args(run, synthetic_pair, tmp_path / "o"), "fold(s) 1 of 2 have no model",
               "--allow-missing-folds")
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, _predict_args(run, synthetic_pair, tmp_path / "o", "--allow-missing-folds"))
    assert res.exit_code == 0, res.output
    assert "WARNING: answered from 1 of 2 fold models" in res.output
    doc = json.loads((tmp_path / "o" / "prediction.json").read_text())
    assert doc["model"]["missing_folds"] == [1] and doc["model"]["folds"] == [0] and doc["spread"]["n_models"] == 1
    shutil.copytree(run / "folds" / "0", run / "folds" / "1.bak")
    _one_error(_predict_args(run, synthetic_pair, tmp_path / "o2", "--allow-missing-folds"), "1.bak",
               "unexpected entry")


@pytest.mark.slow
def test_predict_uses_the_runs_settings_not_the_patches_folder(tiny_run: Path, synthetic_pair: Path,
                                                               tmp_path: Path) -> None:
    """Issue 8: re-extracting with --patch-size 32 after training fed 32x32 patches to the 64x64 models."""
    patches = Path(yaml.safe_load((tiny_run / "config.yaml").read_text())["patches"]["path"]).parent
    saved = {p.name: p.read_bytes() for p in patches.iterdir()}
    try:
        write_patches(patches, ["A", "B"], np.array([0, 1]), size=32, seed=1)  # re-extracted, other settings
        ex = json.loads((patches / "extract.json").read_text())
        ex["config"]["register"] = True
        (patches / "extract.json").write_text(json.dumps(ex))
        res = predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", "4;5",
                           "27,35,63,65", tmp_path / "o")
    finally:
        for name, data in saved.items():
            (patches / name).write_bytes(data)
    cfg = res.record["preprocessing"]["extract_config"]
    assert cfg["patch_size"] == 64 and cfg["register"] is False
    assert res.heatmaps is not None and res.heatmaps.shape == (2, 64, 64)


def test_predict_refuses_a_run_without_extraction_settings(tmp_path: Path, synthetic_pair: Path) -> None:
    run = write_run(tmp_path / "r", n_patients=12, n_folds=2, extract=False, models=False)
    with pytest.raises(SpinedxError, match="does not record how its training patches were made"):
        from spinedx.predict import extract_config_for
        from spinedx.runfolder import RunFolder

        extract_config_for(RunFolder(run).read_record())


def test_predict_out_is_complete_or_untouched(tiny_run: Path, synthetic_pair: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    _one_error(_predict_args(tiny_run, synthetic_pair, tmp_path / "afile"), "afile", "not a folder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    _one_error(_predict_args(tiny_run, synthetic_pair, tmp_path / "mine"), "not an earlier spinedx prediction",
               "no prediction.json of spinedx", "--overwrite")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # An earlier prediction stays byte-identical when the new one is interrupted while writing.
    out = tmp_path / "pred"
    predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", "4;5", "27,35,63,65", out,
                 explain=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # Issue 18: an earlier prediction with a user's file in it was replaced whole (the file lost); refused now
    (out / "reading.txt").write_text("my reading of this case")
    _one_error(_predict_args(tiny_run, synthetic_pair, out), "not an earlier spinedx prediction (reading.txt)")
    assert (out / "reading.txt").is_file()
    (out / "reading.txt").unlink()
    # a prediction.json of another program is not ours either; --overwrite replaces, but never a run folder
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "prediction.json").write_text('{"score": 3}')
    _one_error(_predict_args(tiny_run, synthetic_pair, tmp_path / "other"), "no prediction.json of spinedx")
    res = CliRunner().invoke(app, _predict_args(tiny_run, synthetic_pair, tmp_path / "other", "--overwrite"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "other" / "prediction.json").read_text())["research_use_only"]
    run_copy = tmp_path / "run_copy"
    shutil.copytree(tiny_run / "folds", run_copy / "folds")
    shutil.copyfile(tiny_run / "config.yaml", run_copy / "config.yaml")
    _one_error(_predict_args(tiny_run, synthetic_pair, run_copy, "--overwrite"), "a prediction never replaces it")
    assert (run_copy / "config.yaml").is_file()
    import spinedx.explain as explain

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(explain, "save_overlay", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", "5", "27,35,63,65",
                     out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_overlay_titles_number_the_slice_from_1(tiny_run: Path, synthetic_pair: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlays said "slice 4" for the slice the pages, the SR and every viewer call 5 (API index 4)."""
    import spinedx.explain as explain

    titles: list[str] = []
    real = explain.save_overlay

    def recorded(*a: Any, **k: Any) -> Path:
        titles.append(str(k["title"]))
        return real(*a, **k)

    monkeypatch.setattr(explain, "save_overlay", recorded)
    res = predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", (4, 5),
                       (27, 35, 63, 65), tmp_path / "out")
    assert [s["slice_index"] for s in res.record["slices"]] == [4, 5]
    assert [t.split(":")[0] for t in titles] == ["case T2 slice 5", "case T2 slice 6"]
    assert [s["overlay"] for s in res.record["slices"]] == ["overlay_slice004.png", "overlay_slice005.png"]
