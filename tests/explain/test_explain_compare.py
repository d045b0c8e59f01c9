"""The method comparison: case selection, groups, intervals, and the written folder of a tiny fake run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spinedx.errors import SpinedxError
from spinedx.explain import DEFAULT_METHOD
from spinedx.explain.compare import cluster_bootstrap, format_table, load_cases, paired, run_comparison, summarise
from spinedx.explain.metrics import energy_share, pointing_game


def _scores() -> pd.DataFrame:
    """Three patients, two slices each; p1 and p2 malignant, p3 benign; p2 called wrongly."""
    rows = []
    for pid, label, correct, hits, energies in (("p1", 1, True, (True, False), (0.8, 0.2)),
                                                ("p2", 1, False, (False, False), (0.1, 0.3)),
                                                ("p3", 0, True, (True, True), (0.5, 0.7))):
        for k in range(2):
            rows.append({"method": "m", "patient_id": pid, "slice_index": k, "label": label, "correct": correct,
                         "deciding": k == 0, "hit": hits[k], "energy": energies[k], "empty": False,
                         "mask_area": 0.25})
    return pd.DataFrame(rows)


def test_summarise_by_case_and_by_slice() -> None:
    from statsmodels.stats.proportion import proportion_confint

    s = summarise(_scores(), unit="case", n_boot=200).set_index("group")
    assert s.loc["all", "n"] == 3 and s.loc["all", "hits"] == 2  # deciding slices: p1 hit, p2 miss, p3 hit
    lo, hi = proportion_confint(2, 3, method="wilson")
    assert s.loc["all", "pointing_lo"] == pytest.approx(lo) and s.loc["all", "pointing_hi"] == pytest.approx(hi)
    assert s.loc["all", "energy"] == pytest.approx((0.8 + 0.1 + 0.5) / 3)
    assert s.loc["malignant", "n"] == 2 and s.loc["benign", "hits"] == 1
    assert s.loc["wrong", "n"] == 1 and s.loc["wrong", "hits"] == 0 and s.loc["correct", "hits"] == 2
    assert s.loc["all", "energy_lo"] <= s.loc["all", "energy"] <= s.loc["all", "energy_hi"]
    t = summarise(_scores(), unit="slice", n_boot=200).set_index("group")
    assert t.loc["all", "n"] == 6 and t.loc["all", "hits"] == 3 and t.loc["all", "patients"] == 3
    assert t.loc["all", "energy"] == pytest.approx(2.6 / 6)
    with pytest.raises(ValueError, match="unit"):
        summarise(_scores(), unit="patient")
    assert "| m | 0.67 (" in format_table(summarise(_scores(), n_boot=50), "case", ("all",))


def test_paired_against_a_reference() -> None:
    a = _scores()
    b = a.assign(method="n", hit=~a["hit"], energy=a["energy"] - 0.1)
    p = paired(pd.concat([a, b]), "m", n_boot=200).set_index("group")
    # deciding slices: m hits p1, p3; n hits p2 -> m ahead by (2 - 1) / 3, McNemar on 2 vs 1 discordant
    assert p.loc["all", "pointing_diff"] == pytest.approx(1 / 3)
    assert (p.loc["all", "only_reference_hits"], p.loc["all", "only_method_hits"]) == (2, 1)
    assert p.loc["all", "mcnemar_p"] == pytest.approx(1.0)  # exact binomial, 3 discordant pairs
    assert p.loc["all", "energy_diff"] == pytest.approx(0.1)
    assert p.loc["all", "energy_diff_lo"] == pytest.approx(0.1) and p.loc["all", "energy_diff_hi"] == pytest.approx(0.1)
    assert p.loc["malignant", "n"] == 2


def test_cluster_bootstrap_resamples_patients() -> None:
    df = pd.DataFrame({"patient_id": ["a", "a", "a", "b"], "v": [1.0, 1.0, 1.0, 0.0]})
    lo, hi = cluster_bootstrap(df, "v", 2000, 0)
    # possible resamples: {a,a} -> 1, {b,b} -> 0, {a,b} -> 3/4: the interval spans 0..1, not row-wise values
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    same = pd.DataFrame({"patient_id": ["a", "b"], "v": [0.4, 0.4]})
    assert cluster_bootstrap(same, "v", 100, 0) == pytest.approx((0.4, 0.4))


def _fake_run(tmp_path: Path, with_mask: bool = True, models: bool = True) -> Path:
    """Two folds of randomly initialised resnet18 fold models, four patients of two slices each."""
    import torch

    from spinedx.models.net import build_model
    from spinedx.models.run import save_fold_model

    rng = np.random.default_rng(0)
    pids = np.repeat([f"P{i}" for i in range(4)], 2)
    sidx = np.tile([3, 4], 4)
    labels = np.repeat([1, 0, 1, 0], 2)
    x = rng.normal(size=(8, 6, 64, 64)).astype(np.float32)
    mask = np.zeros((8, 64, 64), np.float32)
    mask[:, 20:44, 16:40] = 1.0
    mask[7] = 0.0  # a slice the lesion does not reach: left out of the scores
    arrays = {"x": x, "patient_id": pids, "slice_index": sidx, "label": labels, "synthetic": np.array(True)}
    if with_mask:
        arrays["mask"] = mask
    np.savez(tmp_path / "patches.npz", **arrays)
    run = tmp_path / "run"
    for k in (0, 1):
        (run / "folds" / str(k)).mkdir(parents=True)
        if not models:
            continue
        torch.manual_seed(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model("resnet18", pretrained="none")
        save_fold_model(model, run / "folds" / str(k) / "model.pt", k)
    (run / "config.yaml").write_text(yaml.safe_dump({"config": {"threshold": 0.5, "backbone": "resnet18"},
                                                     "patches_file": str(tmp_path / "patches.npz")}))
    probs = [0.9, 0.7, 0.2, 0.6, 0.3, 0.4, 0.1, 0.2]
    pd.DataFrame({"patient_id": pids, "slice_index": sidx, "fold": np.repeat([0, 1, 0, 1], 2), "label": labels,
                  "probability": probs}).to_csv(run / "oof_slices.csv", index=False)
    pd.DataFrame({"patient_id": [f"P{i}" for i in range(4)], "fold": [0, 1, 0, 1], "label": [1, 0, 1, 0],
                  "probability": [0.9, 0.6, 0.4, 0.2], "prediction": [1, 1, 0, 0]}).to_csv(
        run / "oof_patients.csv", index=False)
    (run / "metrics.json").write_text(json.dumps({"auc": 0.75}))
    return run


def test_load_cases_joins_and_marks_deciding_slices(tmp_path: Path) -> None:
    cases = load_cases(_fake_run(tmp_path, models=False))
    sl = cases.slices
    assert cases.x.shape == (8, 6, 64, 64) and cases.mask.shape == (8, 64, 64)
    assert sl.loc[sl["deciding"], "slice_index"].tolist() == [3, 4, 4, 4]  # highest probability per patient
    assert sl.groupby("patient_id")["correct"].first().tolist() == [True, False, False, True]
    assert sl["mask_area"].iloc[-1] == 0 and sl["mask_area"].iloc[0] == pytest.approx(24 * 24 / 64 / 64)


def test_load_cases_refusals(tmp_path: Path) -> None:
    with pytest.raises(SpinedxError, match="oof_slices.csv missing"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.yaml").write_text("{}")
        load_cases(tmp_path / "empty")
    run = _fake_run(tmp_path, with_mask=False, models=False)
    with pytest.raises(SpinedxError, match="no lesion mask"):
        load_cases(run)


@pytest.mark.slow
def test_run_comparison_writes_a_complete_folder(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    out = tmp_path / "cmp"
    methods = list(dict.fromkeys(["layercam-layer2", DEFAULT_METHOD]))
    summary = run_comparison(run, out, methods=methods, n_boot=50, log=lambda _s: None)
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "examples.png", "maps.npz", "paired.csv",
                                                     "scores.csv", "summary.csv"]
    pairs = pd.read_csv(out / "paired.csv")
    assert set(pairs["method"]) == {*methods, "random", "centre-prior"} - {DEFAULT_METHOD}
    assert set(pairs["reference"]) == {DEFAULT_METHOD}
    assert set(summary["method"]) == {*methods, "random", "centre-prior"}
    case_all = summary[(summary["unit"] == "case") & (summary["group"] == "all")]
    assert set(case_all["n"]) == {3}  # P3's deciding slice has an empty mask: P3 is left out
    scores = pd.read_csv(out / "scores.csv", dtype={"patient_id": str})
    assert len(scores) == (len(methods) + 2) * 7  # 7 slices with a lesion
    cases = load_cases(run)
    with np.load(out / "maps.npz") as npz:
        layercam = npz["layercam-layer2"].astype(np.float64)
    keep = cases.slices["mask_area"].to_numpy() > 0
    got = scores[scores["method"] == "layercam-layer2"]
    np.testing.assert_array_equal(got["hit"].to_numpy(), pointing_game(layercam[keep], cases.mask[keep]))
    np.testing.assert_allclose(got["energy"].to_numpy(), energy_share(layercam[keep], cases.mask[keep]), atol=1e-3)
    record = json.loads((out / "comparison.json").read_text())
    assert record["synthetic"] is True and record["run_auc"] == 0.75 and record["n_patients"] == 4
    assert (out / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _current_format_run(tmp_path: Path) -> Path:
    """A run folder written by spinedx.runfolder (tests/runhelpers), its patches given a lesion mask."""
    from runhelpers import record_for, tiny_config, write_run_from

    from spinedx.provenance import sha256_file
    from spinedx.runfolder import RunFolder

    pids = [f"P{i}" for i in range(6)]
    y = np.array([1, 0, 1, 0, 1, 0])
    config = tiny_config(folds=2)
    run = write_run_from(tmp_path, pids, y, np.array([0.9, 0.2, 0.3, 0.6, 0.8, 0.1]), np.array([0, 0, 0, 1, 1, 1]),
                         config=config, synthetic=True)
    npz = tmp_path / "patches" / "patches.npz"
    with np.load(npz) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["mask"] = np.zeros(arrays["x"].shape[:1] + arrays["x"].shape[2:], np.float32)
    arrays["mask"][:, 21:43, 21:43] = 1.0
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)
    ej = tmp_path / "patches" / "extract.json"
    ej.write_text(json.dumps(json.loads(ej.read_text()) | {"patches_sha256": sha256_file(npz)}))
    RunFolder(run).write_record(record_for(tmp_path / "patches", config))
    return run


@pytest.mark.slow
def test_current_run_folder_format(tmp_path: Path) -> None:
    run = _current_format_run(tmp_path)
    cases = load_cases(run)
    assert cases.synthetic and cases.x.shape == (12, 6, 64, 64) and len(cases.slices) == 12
    assert cases.slices["deciding"].sum() == 6 and (cases.slices["mask_area"] > 0).all()
    out = tmp_path / "cmp"
    run_comparison(run, out, methods=[DEFAULT_METHOD], n_boot=20, log=lambda _s: None)
    assert json.loads((out / "comparison.json").read_text())["synthetic"] is True
    other = tmp_path / "other.npz"
    with np.load(tmp_path / "patches" / "patches.npz") as d:
        arrays = {k: d[k] for k in d.files}
    arrays["x"] = arrays["x"] + 1
    np.savez(other, **arrays)
    with pytest.raises(SpinedxError, match="not the ones the run was trained on"):
        load_cases(run, other)
