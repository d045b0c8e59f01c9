"""The shared strict records (spinedx.records) and the folders' one writers: RunFolder.write_fold (every file of a fold
folder) and patchset.write_patches (the patches folder)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinedx.errors import SpinedxError
from spinedx.patchset import load_patches, write_patches
from spinedx.provenance import sha256_file
from spinedx.records import read_json, read_table, strict_keys, write_json
from spinedx.runfolder import FOLD_FILES, RunFolder, RunFolderError


class _OwnerError(SpinedxError):
    pass


def test_read_json_refuses_in_one_line_with_the_owners_error(tmp_path: Path) -> None:
    with pytest.raises(_OwnerError, match=r"x.json: x.json missing; rerun it") as info:
        read_json(tmp_path / "x.json", "x.json", "rerun it", error=_OwnerError)
    assert info.value.where == str(tmp_path / "x.json")
    (tmp_path / "x.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(_OwnerError, match="not a text file"):
        read_json(tmp_path / "x.json", "x.json", "rerun it", error=_OwnerError)
    (tmp_path / "x.json").write_text('{"a": 1,\n')
    with pytest.raises(_OwnerError, match=r"not valid JSON \(line 2: .*\); rerun it"):
        read_json(tmp_path / "x.json", "x.json", "rerun it", error=_OwnerError)
    write_json(tmp_path / "x.json", {"a": np.float64("nan"), "b": np.int64(2)})
    assert read_json(tmp_path / "x.json", "x.json", "rerun it") == {"a": None, "b": 2}
    assert (tmp_path / "x.json").read_text() == '{\n "a": null,\n "b": 2\n}\n'


def test_strict_keys_names_missing_and_unknown_keys() -> None:
    assert strict_keys({"a": 1, "b": 2}, ["a", "b"], "doc", "f", "redo") == {"a": 1, "b": 2}
    with pytest.raises(_OwnerError, match=r"doc: missing b; unknown c, z \(not what this spinedx version writes\); "
                                          "redo"):
        strict_keys({"a": 1, "z": 0, "c": 3}, ["a", "b"], "doc", "f", "redo", error=_OwnerError)
    with pytest.raises(SpinedxError, match="doc must be a mapping, found list"):
        strict_keys([1], ["a"], "doc", "f", "redo")


def test_read_table_is_strict(tmp_path: Path) -> None:
    cols = ("patient_id", "fold", "label", "probability", "prediction")
    path = tmp_path / "t.csv"
    path.write_text("patient_id,fold,label,probability,prediction\n007,1,1,0.75,1\n")
    df = read_table(path, cols, "redo")
    assert df["patient_id"].tolist() == ["007"] and df["fold"].dtype == np.int64  # ids stay text
    path.write_text("patient_id,fold,label,probability,prediction\n007,1,1,1.5,1\n")
    with pytest.raises(_OwnerError, match=r"probabilities must lie in \[0, 1\]; redo"):
        read_table(path, cols, "redo", error=_OwnerError)
    path.write_text("patient_id,fold,label,probability,prediction\n007,x,1,0.5,1\n")
    with pytest.raises(SpinedxError, match=r"fold on line 2 is not a number \('x'\)"):
        read_table(path, cols, "redo")


def _fold(rf: RunFolder, fold: int, save_model: Callable[[Path], None] | None = None) -> dict:
    def save(path: Path) -> None:
        path.write_bytes(b"weights of fold %d" % fold)

    preds = pd.DataFrame({"probability": [0.25, 0.5], "label": [0, 1], "fold": fold, "slice_index": [7, 8],
                          "patient_id": ["A", "B"]})  # columns in another order: written in the documented one
    return rf.write_fold(fold, history=pd.DataFrame({"epoch": [1], "train_loss": [0.7], "val_loss": [0.6]}),
                         curves_png=b"\x89PNG\r\n\x1a\n", save_model=save_model or save, predictions=preds,
                         done={"fold": fold, "best_val_loss": np.float32(0.5), "seconds": float("nan")})


def test_write_fold_writes_every_file_of_a_fold_and_records_the_model(tmp_path: Path) -> None:
    rf = RunFolder(tmp_path / "run")
    done = _fold(rf, 1)
    folder = rf.fold_dir(1)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLD_FILES)
    assert done == json.loads((folder / "done.json").read_text()) == rf.read_done(1)
    assert done["model_sha256"] == sha256_file(folder / "model.pt") and done["seconds"] is None
    assert (folder / "predictions.csv").read_text().splitlines()[0] == "patient_id,slice_index,fold,label,probability"
    assert rf.scan_folds(2).complete == [1]
    with pytest.raises(RunFolderError, match="already finished"):
        _fold(rf, 1)


def test_write_fold_interrupted_leaves_nothing(tmp_path: Path) -> None:
    rf = RunFolder(tmp_path / "run")

    def interrupted(path: Path) -> None:
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fold(rf, 0, interrupted)
    assert list(rf.folds_dir().iterdir()) == []


def test_write_patches_writes_the_pair_that_load_patches_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(4, 6, 8, 8)).astype(np.float32), "patient_id": np.array(["A", "A", "B", "B"]),
              "slice_index": np.array([3, 4, 3, 4]), "label": np.array([0, 0, 1, 1]), "synthetic": np.array(True)}
    doc = {"config": {"patch_size": 8}, "synthetic": True}
    (tmp_path / "p").mkdir()
    npz, js = write_patches(tmp_path / "p", arrays, doc)
    assert (npz, js) == (tmp_path / "p" / "patches.npz", tmp_path / "p" / "extract.json")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["extract.json", "patches.npz"]  # no temporaries
    assert json.loads(js.read_text())["patches_sha256"] == sha256_file(npz) == doc["patches_sha256"]
    patches = load_patches(tmp_path / "p")
    assert patches.synthetic and patches.patch_size == 8 and patches.extract == json.loads(js.read_text())
    np.testing.assert_array_equal(patches.x, arrays["x"])
