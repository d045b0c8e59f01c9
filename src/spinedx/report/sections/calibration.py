"""Calibration: reliability diagram, histogram of patient probabilities, Brier score."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spinedx.report import figures as F

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """The calibration figure and the Brier score."""
    y = inp.patients["label"].to_numpy()
    p = inp.patients["probability"].to_numpy(dtype=float)
    page.figures["calibration"] = F.data_uri(F.calibration_figure(y, p))
    brier = float(np.mean((p - y) ** 2))
    how = ("is the maximum over slices, so it tends to overstate malignancy for patients with many slices"
           if inp.record.aggregation == "max" else f"is the {inp.record.aggregation} over slices")
    inp.notes["calibration"].append(f"Brier score {brier:.3f}. The patient probability {how}.")
