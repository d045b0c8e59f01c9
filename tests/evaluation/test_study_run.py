"""Study statistics on small made-up cohorts and run folders: API and ``spinedx stats`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from runhelpers import tiny_config, write_run_from
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import ManifestError, SpinedxError
from spinedx.evaluation.study import (
    ERROR_COLUMNS,
    MCNEMAR_COLUMNS,
    PERF_COLUMNS,
    TABLE1_COLUMNS,
    compute_study,
    detect_separation,
    feature_logistic,
    load_run,
    load_study_table,
    run_study,
)
from spinedx.features import FEATURE_COLUMNS

N_MAL, N_BEN = 12, 18


def make_cohort(seed: int = 0) -> pd.DataFrame:
    """30 patients, 15 features, three readers (R1 poor and with two missing calls)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(N_MAL, int), np.zeros(N_BEN, int)]
    n = len(y)
    df = pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(n)],
                       "label": np.where(y == 1, "malignant", "benign")})
    for j, col in enumerate(FEATURE_COLUMNS):
        p = np.where(y == 1, 0.3 + 0.03 * j, 0.6 - 0.03 * j)
        df[col] = (rng.random(n) < p).astype(int)
    flip = {"reader_senior": 0.02, "reader_r4": 0.05, "reader_r1": 0.35}
    for reader, err in flip.items():
        wrong = rng.random(n) < err
        df[reader] = np.where(wrong, np.where(y == 1, "benign", "malignant"), df["label"])
    df.loc[[0, N_MAL], "reader_r1"] = ""  # one malignant and one benign patient not read by R1
    df["t1_path"] = ""  # image columns may be present and empty: a study table without images
    return df


def make_run(root: Path, cohort: pd.DataFrame, n_folds: int = 5, drop: int = 1, threshold: float = 0.5,
             optimistic: bool = False) -> Path:
    """A run folder as ``spinedx cv`` writes it (spinedx.runfolder; no fold models), for all but the last
    ``drop`` patients of ``cohort`` (extraction skipped them); returns the run folder."""
    ids = cohort["patient_id"].to_numpy()[: len(cohort) - drop]
    y = (cohort["label"] == "malignant").to_numpy(int)[: len(ids)]
    fold = np.arange(len(ids)) % n_folds
    prob = np.clip(0.25 + 0.5 * y + np.random.default_rng(3).normal(0, 0.2, len(y)), 0, 1)
    config = tiny_config(folds=n_folds, threshold=threshold, early_stop_on="outer" if optimistic else "inner")
    return write_run_from(root, list(ids), y, prob, fold, config=config, models=False)


@pytest.fixture()
def cohort_csv(tmp_path: Path) -> Path:
    path = tmp_path / "cohort.csv"
    make_cohort().to_csv(path, index=False)
    return path


# --- logistic regression -------------------------------------------------------------------------


def test_logistic_on_features_that_determine_the_label() -> None:
    df = make_cohort()
    y = (df["label"] == "malignant").astype(int)
    df["feature_diffuse_signal_change"] = y  # this feature alone decides the label
    frame = load_study_table_from(df)
    x = frame[list(FEATURE_COLUMNS)].to_numpy(float)
    assert detect_separation(x, frame["y"].to_numpy()) == "complete"
    res = feature_logistic(frame, bootstrap_resamples=100)
    assert res["separation"] == "complete"
    assert res["method"].startswith("L2")
    assert all(f["method"].startswith("L2") for f in res["evaluation"]["folds"])
    assert res["evaluation"]["accuracy"] == 1.0
    assert res["evaluation"]["auc"] == 1.0
    assert res["evaluation"]["n_evaluated"] == N_MAL + N_BEN
    coefs = {c["feature"]: c["coefficient"] for c in res["coefficients"]["features"]}
    assert coefs["diffuse_signal_change"] == max(coefs.values())
    assert np.isfinite(list(coefs.values())).all()


def test_separation_kinds() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    overlap = np.array([[1], [1], [0], [1], [0], [0]])
    assert detect_separation(overlap, y) == "none"
    # Feature present only in malignant (like "intravertebral mass" in the paper): quasi-complete.
    quasi = np.array([[1, 1], [0, 1], [0, 0], [0, 1], [0, 0], [0, 0]])
    assert detect_separation(quasi, y) == "quasi-complete"


def test_logistic_without_separation_is_unpenalised_and_uses_run_folds(tmp_path: Path) -> None:
    df = make_cohort()
    frame = load_study_table_from(df)
    # Duplicate every patient with the opposite label: no separation is possible.
    flipped = frame.copy()
    flipped["patient_id"] = flipped["patient_id"] + "x"
    flipped["y"] = 1 - flipped["y"]
    both = pd.concat([frame, flipped], ignore_index=True)
    folds = [both["patient_id"].iloc[k::3].tolist() for k in range(3)]
    res = feature_logistic(both, folds, folds_source="test", bootstrap_resamples=100)
    assert res["separation"] == "none" and res["method"] == "unpenalised"
    assert res["evaluation"]["n_folds"] == 3 and res["evaluation"]["folds_source"] == "test"
    assert res["evaluation"]["n_evaluated"] == len(both)


def load_study_table_from(df: pd.DataFrame) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.csv"
        df.to_csv(path, index=False)
        return load_study_table(path)


# --- readers, missing calls, run folder -----------------------------------------------------------


def test_missing_reader_calls_are_left_out_and_counted(cohort_csv: Path) -> None:
    frame = load_study_table(cohort_csv)
    res = compute_study(frame, bootstrap_resamples=100)
    r1 = res.table2.set_index("rater").loc["reader_r1"]
    assert r1["n"] == N_MAL + N_BEN - 2 and r1["n_missing"] == 2
    assert r1["tp"] + r1["fn"] == N_MAL - 1 and r1["tn"] + r1["fp"] == N_BEN - 1
    senior = res.table2.set_index("rater").loc["reader_senior"]
    assert senior["n_missing"] == 0 and senior["n"] == N_MAL + N_BEN
    # McNemar pairs with R1 use only the patients R1 read.
    pair = res.mcnemar[(res.mcnemar["rater_a"] == "reader_senior") & (res.mcnemar["rater_b"] == "reader_r1")]
    assert pair.set_index("group")["n"].to_dict() == {"malignant": N_MAL - 1, "benign": N_BEN - 1}
    # The error analysis defaults to the least experienced reader and leaves out unread patients.
    assert res.error_reader == "reader_r1"
    fp = res.error_analysis[res.error_analysis["comparison"] == "fp_vs_tn"].iloc[0]
    assert fp["group1_total"] + fp["group2_total"] == N_BEN - 1


def test_counts_match_a_hand_count(cohort_csv: Path) -> None:
    df = pd.read_csv(cohort_csv, keep_default_na=False)
    res = compute_study(load_study_table(cohort_csv), bootstrap_resamples=100)
    r4 = res.table2.set_index("rater").loc["reader_r4"]
    assert r4["tp"] == ((df["label"] == "malignant") & (df["reader_r4"] == "malignant")).sum()
    assert r4["fp"] == ((df["label"] == "benign") & (df["reader_r4"] == "malignant")).sum()
    t1 = res.table1.set_index("feature").loc["band_pattern_edema"]
    assert t1["malignant_n"] == df.loc[df["label"] == "malignant", "feature_band_pattern_edema"].sum()
    assert t1["benign_total"] == N_BEN
    ea = res.error_analysis.set_index(["comparison", "feature"]).loc[("fp_vs_tn", "band_pattern_edema")]
    fp = (df["label"] == "benign") & (df["reader_r1"] == "malignant")
    assert ea["group1_total"] == fp.sum()
    assert ea["group1_n"] == df.loc[fp, "feature_band_pattern_edema"].sum()


def test_model_rater_from_run(tmp_path: Path, cohort_csv: Path) -> None:
    frame = load_study_table(cohort_csv)
    run = load_run(make_run(tmp_path / "run", make_cohort()), frame["patient_id"].tolist(),
                   dict(zip(frame["patient_id"], frame["y"], strict=True)))
    assert run.folds_source == "splits.json" and len(run.folds) == 5
    res = compute_study(frame, run, "model", bootstrap_resamples=100)
    model = res.table2.set_index("rater").loc["model"]
    assert model["n_missing"] == 1  # the last patient has no OOF prediction
    assert res.error_reader == "model"
    assert {"reader_r1", "model"} <= set(res.mcnemar["rater_b"])
    assert res.logistic["evaluation"]["folds_source"] == "run splits.json"
    assert res.summary["model"]["auc"] is not None


def test_run_files_are_read_strictly(tmp_path: Path) -> None:
    """No alias keys, no fallbacks: a splits.json or config.yaml in another layout is refused, naming the file."""
    run_dir = make_run(tmp_path / "run", make_cohort())
    cv_layout = load_run(run_dir).folds
    assert len(cv_layout) == 5 and cv_layout[1][0] == "P01"
    good = (run_dir / "splits.json").read_text()
    (run_dir / "splits.json").write_text(json.dumps({"folds": [{"fold": k, "val": f} for k, f in
                                                                enumerate(cv_layout)]}))
    with pytest.raises(SpinedxError, match=r"splits.json.*missing"):
        load_run(run_dir)
    (run_dir / "splits.json").write_text(good)
    cfg = run_dir / "config.yaml"
    cfg.write_text("threshold: 0.5\noptimistic: false\n")  # the old hand-written layout
    with pytest.raises(SpinedxError, match=r"config.yaml: no 'format'"):
        load_run(run_dir)


def test_run_study_writes_every_file(tmp_path: Path, cohort_csv: Path) -> None:
    run_dir = make_run(tmp_path / "run", make_cohort())
    res = run_study(cohort_csv, None, run_dir, bootstrap_resamples=100)
    out = run_dir / "stats"  # default output folder with a run
    assert res.out_dir == out
    assert list(pd.read_csv(out / "table2_performance.csv").columns) == list(PERF_COLUMNS)
    assert list(pd.read_csv(out / "mcnemar.csv").columns) == list(MCNEMAR_COLUMNS)
    assert list(pd.read_csv(out / "table1_features.csv").columns) == list(TABLE1_COLUMNS)
    assert list(pd.read_csv(out / "error_analysis.csv").columns) == list(ERROR_COLUMNS)
    summary = json.loads((out / "stats.json").read_text())
    assert summary["n_patients"] == N_MAL + N_BEN and "provenance" in summary
    assert json.loads((out / "feature_logistic.json").read_text())["coefficients"]["features"]


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_labels_and_reader_values_list_every_row(tmp_path: Path) -> None:
    df = make_cohort().astype(str)
    df.loc[1, "label"] = "tumour"
    df.loc[2, "reader_r4"] = "maybe"
    df.loc[3, "feature_fluid_sign"] = "2"
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ManifestError) as err:
        load_study_table(path)
    found = {(who.split("(")[-1].rstrip(")"), col) for who, col, _ in err.value.problems}
    assert found == {("P01", "label"), ("P03", "feature_fluid_sign"), ("P02", "reader_r4")}


def test_unknown_reader_and_run_patient_not_in_cohort(tmp_path: Path, cohort_csv: Path) -> None:
    frame = load_study_table(cohort_csv)
    with pytest.raises(SpinedxError, match="no rater 'reader_r9'"):
        compute_study(frame, reader="reader_r9", bootstrap_resamples=100)
    run_dir = make_run(tmp_path / "run", make_cohort())
    with pytest.raises(SpinedxError, match="patient P28 of the run is not in the cohort"):
        load_run(run_dir, frame["patient_id"].tolist()[:-2])


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path: Path, cohort_csv: Path) -> None:
    run_dir = make_run(tmp_path / "run", make_cohort())
    out = tmp_path / "stats"
    res = CliRunner().invoke(app, ["stats", str(cohort_csv), "--run", str(run_dir), "--reader", "reader_r1",
                                   "--out", str(out), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    assert "Table 2" in res.output and "model" in res.output
    for name in ("table2_performance.csv", "mcnemar.csv", "table1_features.csv", "feature_logistic.json",
                 "error_analysis.csv", "stats.json"):
        assert (out / name).is_file(), name
    assert set(pd.read_csv(out / "table2_performance.csv")["rater"]) == {
        "reader_senior", "reader_r4", "reader_r1", "model"}


def _one_error_line(res: Any) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("problem", ["no_label", "bad_label", "bad_reader", "no_oof", "stranger"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, problem: str) -> None:
    df = make_cohort()
    run_dir = make_run(tmp_path / "run", df)
    expect = str(tmp_path / "cohort.csv")
    if problem == "no_label":
        df = df.drop(columns="label")
    elif problem == "bad_label":
        df.loc[4, "label"] = "unknown"
        expect = "P04"
    elif problem == "bad_reader":
        df.loc[5, "reader_senior"] = "probably malignant"
        expect = "P05"
    elif problem == "no_oof":
        (run_dir / "oof_patients.csv").unlink()
        expect = "oof_patients.csv"
    elif problem == "stranger":
        df = df.iloc[1:]
        expect = "P00"
    df.to_csv(tmp_path / "cohort.csv", index=False)
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "cohort.csv"), "--run", str(run_dir),
                                   "--out", str(tmp_path / "out"), "--bootstrap", "200"])
    assert expect in _one_error_line(res)


def test_output_folder_needed_without_a_run(cohort_csv: Path) -> None:
    with pytest.raises(SpinedxError, match="--out"):
        run_study(cohort_csv, None, None)


def test_run_label_disagreeing_with_cohort_is_an_error(tmp_path: Path, cohort_csv: Path) -> None:
    frame = load_study_table(cohort_csv)
    run_dir = make_run(tmp_path / "run", make_cohort())
    oof = pd.read_csv(run_dir / "oof_patients.csv", dtype={"patient_id": str})
    oof.loc[oof["patient_id"] == "P03", "label"] = 0  # P03 is malignant in the cohort
    oof.to_csv(run_dir / "oof_patients.csv", index=False)
    with pytest.raises(SpinedxError, match="patient P03: label benign in the run disagrees"):
        load_run(run_dir, frame["patient_id"].tolist(), dict(zip(frame["patient_id"], frame["y"], strict=True)))


def test_run_threshold_and_optimistic_come_from_the_record(tmp_path: Path, cohort_csv: Path) -> None:
    frame = load_study_table(cohort_csv)
    labels = dict(zip(frame["patient_id"], frame["y"].astype(int), strict=True))
    run_dir = make_run(tmp_path / "run", make_cohort(), n_folds=3, drop=0, threshold=0.7, optimistic=True)
    run = load_run(run_dir, list(labels), labels)
    assert run.folds_source == "splits.json" and len(run.folds) == 3
    assert run.threshold == 0.7 and run.optimistic is True
    assert ((run.oof["probability"] >= 0.7).astype(int) == run.oof["prediction"]).all()
    res = compute_study(frame, run, bootstrap_resamples=100)
    assert res.table2.set_index("rater").loc["model", "n_missing"] == 0
    assert res.logistic["evaluation"]["n_folds"] == 3


def test_logistic_reports_in_sample_and_out_of_fold_accuracy_each_labelled() -> None:
    """In-sample (what the paper reported, 0.94) and out-of-fold accuracy, checked by refitting with sklearn."""
    from sklearn.linear_model import LogisticRegression

    df = make_cohort()
    frame = load_study_table_from(df)
    res = feature_logistic(frame, bootstrap_resamples=100)
    ins, oof = res["in_sample"], res["evaluation"]
    assert ins["label"].startswith("in-sample") and oof["label"].startswith("out-of-fold")
    assert ins["paper_accuracy"] == 0.94 and "paper_accuracy" not in oof
    x = frame[list(FEATURE_COLUMNS)].to_numpy(float)
    y = frame["y"].to_numpy(int)
    if res["method"] == "unpenalised":
        ref = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=1000).fit(x, y)
        assert ins["n_correct"] == int((ref.predict(x) == y).sum())
    assert ins["accuracy"] == ins["n_correct"] / ins["n"] and ins["n"] == N_MAL + N_BEN
    assert ins["accuracy"] >= oof["accuracy"]  # 15 features on 30 patients: the in-sample fit flatters itself


def test_cli_labels_both_accuracies_and_holm_and_says_synthetic(tmp_path: Path) -> None:
    df = make_cohort()
    df["synthetic"] = 1
    path = tmp_path / "cohort.csv"
    df.to_csv(path, index=False)
    res = CliRunner().invoke(app, ["stats", str(path), "--out", str(tmp_path / "out"), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "in-sample accuracy (fitted and scored on the same 30 patients, as the paper reported)" in flat
    assert "(paper: 0.94)" in flat and "out-of-fold accuracy" in flat
    assert flat.index("(paper: 0.94)") < flat.index("out-of-fold accuracy")  # the paper's figure sits by in-sample
    assert "Holm-adjusted" in flat and "p (Holm)" in flat
    assert flat.startswith("SYNTHETIC COHORT, SIMULATED READERS") and "illustration of the method" in flat
    summary = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert summary["synthetic"] is True and "simulated" in summary["illustration"]
    t1 = pd.read_csv(tmp_path / "out" / "table1_features.csv")
    assert "haldane" not in t1.columns and (t1["p_holm"] >= t1["p_value"] - 1e-12).all()


def test_real_cohort_stats_carry_no_synthetic_mark(tmp_path: Path, cohort_csv: Path) -> None:
    res = CliRunner().invoke(app, ["stats", str(cohort_csv), "--out", str(tmp_path / "out"), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    assert "synthetic" not in res.output.lower() and "simulated" not in res.output.lower()
    summary = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert summary["synthetic"] is False and summary["illustration"] is None


# --- outputs never replaced by another job's without --overwrite (issue 18) --------------------------------------


@pytest.mark.slow
def test_stats_of_other_inputs_are_not_replaced_without_overwrite(tmp_path: Path, cohort_csv: Path) -> None:
    """`spinedx stats` used to replace any folder holding a stats.json: statistics of another cohort or reader
    vanished silently. The same inputs redo them; other inputs need --overwrite (checked before computing)."""
    run_dir = make_run(tmp_path / "run", make_cohort())
    out = tmp_path / "stats"

    def stats(*args: str) -> Any:
        return CliRunner().invoke(app, ["stats", str(cohort_csv), "--run", str(run_dir), "--out", str(out),
                                        "--bootstrap", "100", *args])

    assert stats("--reader", "r1").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = _one_error_line(stats("--reader", "r4"))
    assert line.startswith(f"error: {out}: these statistics were made from other inputs (reader: 'reader_r1' "
                           "there, 'reader_r4' now)") and "--overwrite" in line
    line = _one_error_line(stats("--reader", "r1", "--bootstrap", "200"))
    assert "bootstrap_resamples: 100 there, 200 now" in line
    edited = tmp_path / "edited.csv"
    edited.write_text(cohort_csv.read_text() + "\n")  # another file (a blank line added: another sha256)
    res = CliRunner().invoke(app, ["stats", str(edited), "--run", str(run_dir), "--out", str(out), "--bootstrap",
                                   "100", "--reader", "r1"])
    line = _one_error_line(res)
    assert f"cohort: {cohort_csv.resolve()} (sha256 " in line and f"{edited.resolve()} (sha256" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert stats("--reader", "r1").exit_code == 0  # the same job reruns
    res = stats("--reader", "r4", "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "stats.json").read_text())["inputs"]["reader"] == "reader_r4"
    (out / "stats.json").write_text("{")
    assert "holds a stats.json that cannot be read" in _one_error_line(stats("--reader", "r4"))
