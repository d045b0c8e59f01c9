"""Cohort summary: patients and slices per class, folds, backbone, threshold, the manifest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from spinedx.report.page import fmt, pretty_rater

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """The summary table (``report_cohort_summary.csv``) and sentence."""
    patients, slices = inp.patients, inp.slices
    n_slices = slices.groupby("patient_id").size()
    rows = []
    for lab, name in ((1, "malignant"), (0, "benign")):
        pids = patients.loc[patients["label"] == lab, "patient_id"]
        rows.append({"group": name, "patients": len(pids), "slices": int(n_slices.reindex(pids).fillna(0).sum())})
    rows.append({"group": "total", "patients": len(patients), "slices": int(n_slices.sum())})
    page.tables["cohort_summary"] = pd.DataFrame(rows)
    page.summary = [[str(r["group"]), str(r["patients"]), fmt(r["slices"])] for r in rows]
    config = inp.record.config
    how = ("the highest slice probability, as in the paper" if config.aggregation == "max"
           else f"the {config.aggregation} of the slice probabilities")
    parts = [f"{len(patients)} patients evaluated out-of-fold in {config.folds}-fold patient-grouped cross-validation "
             f"(backbone {config.backbone}, decision threshold {config.threshold:g} on the patient probability, "
             f"which is {how})."]
    if config.tta != "none":
        from spinedx.models.tta import TTAViews

        n_extra = TTAViews.from_config(config).n_views - 1
        parts.append(f"Every slice probability is the mean over the patch and {n_extra} fixed affine views of it "
                     "(test-time augmentation); the heatmaps are of the patch itself.")
    if inp.cohort is not None:
        readers = [c for c in inp.cohort.columns if str(c).startswith("reader_")]
        feats = [c for c in inp.cohort.columns if str(c).startswith("feature_")]
        parts.append(f"Cohort manifest {inp.cohort_path}: {len(inp.cohort)} patients, {len(feats)} imaging features, "
                     f"readers: {', '.join(pretty_rater(r) for r in readers) or 'none'}.")
        missing = sorted(set(inp.cohort.index.astype(str)) - set(patients["patient_id"]))
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            parts.append(f"{len(missing)} patient(s) of the manifest have no model prediction "
                         f"(skipped at extraction): {shown}.")
    else:
        inp.notes["summary"].append("No cohort manifest: features and readers are unknown.")
    page.summary_text = " ".join(parts)
