"""Confusion matrices of the model and every reader."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spinedx.report import figures as F
from spinedx.report.page import pretty_rater

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """One matrix per rater of Table 2."""
    rows = [(pretty_rater(r["rater"]), int(r["tp"]), int(r["tn"]), int(r["fp"]), int(r["fn"]))
            for _, r in inp.performance.iterrows()]
    page.figures["confusion"] = F.data_uri(F.confusion_figure(rows))
