"""The HTML study report: every section, self-contained, model-only fallback, CLI errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.explain import DEFAULT_METHOD, METHODS, method_caption
from spinedx.report import GALLERY_GROUPS, SECTIONS, build_report


def _assert_self_contained(text: str) -> None:
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs, "no images"
    assert all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
    assert "<link" not in text and "<script" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert not re.search(r"url\(", text)


@pytest.mark.slow
def test_full_report_has_every_section(run_factory) -> None:
    run = run_factory(n_patients=16, n_folds=2, optimistic=True)
    # the cohort is found via extract.json
    path = build_report(run, gallery_per_group=1, bootstrap_resamples=100, progress=False)
    assert path == run / "report.html"
    text = path.read_text()
    _assert_self_contained(text)
    for sid, heading in SECTIONS:
        assert f'<section id="{sid}">' in text, sid
        assert f"<h2>{heading}" in text, heading
    for key in GALLERY_GROUPS:
        assert f'id="gallery-{key}"' in text
    # the statistics were computed because the run recorded its cohort
    for f in ("table2_performance.csv", "mcnemar.csv", "table1_features.csv", "feature_logistic.json"):
        assert (run / "stats" / f).is_file(), f
    # banners: research use always; optimistic because the run says so; no ImageNet weights
    assert 'id="banner-research"' in text and "research use only, not for clinical decisions" in text.lower()
    assert 'id="banner-optimistic"' in text
    assert 'id="banner-warning"' in text
    # Table 1 rows carry the paper's feature names; Table 2 has readers and the model
    assert "Diffuse signal change of the vertebral body &gt; 3/4" in text
    t2 = pd.read_csv(run / "report_table2_performance.csv")
    assert {"reader_senior", "reader_r4", "reader_r1", "model"} <= set(t2["rater"])
    assert (run / "report_mcnemar.csv").is_file() and (run / "report_table1_features.csv").is_file()
    folds = pd.read_csv(run / "report_per_fold_auc.csv")
    assert list(folds["fold"]) == [0, 1] and folds["patients"].sum() == 16
    # gallery: the planted false negative (P000) and false positive (P001) with heatmaps of the default method
    gal = pd.read_csv(run / "report_gallery.csv", dtype={"patient_id": str})
    assert set(gal["group"]) == {"tp", "tn", "fn", "fp"}
    assert gal.set_index("group").loc["fn", "patient_id"] == "P000"
    assert gal.set_index("group").loc["fp", "patient_id"] == "P001"
    assert gal["heatmap"].all()
    # the page numbers the slice from 1 (as the workstation and viewers do); the CSV keeps the 0-based slice_index
    for _, g in gal.iterrows():
        assert f"<b>{g.patient_id}</b> &middot; truth" in text
        assert f"T2 slice {int(g.slice_index) + 1} (numbered from 1; p = {g.slice_probability:.3f})" in text
    label = METHODS[DEFAULT_METHOD].label
    assert text.count(f"with {label}\" src=\"data:image/png") == 4
    assert f"<h2>Case gallery with heatmaps ({label})</h2>" in text
    assert f"the {method_caption(DEFAULT_METHOD)} heatmap" in text  # the caption names the method and its reference
    assert "abc123" in text  # the run's git commit in the provenance
    assert "<th>Test-time augmentation</th><td>none (the patch alone)</td>" in text
    assert "fixed affine views" not in text


def test_report_says_when_probabilities_average_test_time_views(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2, optimistic=False, tta="affine8")
    text = build_report(run, gallery_per_group=0, bootstrap_resamples=50, progress=False).read_text()
    assert "Every slice probability is the mean over the patch and 8 fixed affine views of it" in text
    row = "<th>Test-time augmentation</th><td>affine8: mean probability over the patch and 8 fixed affine views"
    assert row in text
    assert "tta: affine8" in text  # the configuration record


def test_model_only_report_without_cohort(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2, cohort=False, optimistic=False)
    res = CliRunner().invoke(app, ["report", str(run), "--gallery", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output
    text = (run / "report.html").read_text()
    _assert_self_contained(text)
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in text
    assert 'id="banner-optimistic"' not in text and 'id="banner-synthetic"' not in text
    assert "No cohort manifest" in text
    assert "Table 1 is not shown" in text
    assert not (run / "stats").exists()
    t2 = pd.read_csv(run / "report_table2_performance.csv")
    assert list(t2["rater"]) == ["model"]


def test_cohort_without_features_or_readers(run_factory) -> None:
    run = run_factory(n_patients=12, n_folds=2, features=False)
    path = build_report(run, gallery_per_group=0, progress=False)
    text = path.read_text()
    assert "has no feature_* or reader_* columns" in text
    assert not (run / "stats").exists()


def test_report_errors(run_factory, tmp_path: Path) -> None:
    run = run_factory(n_patients=12, n_folds=2)
    (run / "oof_patients.csv").unlink()
    with pytest.raises(SpinedxError, match="oof_patients.csv missing"):
        build_report(run, progress=False)
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1
    other = run_factory(n_patients=12, n_folds=2)
    res = CliRunner().invoke(app, ["report", str(other), "--cohort", str(tmp_path / "missing.csv")])
    assert res.exit_code == 2 and "cohort manifest not found" in res.output


def test_an_interval_with_negative_ends_reads_with_to() -> None:
    """The report's calibration intercept printed ``-1.147 (-1.589--0.709)``: a hyphen between negative numbers."""
    from spinedx.report.page import ci

    assert ci(-1.147, -1.589, -0.709) == "-1.147 (-1.589 to -0.709)"
    assert ci(0.069, -0.321, 0.392) == "0.069 (-0.321 to 0.392)"
    assert ci(0.912, 0.85, 0.95) == "0.912 (0.850-0.950)"
    assert ci(0.5, 0.4, 0.6, pct=True) == "50.0% (40.0-60.0)"


def test_every_roc_figure_draws_the_same_plane() -> None:
    """The model's, the baselines' and the reader study's ROC figures share one ROC plane (the axes in the readers'
    words, the unit square); the baselines' figure set up its own, with other labels."""
    from spinedx.report.figures import OperatingPoint, baselines_roc_figure, reader_study_figure, roc_figure

    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    point = OperatingPoint("r1", 0.7, 0.6)
    figs = [roc_figure(y, p, n_boot=10), baselines_roc_figure(y, p, "model", 0.9, [("radiomics", y, p[::-1])]),
            reader_study_figure(None, None, [(point, OperatingPoint("r1", 0.8, 0.7))])]
    planes = {(ax.get_xlabel(), ax.get_ylabel(), ax.get_xlim(), ax.get_ylim()) for f in figs for ax in f.axes[:1]}
    assert planes == {("1 - specificity (benign called malignant)", "sensitivity (malignant called malignant)",
                       (-0.01, 1.01), (-0.01, 1.01))}
