"""Precise BatchNorm statistics after training (``CVConfig.recalibrate_bn``, the cpu profile's; issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from runhelpers import write_patches
from torch import nn

from spinedx.evaluation.cv import run_cv
from spinedx.models import load_fold_model
from spinedx.runfolder import RunFolder, load_patches
from spinedx.training.config import CVConfig
from spinedx.training.engine import recalibrate_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.1), nn.ReLU(), nn.Flatten())


def test_statistics_are_those_of_the_data_in_equal_batches() -> None:
    net = _net()
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(10, 3, 8, 8)).astype(np.float32)
    conv_before = net[0].weight.detach().clone()
    net.eval()
    assert recalibrate_batchnorm(net, x, batch_size=4) == 1  # 10 patches: batches of 4, 3, 3 (not 4, 4, 2)
    bn = net[1]
    with torch.no_grad():
        act = net[0](torch.from_numpy(x))  # (10, 4, 6, 6)
    batches = np.array_split(np.arange(10), 3)
    want_mean = torch.stack([act[b].mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    want_var = torch.stack([act[b].var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, want_var, rtol=1e-5, atol=1e-5)
    assert not net.training and bn.momentum == 0.1  # mode and momentum restored
    assert torch.equal(net[0].weight, conv_before)  # no weight changes


def test_no_batchnorm_or_no_data_changes_nothing() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    assert recalibrate_batchnorm(net, np.zeros((2, 3, 8, 8), np.float32)) == 0
    assert recalibrate_batchnorm(_net(), np.zeros((0, 3, 8, 8), np.float32)) == 0


def test_profiles_and_old_run_records() -> None:
    assert CVConfig.from_profile("cpu").recalibrate_bn is True
    assert CVConfig.from_profile("paper").recalibrate_bn is False  # the paper's protocol stays the paper's
    assert CVConfig.from_profile("quick").recalibrate_bn is False
    old = CVConfig.from_profile("quick").to_dict()
    del old["recalibrate_bn"]  # a config.yaml written before the setting existed: those runs did not recalibrate
    assert CVConfig.from_record(old, "config.yaml").recalibrate_bn is False


@pytest.mark.slow
def test_cv_saves_models_with_the_training_patches_statistics(tmp_path: Path) -> None:
    """The saved fold model's statistics are those of its own training patches, un-augmented: recalibrating the
    loaded model again on them changes nothing, and they differ from what training alone left."""
    pids = [f"P{i:02d}" for i in range(12)]
    patches = write_patches(tmp_path / "p", pids, np.arange(12) % 2, size=32, seed=3)
    common = {"folds": 2, "backbone": "mobilenet_v3_small", "pretrained": "none", "epochs": 1, "threads": 1,
              "compile": "off", "views_benign": 1, "views_malignant": 1}
    runs = {}
    for on in (True, False):
        cfg = CVConfig.from_profile("quick", recalibrate_bn=on, **common)  # type: ignore[arg-type]
        runs[on] = tmp_path / f"run_{on}"
        run_cv(patches, runs[on], cfg, progress=False)
    rf = RunFolder(runs[True])
    assert rf.read_done(0)["batchnorm_recalibrated"] is True
    assert RunFolder(runs[False]).read_done(0)["batchnorm_recalibrated"] is False
    split = rf.read_splits().split(0)
    ps = load_patches(patches)
    train = ~np.isin(ps.patient_id, split.val) & ~np.isin(ps.patient_id, split.inner_val)
    saved = load_fold_model(runs[True] / "folds" / "0" / "model.pt")
    plain = load_fold_model(runs[False] / "folds" / "0" / "model.pt")
    bns = [m for m in saved.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    recalibrate_batchnorm(saved, ps.x[train])
    for b, m in zip(before, bns, strict=True):
        torch.testing.assert_close(m.running_mean, b, rtol=1e-4, atol=1e-5)
    plain_bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(not torch.allclose(a.running_mean, b.running_mean, atol=1e-4) for a, b in zip(bns, plain_bns,
                                                                                               strict=True))
    # the weights are the same training's (same seeds): only the statistics differ
    for (name, a), (_, b) in zip(saved.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
