"""Test-time augmentation (``CVConfig.tta``, the cpu profile's ``affine8``; issue 13): every engine that gives a
run's probabilities (spinedx.inference) averages over the same fixed views, so they all give the same numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from runhelpers import tiny_config, write_patches, write_run
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.evaluation.cv import run_cv
from spinedx.inference import TorchEngine, export_bundle, load_model, make_engine
from spinedx.interop.bundle import load_bundle
from spinedx.models import load_fold_model, load_run
from spinedx.models.tta import TTAViews, expand_views
from spinedx.runfolder import RunFolder, load_patches
from spinedx.training.augment import apply_affine
from spinedx.training.config import AffineRanges, CVConfig


@pytest.fixture(scope="module")
def tta_run(module_tmp: Path) -> Path:
    """A run folder whose record says affine8, with two untrained resnet18 fold models (64x64 patches)."""
    return write_run(module_tmp / "run", n_patients=12, n_folds=2, optimistic=False, tta="affine8")


def _patches(n: int = 5) -> np.ndarray:
    x = np.random.default_rng(1).normal(size=(n, 6, 64, 64)).astype(np.float32)
    x[:, :, 16:40, 20:44] += 2.0  # an off-centre bright block: shifts and rotations change what the model sees
    return x


def test_affine8_views_lie_inside_the_training_ranges() -> None:
    ranges = AffineRanges(rotation_deg=15.0, translation=0.1, scale=(0.9, 1.1))
    views = TTAViews.make("affine8", ranges)
    assert views.n_views == 9 and len(set(views.params)) == 8
    angles = sorted(round(math.degrees(a), 6) for a, *_ in views.params if a)
    assert angles == [-10.0, 10.0]  # two thirds of +-15 degrees
    shifts = sorted(round(t / 2, 6) for _, tx, ty, _ in views.params for t in (tx, ty) if t)
    assert shifts == [-0.066667, -0.066667, 0.066667, 0.066667]  # two thirds of +-10 % along each axis
    assert sorted(s for *_, s in views.params if s != 1.0) == [0.9, 1.1]
    wide = TTAViews.make("affine8", AffineRanges(rotation_deg=30.0, translation=0.2, scale=(0.8, 1.25)))
    assert max(math.degrees(a) for a, *_ in wide.params) == pytest.approx(20.0)  # follows the run's ranges
    assert TTAViews.make("none").n_views == 1 and TTAViews.make("none").params == ()
    with pytest.raises(ValueError, match="affine8"):
        TTAViews.make("flip4")
    doc = views.to_dict()
    assert doc["n_views"] == 9 and len(doc["views"]) == 8 and json.loads(json.dumps(doc)) == doc


def test_expand_views_puts_the_patches_first() -> None:
    views = TTAViews.make("affine8")
    x = torch.from_numpy(_patches(3))
    big = expand_views(x, views.grids(6, 64))
    assert tuple(big.shape) == (27, 6, 64, 64)
    np.testing.assert_array_equal(big[:3].numpy(), x.numpy())  # the patch itself, not a resampled copy
    for v, p in enumerate(views.param_tensor(), start=1):  # then each view, as the training augmentation makes it
        np.testing.assert_allclose(big[3 * v:3 * v + 3].numpy(), apply_affine(x, p.expand(3, 4)).numpy(), atol=1e-5)
    assert tuple(expand_views(x, TTAViews.make("none").grids(6, 64)).shape) == (3, 6, 64, 64)


def test_a_runs_probability_is_the_mean_over_its_views(tta_run: Path) -> None:
    run = load_run(tta_run)
    assert run.tta.name == "affine8"
    x = _patches()
    got = make_engine(run).predict(x)  # an engine made for a run takes its views
    plain = TorchEngine(run.models).predict(x)  # a list of networks: the patch alone
    per_view = [plain] + [TorchEngine(run.models).predict(apply_affine(torch.from_numpy(x),
                                                                       p.expand(len(x), 4)).numpy())
                          for p in run.tta.param_tensor()]
    np.testing.assert_allclose(got, np.mean(per_view, axis=0), atol=1e-6)
    assert np.abs(got - plain).max() > 1e-3  # the views do change the answer


@pytest.mark.slow
def test_the_onnx_runtime_engine_uses_the_runs_views(tta_run: Path) -> None:
    run = load_run(tta_run)
    eng = make_engine(run, "onnxruntime", threads=1)
    assert eng.views == run.tta and "tta=affine8" in repr(eng)
    x = _patches(7)
    np.testing.assert_allclose(eng.predict(x), make_engine(run).predict(x), atol=1e-5)


def test_the_onnx_bundle_holds_the_views(tta_run: Path, tmp_path: Path) -> None:
    run = load_run(tta_run)
    info = export_bundle(tta_run, tmp_path / "bundle", onnx=True)
    tta_doc = info.doc["model"]["test_time_augmentation"]
    assert tta_doc["name"] == "affine8" and tta_doc["n_views"] == 9
    assert info.doc["model"]["onnx_check"]["max_abs_diff_vs_torch"] <= 1e-5
    assert load_bundle(info.path).tta == run.tta
    x = _patches(4)
    want = make_engine(run).predict(x)
    onnx = make_engine(load_model(info.path), "onnx")
    np.testing.assert_allclose(onnx.predict(x), want, atol=1e-5)
    np.testing.assert_allclose(onnx.predict(x[:1]), want[:, :1], atol=1e-5)  # batch of one
    res = CliRunner().invoke(app, ["export", str(tta_run), "--out", str(tmp_path / "b2")])
    assert res.exit_code == 0, res.output
    assert "test-time augmentation affine8: each probability is the mean over the patch and 8 fixed affine views" \
        in res.output


def test_profiles_old_records_and_bad_values() -> None:
    assert CVConfig.from_profile("cpu").tta == "affine8"
    assert CVConfig.from_profile("paper").tta == "none"  # the paper's protocol stays the paper's
    assert CVConfig.from_profile("quick").tta == "none"
    old = CVConfig.from_profile("cpu").to_dict()
    del old["tta"]  # a config.yaml written before the setting existed: those runs predicted the patch alone
    assert CVConfig.from_record(old, "config.yaml").tta == "none"
    with pytest.raises(SpinedxError, match="tta must be none or affine8"):
        CVConfig.from_profile("cpu", tta="flips")
    res = CliRunner().invoke(app, ["cv", "/nonexistent/patches", "--out", "/nonexistent/run", "--tta", "flips"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and lines[-1].startswith("error:") and "tta" in lines[-1], res.output


def test_cv_scores_every_fold_with_the_runs_views(tmp_path: Path) -> None:
    """The out-of-fold predictions (what metrics, stats and the report read) are the views' mean."""
    pids = [f"P{i:02d}" for i in range(12)]
    patches = write_patches(tmp_path / "p", pids, np.arange(12) % 2, size=32, seed=3)
    cfg = tiny_config(folds=2, epochs=1, tta="affine8")
    run_cv(patches, tmp_path / "run", cfg, progress=False)
    rf = RunFolder(tmp_path / "run")
    ps = load_patches(patches)
    views = TTAViews.from_config(cfg)
    for k in (0, 1):
        assert rf.read_done(k)["test_time_views"] == 9
        preds = pd.read_csv(tmp_path / "run" / "folds" / str(k) / "predictions.csv", dtype={"patient_id": str})
        model = load_fold_model(tmp_path / "run" / "folds" / str(k) / "model.pt")
        val = np.isin(ps.patient_id, preds["patient_id"].unique())
        want = TorchEngine([model], views=views).predict(ps.x[val])[0]
        plain = TorchEngine([model]).predict(ps.x[val])[0]
        np.testing.assert_allclose(preds["probability"].to_numpy(), want, atol=1e-5)
        assert np.abs(want - plain).max() > 1e-3


def test_no_views_means_no_grids() -> None:
    assert tuple(TTAViews.make("none").grids(6, 64).shape) == (0, 64, 64, 2)  # an ONNX export of a run without TTA
    assert tuple(TTAViews.make("affine8").grids(6, 32).shape) == (8, 32, 32, 2)
