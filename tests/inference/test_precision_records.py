"""What a run says about the precision of its out-of-fold probabilities (issue 20), and bf16 auto = CUDA only."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from runhelpers import write_run
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.inference import load_model


def _set_done(run: Path, fold: int, **changes: object) -> None:
    path = run / "folds" / str(fold) / "done.json"
    done = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            done.pop(key, None)
        else:
            done[key] = value
    path.write_text(json.dumps(done))


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A finished two-fold run as spinedx wrote it before it recorded the inference precision (no ``inference`` in
    done.json); its model files unchanged, so it loads."""
    return write_run(tmp_path / "r", n_patients=12, n_folds=2, optimistic=False, cohort=False)


def test_old_runs_say_how_their_out_of_fold_probabilities_were_computed(old_run: Path) -> None:
    # trained in fp32 (numerics, or config.yaml's device before numerics were recorded): predicted in fp32 too
    oof = load_model(old_run).oof_inference
    assert oof["precision"] == "fp32" and oof["recorded"] is False and oof["note"] is None
    # one fold trained under bf16 autocast (bf16: auto on a CPU with AVX512-BF16): its out-of-fold probabilities too
    _set_done(old_run, 1, numerics={"device": "cpu", "threads": 1, "bf16": True, "compiled": False})
    oof = load_model(old_run).oof_inference
    assert oof["precision"] == "mixed" and oof["per_fold"] == {"0": "fp32", "1": "bf16"}
    assert oof["note"].startswith("the run's out-of-fold probabilities (its reported performance) were computed "
                                  "under bf16 autocast in fold(s) 1 (inference precision not recorded; the folds "
                                  "trained under bf16 autocast")
    _set_done(old_run, 0, numerics={"device": "cpu", "threads": 1, "bf16": True, "compiled": False})
    assert load_model(old_run).oof_inference["precision"] == "bf16"
    # nothing says (no numerics, no device.bf16): may have been bf16
    for k in (0, 1):
        _set_done(old_run, k, numerics=None)
    config = yaml.safe_load((old_run / "config.yaml").read_text())
    del config["device"]["bf16"]
    (old_run / "config.yaml").write_text(yaml.safe_dump(config))
    oof = load_model(old_run).oof_inference
    assert oof["precision"] == "not recorded"
    assert oof["note"].startswith("inference precision not recorded: the run's out-of-fold probabilities (its "
                                  "reported performance) may have been computed under bf16 autocast")
    # recorded by this spinedx: the engine's own record
    for k in (0, 1):
        _set_done(old_run, k, inference={"engine": "torch", "precision": "fp32", "views": 1})
    oof = load_model(old_run).oof_inference
    assert oof == {"engine": "torch", "precision": "fp32", "views": 1, "recorded": True,
                   "per_fold": {"0": "fp32", "1": "fp32"}, "note": None}


@pytest.mark.slow
def test_predict_and_report_say_an_old_run_was_bf16(old_run: Path, tmp_path: Path) -> None:
    from spinedx.report import build_report

    for k in (0, 1):
        _set_done(old_run, k, numerics={"device": "cpu", "threads": 1, "bf16": True, "compiled": False})
    a, s, _ = np.meshgrid(np.arange(90), np.arange(100), np.arange(10), indexing="ij")
    body = ((a - 45) ** 2 / 18**2 + (s - 50) ** 2 / 15**2) < 1
    affine = np.array([[0.0, 0.0, 4.0, -20.0], [-1.0, 0.0, 0.0, 60.0], [0.0, -1.0, 0.0, 60.0], [0, 0, 0, 1.0]])
    for name, img in (("t1", 500 - 200 * body), ("t2", 100 + 300 * body)):
        nib.save(nib.Nifti1Image(img.astype(np.float32), affine), tmp_path / f"{name}.nii.gz")
    res = CliRunner().invoke(app, ["predict", "--model", str(old_run), "--t1", str(tmp_path / "t1.nii.gz"), "--t2",
                                   str(tmp_path / "t2.nii.gz"), "--lesion-slices", "5", "--box", "27,35,63,65",
                                   "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    assert "note: the run's out-of-fold probabilities (its reported performance) were computed under bf16 autocast" \
        in res.output
    doc = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    assert doc["model"]["oof_inference"]["precision"] == "bf16"
    assert doc["inference"] == {"engine": "torch", "precision": "fp32", "views": 1}
    text = build_report(old_run, gallery_per_group=0, bootstrap_resamples=100, progress=False).read_text()
    assert 'id="banner-precision"' in text and "computed under bf16 autocast" in text


def test_bf16_auto_trains_in_bf16_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lead's decision (issue 20): on a CPU with AVX512-BF16, ``auto`` gave bf16 training (random NaN losses on
    small patches, figures that depend on the instruction set); now ``auto`` is fp32 on every CPU."""
    import spinedx.training.engine as engine

    monkeypatch.setattr(engine, "bf16_supported", lambda device: True)  # a CPU (and a GPU) with fast bf16
    assert engine.use_bf16("auto", torch.device("cpu")) is False
    assert engine.use_bf16("auto", torch.device("cuda")) is True
    assert engine.use_bf16("on", torch.device("cpu")) is True
    assert engine.use_bf16("off", torch.device("cuda")) is False
    monkeypatch.setattr(engine, "bf16_supported", lambda device: False)
    assert engine.use_bf16("auto", torch.device("cuda")) is False
