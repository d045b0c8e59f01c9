"""Fold models: weights-only save/load, the run's models checked against its record, ensemble prediction."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from runhelpers import write_run

from spinedx.errors import SpinedxError, WeightsError
from spinedx.models import build_model, load_fold_model, load_run, predict_patches, save_fold_model


@pytest.mark.slow
def test_load_run_and_predict(tmp_path: Path) -> None:
    run = write_run(tmp_path, n_patients=12, n_folds=2, threshold=0.4, aggregation="mean", optimistic=True)
    loaded = load_run(run)
    assert loaded.folds == [0, 1] and loaded.threshold == 0.4 and loaded.aggregation == "mean"
    assert loaded.optimistic and loaded.backbone == "resnet18" and loaded.missing_folds == []
    assert loaded.patch_size == 64 and loaded.record.patches.extract is not None
    assert all(not m.training for m in loaded.models)
    payload = torch.load(run / "folds" / "1" / "model.pt", weights_only=True)
    assert payload["fold"] == 1 and payload["backbone"] == "resnet18" and len(payload["channel_names"]) == 6
    x = np.random.default_rng(0).normal(size=(5, 6, 64, 64)).astype(np.float32)
    prob = predict_patches(loaded, x)
    assert prob.shape == (2, 5) and prob.dtype == np.float32
    assert ((prob > 0) & (prob < 1)).all()
    original = load_fold_model(run / "folds" / "1" / "model.pt")
    with torch.no_grad():
        ref = torch.sigmoid(original(torch.from_numpy(x))).numpy().ravel()
    # bf16 inference where supported: close to fp32, not bitwise
    np.testing.assert_allclose(prob[1], ref, atol=0.03)
    np.testing.assert_allclose(predict_patches(loaded, x, bf16=False)[1], ref, atol=1e-4)
    assert not np.allclose(prob[0], prob[1])


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(SpinedxError, match="config.yaml missing"):
        load_run(tmp_path)
    (tmp_path / "config.yaml").write_text("config: {}\n")
    with pytest.raises(SpinedxError, match="no 'format'"):
        load_run(tmp_path)


@pytest.mark.slow
def test_missing_extra_and_damaged_fold_models(tmp_path: Path) -> None:
    """Issue 8: a 2-fold run with one model.pt deleted must not answer from 1 model; 1.bak must not crash."""
    run = write_run(tmp_path, n_patients=12, n_folds=2)
    shutil.rmtree(run / "folds" / "1")
    with pytest.raises(SpinedxError, match=r"fold\(s\) 1 of 2 have no model.*--allow-missing-folds"):
        load_run(run)
    partial = load_run(run, allow_missing_folds=True)
    assert partial.folds == [0] and partial.missing_folds == [1]
    shutil.copytree(run / "folds" / "0", run / "folds" / "1.bak")
    with pytest.raises(SpinedxError, match=r"unexpected entry '1.bak'"):
        load_run(run, allow_missing_folds=True)
    shutil.rmtree(run / "folds" / "1.bak")
    shutil.copytree(run / "folds" / "0", run / "folds" / "1")  # fold 0's model where fold 1's belongs
    with pytest.raises(WeightsError, match=r"folds/1/model.pt: holds fold 0, not fold 1"):
        load_run(run)
    (run / "folds" / "1" / "model.pt").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(WeightsError, match=r"folds/1/model.pt: not a readable spinedx fold model.*delete the folder"):
        load_run(run)
    model, _ = build_model("resnet34", pretrained="none")
    save_fold_model(model, run / "folds" / "1" / "model.pt", 1)
    with pytest.raises(WeightsError, match="holds a resnet34 model, the run's backbone is resnet18"):
        load_run(run)
