"""The report's reader-study section: `spinedx stats --study` (real reads) and `--simulated-study` write the
analysis into RUN/stats, the report shows it (arrows over the model's ROC curve, MRMC and per-reader tables, the
model vs the readers), SIMULATED where simulated; bad studies are refused with one `error:` line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from readers.studyhelpers import read_study, run_with_study, synthetic_cohort
from runhelpers import tiny_config, write_run_from
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.readers.modelref import model_identity
from spinedx.report import build_report
from spinedx.report import figures as F


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def _section(text: str) -> str:
    m = re.search(r'<section id="readerstudy">(.*?)</section>', text, re.S)
    assert m, "no reader-study section"
    return m.group(1)


@pytest.mark.slow
def test_stats_with_a_study_and_the_report_section(tmp_path: Path) -> None:
    cohort, run, study = run_with_study(tmp_path, models=True)
    read_study(study, run=run)
    # a report made before the study was analysed says how to add it
    build_report(run, cohort, gallery_per_group=0, bootstrap_resamples=100, progress=False)
    assert "No reader study: the statistics hold no unaided and aided reads" in _section(
        (run / "report.html").read_text())

    res = CliRunner().invoke(app, ["stats", str(cohort), "--run", str(run), "--study", str(study.path),
                                   "--bootstrap", "100"])
    assert res.exit_code == 0, res.output
    assert "reader study: RRRC aided - unaided AUC " in res.output and "SIMULATED" not in res.output
    stats = run / "stats"
    doc = json.loads((stats / "reader_study.json").read_text())
    assert doc["simulated"] is False and doc["study"]["study_id"] == study.study_id
    assert doc["model"]["identity"] == model_identity(run)
    assert [c["case_id"] for c in doc["cases"]] == study.case_ids
    for f in ("reader_study_readers.csv", "reader_study_mcnemar.csv", "reader_study_error_cases.csv",
              "reader_study_error_features.csv"):
        assert (stats / f).is_file(), f
    assert not (stats / "reader_study_reads.csv").exists()  # the reads stay in the study's store
    summary = json.loads((stats / "stats.json").read_text())
    assert summary["inputs"]["study"] == {"kind": "study folder", "path": str(study.path),
                                          "study_id": study.study_id}
    assert summary["reader_study"]["aided_minus_unaided"] == doc["aided_minus_unaided"]

    build_report(run, cohort, gallery_per_group=0, bootstrap_resamples=100, progress=False)
    text = (run / "report.html").read_text()
    sec = _section(text)
    assert "<h2>Reader study</h2>" in sec and "SIMULATED" not in sec and "banner-readerstudy" not in sec
    assert re.search(r'<img alt="Each reader[^"]*" src="data:image/png;base64,', sec)
    assert "RRRC: readers and cases random" in sec and "FRRC: readers fixed" in sec and "RRFC: cases fixed" in sec
    h = doc["aided_minus_unaided"]
    assert f"{h['estimate']:+.3f} ({h['low']:+.3f} to {h['high']:+.3f})" in sec
    assert "Model vs readers, unaided reads" in sec and "Model vs readers, aided reads" in sec
    assert 'id="readerstudy-errors"' in sec and "Errors of r1" in sec
    readers = pd.read_csv(run / "report_reader_study_readers.csv")
    assert list(readers["reader"]) == ["senior", "r4", "r1"] and not readers["simulated"].any()
    mrmc = pd.read_csv(run / "report_reader_study_mrmc.csv")
    assert mrmc["aided_minus_unaided"].iloc[0] == pytest.approx(h["estimate"])

    # the statistics now hold the study: a rerun without it would drop it, so it is refused
    res = CliRunner().invoke(app, ["stats", str(cohort), "--run", str(run), "--bootstrap", "100"])
    assert res.exit_code == 2
    assert f"reader study: {study.path} there, none now" in _one_error_line(res.output)


def test_bad_studies_one_error_line_each(tmp_path: Path) -> None:
    cohort, run, study = run_with_study(tmp_path / "a")
    runner = CliRunner()

    def stats(*args: str) -> str:
        res = runner.invoke(app, ["stats", str(cohort), "--run", str(run), "--bootstrap", "100", *args])
        assert res.exit_code == 2, res.output
        return _one_error_line(res.output)

    # no reads
    assert "the study has no reads yet (0 of 72 planned reads" in stats("--study", str(study.path))
    # a study planned on another cohort than the run's
    _, other_run, other = run_with_study(tmp_path / "b", run_seed=1)
    read_study(other, run=other_run)
    line = stats("--study", str(other.path))
    assert line.startswith(f"error: {other.path}: this study was planned on another cohort manifest")
    assert f"than {cohort}" in line
    # a study of this cohort aided by another model
    read_study(study, run=other_run)
    line = stats("--study", str(study.path))
    assert f"this study's aided reads showed model {model_identity(other_run)}, not this run" in line
    # the options
    assert "give --run RUN" in _one_error_line(runner.invoke(app, ["stats", str(cohort), "--study",
                                                                   str(study.path)]).output)
    assert "not both" in stats("--study", str(study.path), "--simulated-study")
    assert not (run / "stats").exists()


def test_simulated_study_without_a_synthetic_run_is_refused(tmp_path: Path) -> None:
    cohort, run, _ = run_with_study(tmp_path)
    res = CliRunner().invoke(app, ["stats", str(cohort), "--run", str(run), "--simulated-study"])
    assert res.exit_code == 2
    assert "the run was not trained on a synthetic cohort" in _one_error_line(res.output)


@pytest.mark.slow
def test_simulated_study_in_stats_and_report_says_simulated(tmp_path: Path) -> None:
    cohort = synthetic_cohort(tmp_path / "c", n=16, malignant=6, seed=11)
    man = pd.read_csv(cohort)
    y = (man["label"] == "malignant").to_numpy().astype(int)
    rng = np.random.default_rng(2)
    prob = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.2, len(y)), 0.02, 0.98)
    fold = np.zeros(len(y), dtype=int)
    for cls in (0, 1):
        fold[y == cls] = np.arange(int((y == cls).sum())) % 2
    run = write_run_from(tmp_path / "w", list(man["patient_id"]), y, prob, fold, config=tiny_config(folds=2),
                         manifest=cohort, synthetic=True)
    res = CliRunner().invoke(app, ["stats", str(cohort), "--run", str(run), "--simulated-study", "--bootstrap",
                                   "100"])
    assert res.exit_code == 0, res.output
    assert "simulated reader study (SIMULATED readers and reliance): RRRC aided - unaided AUC" in res.output
    stats = run / "stats"
    doc = json.loads((stats / "reader_study.json").read_text())
    assert doc["simulated"] is True and doc["what"].startswith("SIMULATED reader study")
    assert doc["simulation"]["reliance"] == {"senior": 0.15, "r4": 0.3, "r1": 0.5}
    assert doc["error_analysis"]["reader"] == "r1"
    # the simulated reads are kept with the statistics: the CSV analysis gives the same figures
    reads = pd.read_csv(stats / "reader_study_reads.csv")
    assert set(reads["modality"]) == {"unaided", "aided"} and len(reads) == 16 * 3 * 2
    out = CliRunner().invoke(app, ["readers", "analyze", str(stats / "reader_study_reads.csv"), "--truth",
                                   str(stats / "reader_study_truth.csv"), "--model-scores",
                                   str(stats / "reader_study_model.csv"), "--json", str(tmp_path / "csv.json")])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "csv.json").read_text())["rrrc"] == doc["rrrc"]

    # the simulation draws no random number: the other statistics are those made without it
    res = CliRunner().invoke(app, ["stats", str(cohort), "--run", str(run), "--bootstrap", "100", "--out",
                                   str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    for f in ("table2_performance.csv", "mcnemar.csv", "table1_features.csv", "error_analysis.csv",
              "feature_logistic.json"):
        assert (stats / f).read_bytes() == (tmp_path / "plain" / f).read_bytes(), f
    with_study, plain = (json.loads((d / "stats.json").read_text()) for d in (stats, tmp_path / "plain"))
    for key in ("inputs", "files", "provenance", "reader_study"):
        with_study.pop(key, None), plain.pop(key, None)
    assert with_study == plain

    build_report(run, cohort, gallery_per_group=0, bootstrap_resamples=100, progress=False)
    sec = _section((run / "report.html").read_text())
    assert "<h2>Reader study (SIMULATED readers)</h2>" in sec and 'id="banner-readerstudy"' in sec
    assert "SIMULATED reader study." in sec and "not evidence about real readers" in sec
    assert "senior (simulated)" in sec and "r1 (simulated)" in sec
    assert "reliance senior 0.15, r4 0.3, r1 0.5" in sec
    assert pd.read_csv(run / "report_reader_study_mrmc.csv")["simulated"].all()


def test_reader_study_figure_draws_an_arrow_per_reader_that_moved() -> None:
    from matplotlib.text import Annotation

    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.4, 0.8, 0.9])
    moves = [(F.OperatingPoint("a", 0.6, 0.7), F.OperatingPoint("a", 0.8, 0.75)),
             (F.OperatingPoint("b", 0.9, 0.9), F.OperatingPoint("b", 0.9, 0.9)),   # did not move: no arrow
             (F.OperatingPoint("c", 0.5, 0.5), F.OperatingPoint("c", 0.7, 0.6))]
    fig = F.reader_study_figure(y, p, moves, simulated=True)
    ax = fig.axes[0]
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert len(arrows) == 2
    assert [a.xy for a in arrows] == [(1 - 0.75, 0.8), (1 - 0.6, 0.7)]  # each points at the aided point
    assert ax.get_title().startswith("SIMULATED readers")
    labels = ax.get_legend_handles_labels()[1]
    assert labels[1].startswith("model (out-of-fold), AUC") and "a: sens 0.60 -> 0.80, spec 0.70 -> 0.75" in labels
    assert F.data_uri(fig).startswith("data:image/png;base64,")
    plain = F.reader_study_figure(None, None, moves[:1])
    assert plain.axes[0].get_title().startswith("Readers:")
    assert not any(lab.startswith("model") for lab in plain.axes[0].get_legend_handles_labels()[1])
