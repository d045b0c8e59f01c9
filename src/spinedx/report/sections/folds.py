"""Per-fold patient and slice AUCs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from spinedx.report import figures as F
from spinedx.report.page import fmt

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """Bar chart and table (``report_per_fold_auc.csv``)."""
    from spinedx.evaluation.metrics import roc_auc

    rows = []
    for fold, g in inp.patients.groupby("fold"):
        gy = g["label"].to_numpy()
        s = inp.slices[inp.slices["fold"] == fold]
        rows.append({"fold": int(fold), "patients": len(g), "malignant": int(gy.sum()),
                     "benign": int((gy == 0).sum()), "patient_auc": roc_auc(gy, g["probability"]),
                     "slice_auc": roc_auc(s["label"], s["probability"])})
    df = pd.DataFrame(rows)
    page.tables["per_fold_auc"] = df
    page.folds = [[str(r["fold"]), str(r["patients"]), str(r["malignant"]), str(r["benign"]),
                   fmt(r["patient_auc"]), fmt(r["slice_auc"])] for r in rows]
    pooled = inp.metrics["auc"]
    page.figures["folds"] = F.data_uri(F.fold_auc_figure(df["fold"].tolist(), df["patient_auc"].tolist(),
                                                         pooled=None if pooled is None else float(pooled)))
    if any(math.isnan(r["patient_auc"]) for r in rows):
        inp.notes["folds"].append("A fold with patients of one class only has no AUC (n/a).")
