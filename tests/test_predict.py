"""spinedx predict: one case through a run's fold models (synthetic pair and the real DzZ T1/T2 pair)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch
import yaml
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.io import read_image
from spinedx.models import build_model, load_fold_model, save_fold_model
from spinedx.predict import predict_case
from spinedx.preprocess import ExtractConfig, extract_patches


# NIfTI (RAS) affine whose third file axis runs left-right (a sagittal stack), first axis anterior->posterior,
# second superior->inferior, 1 mm in-plane.
def _affine(slice_mm: float) -> np.ndarray:
    return np.array([[0.0, 0.0, slice_mm, -20.0], [-1.0, 0.0, 0.0, 60.0], [0.0, -1.0, 0.0, 60.0], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder in the `spinedx cv` layout with two untrained resnet18 fold models."""
    root = tmp_path_factory.mktemp("run")
    patches = root / "patches"
    patches.mkdir()
    (patches / "extract.json").write_text(json.dumps({"config": ExtractConfig(register=False).to_dict()}))
    run = root / "run"
    cfg = {"config": {"profile": "quick", "folds": 2, "backbone": "resnet18", "threshold": 0.5, "aggregation": "max"},
           "optimistic": False, "patches_dir": str(patches),
           "weights": {"source": "none", "path": None, "sha256": None, "message": "scratch"},
           "provenance": {"git_commit": "abc", "versions": {"torch": str(torch.__version__)}}}
    for k in range(2):
        (run / "folds" / str(k)).mkdir(parents=True)
        torch.manual_seed(10 + k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model("resnet18", pretrained="none")
        save_fold_model(model.eval(), run / "folds" / str(k) / "model.pt", k)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory) -> Path:
    """T1/T2 NIfTI of a bright 'vertebra' (T2) / dark (T1) on a smooth background, 10 sagittal slices."""
    tmp = tmp_path_factory.mktemp("case")
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
    assert [s["slice_index"] for s in doc["slices"]] == [4, 5]
    assert doc["model"]["backbone"] == "resnet18" and doc["model"]["imagenet_weights"] is False
    assert doc["model"]["optimistic"] is False and doc["model"]["folds"] == [0, 1]
    assert doc["preprocessing"]["extract_config"]["register"] is False  # the run's extract.json
    assert "extract.json" in doc["preprocessing"]["config_source"]
    assert doc["registration"]["performed"] is False
    assert doc["spinedx_version"] and "versions" in doc["provenance"]
    for s in doc["slices"]:
        assert (out / s["overlay"]).read_bytes()[:4] == b"\x89PNG"

    # Independent re-derivation: the same preprocessing and each fold model by hand.
    t1 = read_image(synthetic_pair / "t1.nii.gz")
    t2 = read_image(synthetic_pair / "t2.nii.gz")
    x = extract_patches(t1, t2, [4, 5], (27, 35, 63, 65), ExtractConfig(register=False)).x
    for k in ("0", "1"):
        m = load_fold_model(tiny_run / "folds" / k / "model.pt")
        with torch.no_grad():
            p = torch.sigmoid(m(torch.from_numpy(x))).reshape(-1).numpy()
        np.testing.assert_allclose([s["per_fold"][k] for s in doc["slices"]], p, atol=1e-5)


def test_predict_api_without_output_or_heatmaps(tiny_run: Path, synthetic_pair: Path) -> None:
    res = predict_case(tiny_run, synthetic_pair / "t1.nii.gz", synthetic_pair / "t2.nii.gz", (5,), (27, 35, 63, 65),
                       explain=False)
    assert res.heatmaps is None and res.out_dir is None
    assert res.slice_probability.shape == (2, 1)
    assert 0.0 <= res.probability <= 1.0


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
    with pytest.raises(SpinedxError, match="fold models"):
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
