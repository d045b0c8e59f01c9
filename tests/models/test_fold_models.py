"""Fold models: weights-only save/load, the run's models checked against its record, ensemble prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from runhelpers import write_run

from spinedx.errors import SpinedxError, WeightsError
from spinedx.inference import make_engine
from spinedx.interop import model_fingerprint
from spinedx.models import build_model, load_fold_model, load_run, save_fold_model


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
    prob = make_engine(loaded).predict(x)
    assert prob.shape == (2, 5) and prob.dtype == np.float32
    assert ((prob > 0) & (prob < 1)).all()
    original = load_fold_model(run / "folds" / "1" / "model.pt")
    with torch.no_grad():
        ref = torch.sigmoid(original(torch.from_numpy(x))).numpy().ravel()
    np.testing.assert_allclose(prob[1], ref, atol=1e-5)  # fp32, whatever the CPU
    assert not np.allclose(prob[0], prob[1])
    one = loaded.select([1])
    assert one.folds == [1] and one.model_sha256 == {1: loaded.model_sha256[1]} and one.models == loaded.models[1:]
    assert one.fingerprint == model_fingerprint(run, [1]) != loaded.fingerprint  # names the model that answered
    with pytest.raises(WeightsError, match=r"--fold: fold\(s\) 2 not in this model: it has fold\(s\) 0, 1"):
        loaded.select([2])


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
    shutil.copytree(run / "folds" / "0", run / "folds" / "1")  # fold 0's folder where fold 1's belongs
    with pytest.raises(SpinedxError, match=r"folds/1/done.json: not the done record of fold 1"):
        load_run(run)
    _forget_model_sha256(run, 1, fold=1)  # a run trained before the models' sha256 were recorded
    with pytest.raises(WeightsError, match=r"folds/1/model.pt: holds fold 0, not fold 1"):
        load_run(run)
    (run / "folds" / "1" / "model.pt").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(WeightsError, match=r"folds/1/model.pt: not a readable spinedx fold model.*delete the folder"):
        load_run(run)
    model, _ = build_model("resnet34", pretrained="none")
    save_fold_model(model, run / "folds" / "1" / "model.pt", 1)
    with pytest.raises(WeightsError, match="holds a resnet34 model, the run's backbone is resnet18"):
        load_run(run)


def _forget_model_sha256(run: Path, k: int, fold: int | None = None) -> None:
    """Make fold ``k``'s done.json what spinedx wrote before it recorded the model's sha256."""
    done = json.loads((run / "folds" / str(k) / "done.json").read_text())
    done.pop("model_sha256", None)
    if fold is not None:
        done["fold"] = fold
    (run / "folds" / str(k) / "done.json").write_text(json.dumps(done))


def _other_weights(path: Path, fold: int) -> None:
    """Replace a fold model by a readable one with other weights (what a substitution looks like)."""
    model = load_fold_model(path)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    save_fold_model(model, path, fold, best_epoch=1)


def test_a_fold_model_is_the_one_trained(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: a run's fold model is compared with the sha256 its done.json recorded at training time; a
    substituted model is refused naming the file (it was loaded, and a prediction's SR named its hash); a run
    trained before the sha256 was recorded loads with a warning."""
    run = write_run(tmp_path, n_patients=12, n_folds=2)
    loaded = load_run(run)
    recorded = {k: json.loads((run / "folds" / str(k) / "done.json").read_text())["model_sha256"] for k in (0, 1)}
    assert loaded.model_sha256 == recorded and loaded.notes == []
    assert loaded.fingerprint == model_fingerprint(run)
    before = (run / "folds" / "1" / "model.pt").read_bytes()
    _other_weights(run / "folds" / "1" / "model.pt", 1)
    with pytest.raises(WeightsError, match=r"folds/1/model.pt: this file's sha256 is [0-9a-f]{64}, "
                                           r"folds/1/done.json \(model_sha256.*says " + recorded[1]):
        load_run(run)
    from spinedx.inference import export_bundle

    with pytest.raises(WeightsError, match="folds/1/model.pt"):
        export_bundle(run, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
    # a truncated file is said to be damaged (not merely "other bytes"), the torch message whole
    (run / "folds" / "1" / "model.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(WeightsError) as info:
        load_run(run)
    assert "folds/1/model.pt: not a readable spinedx fold model: the file is damaged, truncated" in str(info.value)
    assert "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory); " \
           "delete the folder" in str(info.value)
    # trained before spinedx recorded the sha256: loaded, with a warning that says so
    (run / "folds" / "1" / "model.pt").write_bytes(before)
    _forget_model_sha256(run, 1)
    with caplog.at_level("WARNING", logger="spinedx.models.run"):
        old = load_run(run)
    assert old.folds == [0, 1] and len(old.notes) == 1 and "fold(s) 1 of" in old.notes[0]
    assert any("record no model sha256" in r.getMessage() for r in caplog.records)


def test_a_truncated_model_message_is_whole(tmp_path: Path) -> None:
    """Issue 18 (minor): the message was cut at 200 characters, mid-sentence."""
    model, _ = build_model("resnet18", pretrained="none")
    path = tmp_path / "model.pt"
    save_fold_model(model, path, 0)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError) as info:
        load_fold_model(path)
    message = str(info.value)
    assert message.endswith("failed finding central directory); rerun spinedx cv"), message
    torch.save({"backbone": "resnet18", "state_dict": {}, "where": tmp_path}, path)  # a pickled Python object
    with pytest.raises(WeightsError) as info:
        load_fold_model(path)
    message = str(info.value)
    assert "spinedx loads weights only, never code (Unsupported global: GLOBAL pathlib.PosixPath was not an " \
           "allowed global by default); rerun spinedx cv" in message, message
    assert "\x1b" not in message and "weights_only" not in message  # no terminal escapes, no advice to load it unsafely
