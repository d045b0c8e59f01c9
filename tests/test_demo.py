"""spinedx demo: the whole chain on a tiny synthetic cohort, then a resume that skips every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.demo import STAGES, _default_malignant, _load_state, run_demo
from spinedx.errors import SpinedxError


def test_default_malignant_keeps_the_paper_proportion() -> None:
    assert _default_malignant(190) == 50
    assert _default_malignant(12) == 3
    assert _default_malignant(2) == 1


def test_other_settings_are_named_one_by_one(tmp_path: Path) -> None:
    """A demo folder from before a setting existed (here the cpu profile's test-time views): the refusal names the
    nested keys that differ, not two whole configurations."""
    cv = {"profile": "cpu", "epochs": 14, "recalibrate_bn": True, "augment": {"rotation_deg": 15.0}}
    (tmp_path / "demo.json").write_text(json.dumps({"settings": {"seed": 2022, "cv": cv}, "stages": {}}))
    now = {"seed": 2022, "cv": {**cv, "tta": "affine8", "augment": {"rotation_deg": 10.0}}}
    with pytest.raises(SpinedxError) as err:
        _load_state(tmp_path / "demo.json", now)
    msg = err.value.message
    assert "cv.augment.rotation_deg: 15.0 there, 10.0 now; cv.tta: absent there, 'affine8' now" in msg
    assert "epochs" not in msg and "recalibrate_bn" not in msg
    same = _load_state(tmp_path / "demo.json", {"seed": 2022, "cv": cv})
    assert same["settings"]["cv"] == cv


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    messages: list[str] = []
    kw: dict = {"n_patients": 8, "n_malignant": 4, "seed": 1, "folds": 2, "backbone": "resnet18", "epochs": 1,
                "register": False, "bootstrap_resamples": 50, "gallery_per_group": 1, "progress": False}
    res = run_demo(out, log=messages.append, **kw)
    assert [res.stages[s]["status"] for s in STAGES] == ["done"] * 5
    for f in ("cohort/cohort.csv", "patches/patches.npz", "run/metrics.json", "run/oof_patients.csv",
              "run/stats/table2_performance.csv", "run/report.html", "demo.json"):
        assert (out / f).is_file(), f
    text = res.report.read_text()
    assert '<section id="gallery">' in text and 'src="http' not in text
    raters = [r["rater"] for r in res.table2]
    assert "model" in raters and "reader_r1" in raters
    lines = res.summary_lines()
    assert lines[0] == f"report: {res.report.resolve()}"
    assert any(line.strip().startswith("model ") and "sensitivity" in line for line in lines)
    assert any("AUC" in line for line in lines)
    assert "research use only" in lines[-1]
    # the synthetic cohort says so, and the model stands next to the baselines fitted on its folds
    assert lines[1].startswith("SYNTHETIC COHORT, SIMULATED READERS")
    assert any(line.startswith("radiomics baseline AUC") and "same folds" in line for line in lines)
    assert any(line.startswith("  -> the CNN") and "radiomics baseline" in line for line in lines)
    assert any(line.startswith("feature regression") for line in lines)
    assert 'id="banner-synthetic"' in text and '<section id="baselines">' in text
    # the simulated reader study: one line of it, labelled simulated, and the report's section
    assert any(line.startswith("simulated reader study (SIMULATED readers and reliance): RRRC aided - unaided AUC ")
               for line in lines), lines
    assert res.reader_study is not None and res.reader_study["simulated"] is True
    assert res.reader_study["readers"] == ["senior", "r4", "r1"] and res.reader_study["n_cases"] == 8
    assert (out / "run" / "stats" / "reader_study_reads.csv").is_file()
    assert '<section id="readerstudy">' in text and "<h2>Reader study (SIMULATED readers)</h2>" in text
    assert 'id="banner-readerstudy"' in text

    # Resume through the CLI: every stage's outputs are complete, nothing runs again.
    mtime = res.report.stat().st_mtime_ns
    cli = CliRunner().invoke(app, ["demo", str(out), "--patients", "8", "--malignant", "4", "--seed", "1",
                                   "--folds", "2", "--backbone", "resnet18", "--epochs", "1", "--no-register",
                                   "--no-progress"])
    assert cli.exit_code == 0, cli.output
    assert cli.output.count("already complete, skipped") == 5
    assert f"report: {res.report.resolve()}" in cli.output
    assert res.report.stat().st_mtime_ns == mtime
    settings = json.loads((out / "demo.json").read_text())["settings"]
    assert settings["n_patients"] == 8
    # the main job trains the cpu profile (docs/training.md): one-cycle schedule, the last epoch kept
    assert settings["profile"] == "cpu" and settings["cv"]["lr_schedule"] == "onecycle"
    assert settings["cv"]["early_stop_on"] == "none"

    # domain.json is written last by the cv stage: a cv stopped before it is finished again on resume (it used to
    # count as complete with metrics.json alone, and the run then decided without its domain check)
    (out / "run" / "domain.json").unlink()
    res2 = run_demo(out, log=None, **kw)
    assert res2.stages["cv"]["status"] == "done" and (out / "run" / "domain.json").is_file()

    # Other settings on the same folder are refused (exit 2, one line).
    with pytest.raises(SpinedxError, match="other settings"):
        run_demo(out, log=None, **{**kw, "seed": 2})
    cli = CliRunner().invoke(app, ["demo", str(out), "--patients", "9", "--no-progress"])
    assert cli.exit_code == 2 and cli.output.strip().startswith("error:")


def test_a_folder_that_is_no_demo_folder_is_refused(tmp_path: Path) -> None:
    """A non-empty OUT_DIR without demo.json was used as a demo folder: a cohort/ or run/ of the user's was taken as
    a finished stage and read (or a later stage written over it). Refused before anything is written."""
    out = tmp_path / "mine"
    (out / "cohort").mkdir(parents=True)
    (out / "cohort" / "cohort.csv").write_text("patient_id,label\n")
    (out / "cohort" / "synth.json").write_text("{}")
    res = CliRunner().invoke(app, ["demo", str(out), "--patients", "8", "--no-progress"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [f"error: {out}: not empty (cohort) and not a demo folder (no demo.json); choose a new or empty "
                     "OUT_DIR"]
    assert sorted(p.name for p in out.rglob("*")) == ["cohort", "cohort.csv", "synth.json"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("")
    with pytest.raises(SpinedxError, match="malignant"):  # an empty folder (hidden files aside) is accepted
        run_demo(tmp_path / "empty", n_patients=8, n_malignant=9, log=None)
