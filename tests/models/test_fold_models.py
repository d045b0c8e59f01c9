"""Fold models: weights-only save/load and ensemble prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spinedx.errors import WeightsError
from spinedx.models import build_model, load_run, predict_patches, save_fold_model


def _run_folder(tmp_path: Path, n_folds: int = 2) -> tuple[Path, list]:
    run = tmp_path / "run"
    models = []
    for k in range(n_folds):
        torch.manual_seed(k)
        model, _ = build_model("resnet18", pretrained="none")
        (run / "folds" / str(k)).mkdir(parents=True)
        save_fold_model(model, run / "folds" / str(k) / "model.pt", k, best_epoch=3)
        models.append(model.eval())
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"backbone": "resnet18", "threshold": 0.4,
                                                                "aggregation": "mean"}, "optimistic": True}))
    return run, models


@pytest.mark.slow
def test_load_run_and_predict(tmp_path: Path) -> None:
    run, originals = _run_folder(tmp_path)
    loaded = load_run(run)
    assert loaded.folds == [0, 1] and loaded.threshold == 0.4 and loaded.aggregation == "mean"
    assert loaded.optimistic and loaded.backbone == "resnet18"
    assert all(not m.training for m in loaded.models)
    payload = torch.load(run / "folds" / "1" / "model.pt", weights_only=True)
    assert payload["fold"] == 1 and payload["backbone"] == "resnet18" and len(payload["channel_names"]) == 6
    x = np.random.default_rng(0).normal(size=(5, 6, 64, 64)).astype(np.float32)
    prob = predict_patches(loaded, x)
    assert prob.shape == (2, 5) and prob.dtype == np.float32
    assert ((prob > 0) & (prob < 1)).all()
    with torch.no_grad():
        ref = torch.sigmoid(originals[1](torch.from_numpy(x))).numpy().ravel()
    # bf16 inference where supported: close to fp32, not bitwise
    np.testing.assert_allclose(prob[1], ref, atol=0.03)
    np.testing.assert_allclose(predict_patches(loaded, x, bf16=False)[1], ref, atol=1e-4)
    assert not np.allclose(prob[0], prob[1])


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="config.yaml"):
        load_run(tmp_path)
    (tmp_path / "config.yaml").write_text("config: {}\n")
    with pytest.raises(WeightsError, match="no fold models"):
        load_run(tmp_path)
