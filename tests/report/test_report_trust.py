"""The report refuses what it must not show (issue 8): missing or extra fold models, changed patches, damaged files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runhelpers import write_patches
from typer.testing import CliRunner

from spinedx.cli import app


def _one_error(args: list[str], *needles: str) -> str:
    res = CliRunner().invoke(app, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_missing_fold_model_refused_unless_allowed(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    (run / "folds" / "1").rename(run / "folds" / ".1.removed")  # hidden: ignored, so fold 1 is missing
    _one_error(["report", str(run), "--no-progress"], "fold(s) 1 of 2 have no model", "--allow-missing-folds")
    assert not (run / "report.html").exists()
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "1", "--allow-missing-folds"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert 'id="banner-folds"' in text and "Fold model(s) 1 of 2 are missing" in text
    assert "1 of 2 (missing: 1)" in text


def test_stray_fold_folder_is_named(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    shutil.copytree(run / "folds" / "1", run / "folds" / "1.bak")
    _one_error(["report", str(run), "--no-progress"], "1.bak", "unexpected entry", "move it out")


def test_patches_reextracted_with_another_size_refused(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    patches = run.parent / "patches"
    before = pd.read_csv(run / "oof_patients.csv")
    pids = sorted(before["patient_id"])
    y = before.set_index("patient_id").loc[pids, "label"].to_numpy()
    write_patches(patches, pids, y, size=32, seed=5)  # re-extracted after training with --patch-size 32
    _one_error(["report", str(run), "--no-progress"], "patches.npz", "changed since the run was trained",
               "--allow-changed-patches")
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--allow-changed-patches"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert 'id="banner-patches"' in text and "without images" in text
    assert "data:image/png" not in text.split('id="gallery"')[1].split("</section>")[0]


def test_synthetic_run_has_the_banner_and_marks_reader_tests(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2, synthetic=True)
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert 'id="banner-synthetic"' in text and "simulated readers" in text
    banner = text.index('id="banner-synthetic"')
    assert banner < text.index('<section id="summary">')  # the page opens with it
    assert "says nothing about patients" in text and "illustrations of the method" in text
    assert "senior (simulated)" in text and "illustration of the method only" in text


def test_real_cohort_report_has_no_synthetic_marks(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2, synthetic=False)
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert 'id="banner-synthetic"' not in text and "(simulated)" not in text
    assert "illustration" not in text and "simulated readers" not in text
    assert "<td>senior</td>" in text  # the readers are there, unmarked


def test_damaged_run_files_are_one_line_each(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    cfg = run / "config.yaml"
    good = cfg.read_text()
    cfg.write_text(good + "\n  broken: [unclosed\n")
    _one_error(["report", str(run)], "config.yaml", "not valid YAML")
    cfg.write_text(good.replace("format: 1", "format: 1\nextra_key: 3"))
    _one_error(["report", str(run)], "config.yaml", "unknown extra_key")
    cfg.write_text(good)

    metrics = run / "metrics.json"
    kept = metrics.read_text()
    metrics.write_text(kept[: len(kept) // 2])
    _one_error(["report", str(run)], "metrics.json", "not valid JSON", "rerun spinedx cv")
    metrics.write_text(json.dumps({"auc": 0.9}))
    _one_error(["report", str(run)], "metrics.json", "missing or bad")
    metrics.write_text(kept)

    oof = run / "oof_patients.csv"
    df = pd.read_csv(oof, dtype=str)
    df.loc[2, "probability"] = "high"
    df.to_csv(oof, index=False)
    _one_error(["report", str(run)], "oof_patients.csv", "probability on line 4 is not a number")
    df = df.drop(columns=["prediction"])
    df.to_csv(oof, index=False)
    _one_error(["report", str(run)], "oof_patients.csv", "columns")


def test_corrupt_fold_model_names_the_file(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    model = run / "folds" / "0" / "model.pt"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])  # truncated
    _one_error(["report", str(run), "--no-progress", "--gallery", "2"], "folds/0/model.pt",
               "not a readable spinedx fold model", "rerun spinedx cv")


def test_report_outputs_complete_or_untouched(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    (run / "report.html").mkdir()  # a folder where the report goes: one line, nothing written
    _one_error(["report", str(run), "--gallery", "0", "--no-progress"], "report.html")
    assert not any(p.name.startswith("report_") for p in run.iterdir())
    assert not any(".tmp-" in p.name for p in run.iterdir())
    np.testing.assert_equal(sorted(p.name for p in (run / "report.html").iterdir()), [])


def test_baselines_section_and_the_banner_when_the_cnn_does_not_beat_radiomics(run_factory) -> None:
    """The planted model does worse than first-order statistics on the planted patches: the page says so at the
    top and in the section; a model that exceeds the baseline gets no such banner."""
    from spinedx.evaluation.cv import finish_run

    run = run_factory(n_patients=18, n_folds=3, optimistic=False)
    metrics = finish_run(run)  # as spinedx cv ends: fits the baselines on the run's folds
    assert metrics["baselines"]["radiomics"]["vs_model"]["verdict"] != "exceeds"
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert '<section id="baselines">' in text and 'id="banner-baseline"' in text
    assert text.index('id="banner-baseline"') < text.index('<section id="summary">')
    assert "The CNN does not exceed the radiomics baseline" in text
    assert 'alt="ROC curves of the model and the baselines"' in text
    table = pd.read_csv(run / "report_baselines.csv")
    assert list(table["classifier"]) == ["CNN (resnet18)", "radiomics baseline", "feature regression"]
    assert table.loc[1, "auc"] == pytest.approx(metrics["baselines"]["radiomics"]["auc"])
    assert "do as well or better" in text
    doc = json.loads((run / "metrics.json").read_text())
    vs = doc["baselines"]["radiomics"]["vs_model"]
    # had the CNN scored higher with an interval spanning zero, the banner must not say the baseline did as well
    vs.update(verdict="not shown", sentence="the CNN is not shown to exceed the radiomics baseline (made up)")
    (run / "metrics.json").write_text(json.dumps(doc))
    assert CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"]).exit_code == 0
    text = (run / "report.html").read_text()
    assert 'id="banner-baseline"' in text and "do as well or better" not in text
    assert "the CNN&#39;s AUC is the higher, but the interval of the difference includes zero" in text
    # the same run, had the CNN exceeded the baseline: no banner, a plain verdict
    vs.update(verdict="exceeds", sentence="the CNN exceeds the radiomics baseline (made up for this test)")
    (run / "metrics.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    text = (run / "report.html").read_text()
    assert 'id="banner-baseline"' not in text and '<div class="verdict exceeds">' in text


def test_run_without_baselines_says_how_to_add_them(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2)  # written without finish_run: no baselines section
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert "This run has no baselines" in text and 'id="banner-baseline"' not in text


def test_repeats_section_shows_the_spread_or_says_single(run_factory) -> None:
    """A repeated run shows each metric's mean, SD and range next to repeat 0 and the pooled figures; a single
    cross-validation says its intervals ignore training randomness."""
    from spinedx.evaluation.cv import finish_run, repeat_summary

    run = run_factory(n_patients=18, n_folds=3, optimistic=False)
    metrics = finish_run(run)
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert '<section id="repeats">' in text and "A single cross-validation" in text
    assert not (run / "report_repeats.csv").exists()
    second = {**metrics, "auc": metrics["auc"] - 0.1}
    pooled = pd.read_csv(run / "oof_patients.csv")
    metrics["repeats"] = repeat_summary([metrics, second], pooled, 0.5, 0, [0, 1])
    (run / "metrics.json").write_text(json.dumps(metrics))
    res = CliRunner().invoke(app, ["report", str(run), "--no-progress", "--gallery", "0"])
    assert res.exit_code == 0, res.output
    text = (run / "report.html").read_text()
    assert "2 repeats of the whole 3-fold cross-validation with seeds 0, 1" in text
    table = pd.read_csv(run / "report_repeats.csv")
    auc = table[(table["classifier"] == "CNN (resnet18)") & (table["metric"] == "auc")].iloc[0]
    assert auc["mean"] == pytest.approx(metrics["auc"] - 0.05)
    assert auc["sd"] == pytest.approx(np.std([metrics["auc"], metrics["auc"] - 0.1], ddof=1))
    assert auc["max"] - auc["min"] == pytest.approx(0.1)
    assert set(table["classifier"]) == {"CNN (resnet18)", "radiomics baseline", "feature regression"}
    assert "CNN minus radiomics baseline patient AUC across repeats" in text


# -- outputs never replaced by another job's without --overwrite (issue 18) -----------------------------------------
def test_report_of_another_run_or_a_foreign_file_is_not_replaced_without_overwrite(run_factory, tmp_path) -> None:
    """`spinedx report --out` silently replaced any file: another run's report or a file of the user's."""
    run_a = run_factory(n_patients=12, n_folds=2)
    run_b = run_factory(n_patients=12, n_folds=2)
    out = tmp_path / "shared.html"
    args = ["--gallery", "0", "--no-progress", "--out", str(out)]
    assert CliRunner().invoke(app, ["report", str(run_a), *args]).exit_code == 0
    before = out.read_bytes()
    assert CliRunner().invoke(app, ["report", str(run_a), *args]).exit_code == 0  # the same run's report: rewritten
    _one_error(["report", str(run_b), *args], str(out), f"holds the report of another run ({run_a.resolve()})",
               "--overwrite")
    assert b"spinedx-report-run" in before and out.read_bytes() != before  # rewritten above, not by the refusal
    kept = out.read_bytes()
    _one_error(["report", str(run_b), *args], "another run")
    assert out.read_bytes() == kept
    res = CliRunner().invoke(app, ["report", str(run_b), *args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert f'content="{run_b.resolve()}"' in out.read_text()
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    _one_error(["report", str(run_a), "--gallery", "0", "--no-progress", "--out", str(notes)],
               "exists and is not a spinedx report", "--overwrite")
    assert notes.read_text() == "<html>my notes</html>"


def test_rewritten_report_removes_the_tables_it_no_longer_has(run_factory, tmp_path) -> None:
    """A report rewritten without the statistics left the earlier report_table1_features.csv beside it,
    describing another report."""
    run = run_factory(n_patients=12, n_folds=2)
    CliRunner().invoke(app, ["report", str(run), "--gallery", "0", "--no-progress"])
    assert (run / "report_table1_features.csv").is_file()
    shutil.rmtree(run / "stats")
    bare = tmp_path / "bare.csv"  # a study table without features or readers: no statistics this time
    bare.write_text("patient_id,label\n" + "\n".join(f"P{i:03d},{'malignant' if i % 3 == 0 else 'benign'}"
                                                      for i in range(12)) + "\n")
    res = CliRunner().invoke(app, ["report", str(run), "--gallery", "0", "--no-progress", "--cohort", str(bare)])
    assert res.exit_code == 0, res.output
    assert not (run / "report_table1_features.csv").exists() and not (run / "report_mcnemar.csv").exists()
    assert all((run / name).is_file() for name in
               re.search(r'spinedx-report-tables" content="([^"]*)"', (run / "report.html").read_text())[1].split("/"))


def test_statistics_of_another_cohort_are_not_shown_as_this_one(run_factory, tmp_path) -> None:
    """`spinedx report RUN --cohort OTHER.csv` showed the tables RUN/stats had from another manifest."""
    run = run_factory(n_patients=12, n_folds=2)
    assert CliRunner().invoke(app, ["report", str(run), "--gallery", "0", "--no-progress"]).exit_code == 0
    made = json.loads((run / "stats" / "stats.json").read_text())["inputs"]["cohort"]
    other = tmp_path / "other.csv"
    other.write_text(Path(made).read_text().replace("malignant", "benign", 1))
    _one_error(["report", str(run), "--gallery", "0", "--no-progress", "--cohort", str(other)],
               "stats", "made from another cohort manifest", "--overwrite")
    assert CliRunner().invoke(app, ["report", str(run), "--gallery", "0", "--no-progress", "--cohort",
                                    made]).exit_code == 0
