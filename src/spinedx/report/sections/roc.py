"""The model's per-patient ROC curve with its stratified bootstrap band and the readers' operating points."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spinedx.report import figures as F
from spinedx.report.page import pretty_rater

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """The ROC figure; the AUC and its interval are metrics.json's (same bootstrap scheme as the band)."""
    from spinedx.evaluation.tables import MODEL_RATER

    readers = [F.OperatingPoint(pretty_rater(r["rater"]), float(r["sensitivity"]), float(r["specificity"]))
               for _, r in inp.performance.iterrows() if r["rater"] != MODEL_RATER
               and np.isfinite(float(r["sensitivity"])) and np.isfinite(float(r["specificity"]))]
    m = inp.metrics
    auc = (float("nan") if m["auc"] is None else m["auc"], float("nan") if m["auc_low"] is None else m["auc_low"],
           float("nan") if m["auc_high"] is None else m["auc_high"])
    page.figures["roc"] = F.data_uri(F.roc_figure(inp.patients["label"].to_numpy(),
                                                  inp.patients["probability"].to_numpy(dtype=float), auc=auc,
                                                  threshold=inp.threshold, readers=readers,
                                                  seed=inp.record.config.seed))
