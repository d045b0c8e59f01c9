"""`spinedx readers analyze STUDY`: the study folder's reads and truth, the model that aided them, the least
experienced reader's errors unaided -> aided, and the refusals (one `error:` line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.common import json_clean
from spinedx.errors import SpinedxError
from spinedx.readers.analysis import analyze_reads, load_reads, load_truth
from spinedx.readers.modelref import model_identity
from spinedx.readers.reads import export_reads
from spinedx.readers.study_analysis import aided_errors, analyze_study, headline

from .studyhelpers import read_study, run_with_study


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


@pytest.fixture
def study_run(tmp_path: Path):
    cohort, run, study = run_with_study(tmp_path)
    reads = read_study(study, run=run)
    return cohort, run, study, reads


def test_study_form_is_the_csv_form_with_the_model_and_the_errors(study_run, tmp_path: Path) -> None:
    cohort, run, study, reads = study_run
    res = CliRunner().invoke(cli, ["readers", "analyze", str(study.path), "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"study: {study.path} (sequential design, readers senior, r4, r1; 72 of 72 planned")
    doc = json.loads((tmp_path / "s.json").read_text())

    # the same analysis as the exported CSV files with the run's out-of-fold probabilities as model scores
    export_reads(study.path, tmp_path / "export")
    oof = pd.read_csv(run / "oof_patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    model = pd.DataFrame({"case_id": study.case_ids,
                          "score": [oof.loc[study.patient_of(c), "probability"] for c in study.case_ids]})
    csv = analyze_reads(load_reads(tmp_path / "export" / "reads.csv"), load_truth(tmp_path / "export" / "truth.csv"),
                        model_scores=model).to_dict()
    for key in ("auc", "rrrc", "frrc", "rrfc", "variance_components", "readers_table", "mcnemar"):
        assert json.dumps(doc[key], sort_keys=True) == json.dumps(json_clean(csv[key]), sort_keys=True), key
    assert [m["model_auc"] for m in doc["model_vs_readers"]] == [m["model_auc"] for m in csv["model_vs_readers"]]
    # the model was found from the study's kept answers and checked to be the one that aided the reads
    assert doc["model"]["identity"] == model_identity(run) and doc["model"]["run"] == str(run.resolve())
    assert "out-of-fold" in doc["model"]["scores"] and doc["notes"] == []
    assert [c["model_score"] for c in doc["cases"]] == model["score"].tolist()
    assert doc["simulated"] is False and doc["study"]["study_id"] == study.study_id
    # aided - unaided is the analysis's unaided - aided turned round
    rrrc = doc["rrrc"]["ci"][0]
    assert rrrc["comparison"] == "unaided - aided"
    h = doc["aided_minus_unaided"]
    assert h["estimate"] == pytest.approx(-rrrc["estimate"]) and h["low"] == pytest.approx(-rrrc["high"])
    assert h["auc_aided"] == doc["auc"]["reader_average"]["aided"]

    # the least experienced reader's errors, unaided -> aided, counted from the reads themselves
    y = dict(zip(study.case_ids, pd.read_csv(tmp_path / "export" / "truth.csv")["truth"], strict=True))
    wrong_u = {c for c in study.case_ids if (reads[("r1", c, "unaided")][0] == "malignant") != bool(y[c])}
    wrong_a = {c for c in study.case_ids if (reads[("r1", c, "aided")][0] == "malignant") != bool(y[c])}
    e = doc["error_analysis"]
    assert e["reader"] == "r1"
    counts = e["counts"]
    assert counts["false_positive"]["unaided"] + counts["false_negative"]["unaided"] == len(wrong_u)
    assert counts["false_positive"]["fixed"] + counts["false_negative"]["fixed"] == len(wrong_u - wrong_a)
    assert counts["false_positive"]["new_errors"] + counts["false_negative"]["new_errors"] == len(wrong_a - wrong_u)
    assert {c["case_id"] for c in e["cases"] if c["outcome"] == "fixed"} == wrong_u - wrong_a
    assert e["features"] is not None and {f["comparison"] for f in e["features"]} == {"fp_vs_tn", "fn_vs_tp"}
    assert any(line.startswith("error analysis: r1 unaided:") for line in lines)
    assert lines[-2] == "wrote " + str(tmp_path / "s.json") or lines[-1] == "wrote " + str(tmp_path / "s.json")


def test_aided_errors_counts_fixed_still_wrong_and_new() -> None:
    truth = pd.DataFrame({"case_id": ["a", "b", "c", "d", "e"], "truth": [1, 1, 0, 0, 0]})
    calls = {"a": ("benign", "malignant"),   # FN fixed
             "b": ("benign", "benign"),      # FN still wrong
             "c": ("malignant", "benign"),   # FP fixed
             "d": ("benign", "malignant"),   # new FP
             "e": ("benign", "benign")}      # right
    reads = pd.DataFrame([{"case_id": c, "reader": "r1", "modality": m, "score": 10, "call": k}
                          for c, (u, a) in calls.items() for m, k in (("unaided", u), ("aided", a))])
    e = aided_errors(reads, truth, "r1")
    assert e.counts["false_negative"] == {"cases": 2, "unaided": 2, "fixed": 1, "still_wrong": 1, "new_errors": 0}
    assert e.counts["false_positive"] == {"cases": 3, "unaided": 1, "fixed": 1, "still_wrong": 0, "new_errors": 1}
    assert list(e.cases["outcome"]) == ["fixed", "still wrong", "fixed", "new error", "right"]
    assert e.features is None
    assert e.sentence() == ("r1 unaided: 1 false positive(s) (benign called malignant), 2 false negative(s); aided: "
                            "2 of the 3 fixed (1 FP, 1 FN), 1 new error(s)")


def test_headline_turns_unaided_minus_aided_round() -> None:
    doc = {"rrrc": {"f": 4.0, "ndf": 1, "ddf": 10.0, "p": 0.07,
                    "ci": [{"comparison": "unaided - aided", "estimate": -0.05, "low": -0.09, "high": -0.01,
                            "p": 0.07}]},
           "auc": {"reader_average": {"unaided": 0.8, "aided": 0.85}}}
    h = headline(doc)
    assert h is not None
    assert (h["estimate"], h["low"], h["high"]) == (0.05, 0.01, 0.09)
    assert (h["auc_unaided"], h["auc_aided"], h["ddf"]) == (0.8, 0.85, 10.0)
    assert headline({"rrrc": None}) is None


def test_without_the_model_the_comparison_is_left_out_with_a_note(tmp_path: Path) -> None:
    cohort, run, study = run_with_study(tmp_path)
    read_study(study)  # aided reads that name no model: the store has none
    res = CliRunner().invoke(cli, ["readers", "analyze", str(study.path)])
    assert res.exit_code == 0, res.output
    assert "note: model vs readers left out: no aided read was made yet, so the store names no model" in res.output
    assert "model vs readers (" not in res.output
    # given, a run whose patches come from another manifest has no out-of-fold probability of these cases
    other = run_with_study(tmp_path / "other", run_seed=1)[1]
    a = analyze_study(study.path, model=other)
    assert a.model is None and a.result.standalone == []
    assert len(a.notes) == 1 and "the study's cases are not the run's training cohort" in a.notes[0]


def test_incomplete_study_refused_unless_complete_cases_only(tmp_path: Path) -> None:
    cohort, run, study = run_with_study(tmp_path)
    read_study(study, run=run, skip={("r4", study.case_ids[0])})
    res = CliRunner().invoke(cli, ["readers", "analyze", str(study.path)])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert f"reader r4 in modality unaided lacks 1 case(s) ({study.case_ids[0]})" in line
    assert "--complete-cases-only" in line
    a = analyze_study(study.path, complete_cases_only=True)
    assert a.result.excluded_cases == [study.case_ids[0]] and len(a.result.cases) == len(study.case_ids) - 1
    assert any("left out (--complete-cases-only)" in n for n in a.notes)


def test_bad_input_one_error_line_each(study_run, tmp_path: Path) -> None:
    cohort, run, study, _ = study_run
    runner = CliRunner()
    # a study folder with no reads
    _, _, empty = run_with_study(tmp_path / "e")
    res = runner.invoke(cli, ["readers", "analyze", str(empty.path)])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == (
        f"error: {empty.path}: the study has no reads yet (0 of 72 planned reads (missing: senior 24 in session 1, "
        f"r4 24 in session 1, r1 24 in session 1)): read it first (spinedx serve --study {empty.path} ...), then "
        "analyse it")
    # a study holds its truth: --truth (or --model-scores) is refused
    res = runner.invoke(cli, ["readers", "analyze", str(study.path), "--truth", str(cohort)])
    assert res.exit_code == 2 and "a study folder holds its truth" in _one_error_line(res.output)
    # a model that did not aid the reads
    other = run_with_study(tmp_path / "o", run_seed=1)[1]
    res = runner.invoke(cli, ["readers", "analyze", str(study.path), "--model", str(other)])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert f"this study's aided reads showed model {model_identity(run)}, not this one" in line
    # the study form's options with READS.csv, a folder that is no study, READS.csv without --truth
    export_reads(study.path, tmp_path / "x")
    res = runner.invoke(cli, ["readers", "analyze", str(tmp_path / "x" / "reads.csv"), "--model", str(run)])
    assert res.exit_code == 2 and "belong to the study folder form" in _one_error_line(res.output)
    res = runner.invoke(cli, ["readers", "analyze", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not a study folder (no study.json)" in _one_error_line(res.output)
    res = runner.invoke(cli, ["readers", "analyze", str(tmp_path / "x" / "reads.csv")])
    assert res.exit_code == 2 and "needs its truth: --truth" in _one_error_line(res.output)
    # an unknown error reader
    with pytest.raises(SpinedxError, match="no reader 'r9'"):
        analyze_study(study.path, error_reader="r9")
