"""Repeated cross-validation: repeat r is the run with seed + r, each repeat resumes fold by fold, the spread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cv import make_patches, tiny_config
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.cli.cvview import summary_lines
from spinedx.errors import SpinedxError
from spinedx.evaluation.cv import run_cv
from spinedx.runfolder import RunFolder
from spinedx.training.engine import fold_seed


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_repeats_resume_and_report_the_spread(tmp_path: Path) -> None:
    patches = make_patches(tmp_path / "patches", n_patients=18, size=32, seed=1)
    cfg = tiny_config(epochs=1, seed=3)
    calls: list[int] = []

    def kill_in_repeat_1(k: int) -> None:
        calls.append(k)
        if len(calls) == 4:  # repeat 0's three folds, then repeat 1's fold 0
            raise _Killed

    run = tmp_path / "run"
    with pytest.raises(_Killed):
        run_cv(patches, run, cfg, progress=False, on_fold_done=kill_in_repeat_1, repeats=2)
    assert json.loads((run / "repeats.json").read_text()) == {"format": 1, "repeats": 2, "seeds": [3, 4]}
    assert sorted(p.name for p in (run / "folds").iterdir()) == ["0", "1", "2"]
    assert sorted(p.name for p in (run / "repeats" / "1" / "folds").iterdir()) == ["0"]
    stamp = (run / "repeats" / "1" / "folds" / "0" / "model.pt").stat().st_mtime_ns
    trained: list[int] = []
    metrics = run_cv(patches, run, cfg, progress=False, on_fold_done=trained.append, repeats=2)
    assert trained == [1, 2]  # only repeat 1's unfinished folds
    assert (run / "repeats" / "1" / "folds" / "0" / "model.pt").stat().st_mtime_ns == stamp

    # repeat 1 is the single run with seed 3 + 1: same splits, same fold seeds
    rf = RunFolder(run)
    assert rf.read_splits(1).seed == 4 and rf.read_splits().seed == 3
    assert rf.read_done(2, 1)["seed"] == fold_seed(4, 2) and rf.read_done(2)["seed"] == fold_seed(3, 2)
    assert rf.read_splits(1).fold_of != rf.read_splits().fold_of  # new patient splits

    # the root is repeat 0 (what predict, export, stats and report read), plus the repeats section
    rep0 = pd.read_csv(run / "oof_patients.csv")
    rep1 = pd.read_csv(run / "repeats" / "1" / "oof_patients.csv")
    m1 = json.loads((run / "repeats" / "1" / "metrics.json").read_text())
    assert m1["repeat"] == 1 and m1["baselines"]["radiomics"]["status"] == "ok"
    for r in (None, 1):  # the radiomics features are computed once for all repeats; their time is recorded in each
        assert rf.read_baselines(r)[0]["baselines"]["radiomics"]["seconds_features"] > 0, r
    section = metrics["repeats"]
    assert section["n"] == 2 and section["seeds"] == [3, 4]
    auc = section["spread"]["auc"]
    assert auc["values"] == [metrics["auc"], m1["auc"]]
    assert auc["mean"] == pytest.approx(np.mean(auc["values"]))
    assert auc["sd"] == pytest.approx(np.std(auc["values"], ddof=1))
    assert (auc["min"], auc["max"]) == (min(auc["values"]), max(auc["values"]))
    rad = section["baselines"]["radiomics"]["auc"]["values"]
    assert rad == [metrics["baselines"]["radiomics"]["auc"], m1["baselines"]["radiomics"]["auc"]]
    pooled = pd.concat([rep0, rep1]).groupby("patient_id")["probability"].mean()
    from spinedx.evaluation.metrics import roc_auc

    labels = rep0.set_index("patient_id").loc[pooled.index, "label"]
    assert section["pooled"]["auc"] == pytest.approx(roc_auc(labels.to_numpy(), pooled.to_numpy()))
    assert json.loads((run / "metrics.json").read_text())["repeats"]["n"] == 2
    lines = summary_lines(metrics)
    assert any(ln.startswith("repeated cross-validation: 2 repeats (seeds 3, 4)") for ln in lines)
    assert any(ln.startswith("  model across repeats: auc mean") for ln in lines)
    assert any(ln.startswith("  radiomics baseline across repeats: auc mean") for ln in lines)

    # finished: a rerun trains nothing and refits no baseline
    doc = run / "repeats" / "1" / "baselines" / "baselines.json"
    stamp = doc.stat().st_mtime_ns
    again: list[int] = []
    run_cv(patches, run, cfg, progress=False, on_fold_done=again.append, repeats=2)
    assert again == [] and doc.stat().st_mtime_ns == stamp
    # another number of repeats is refused, not mixed
    for n in (1, 3):
        with pytest.raises(SpinedxError, match="repeated 2 time"):
            run_cv(patches, run, cfg, progress=False, repeats=n)


def test_repeats_must_be_positive(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["cv", str(tmp_path), "--out", str(tmp_path / "run"), "--repeats", "0"])
    assert res.exit_code == 2 and "--repeats must be a whole number >= 1" in res.output
    assert not (tmp_path / "run").exists()
