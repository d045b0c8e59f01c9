"""Table 2: sensitivity, specificity, accuracy, PPV and NPV of the readers and the model; McNemar tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spinedx.common import SYNTHETIC_ILLUSTRATION, format_p
from spinedx.evaluation.tables import MODEL_RATER
from spinedx.report.page import ci, pretty_rater

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """Table 2 (``report_table2_performance.csv``) and the McNemar tests (``report_mcnemar.csv``)."""
    t2 = inp.performance
    page.tables["table2_performance"] = t2
    page.table2_head = ["Rater", "n", "TP", "TN", "FP", "FN", "Sensitivity (95% CI)", "Specificity (95% CI)",
                        "Accuracy (95% CI)", "PPV (95% CI)", "NPV (95% CI)"]
    page.table2 = []
    synthetic = inp.record.synthetic
    for _, r in t2.iterrows():
        name = pretty_rater(r["rater"])
        if synthetic and r["rater"] != MODEL_RATER:
            name += " (simulated)"
        page.table2.append([name, str(int(r["n"])),
                            *(str(int(r[k])) for k in ("tp", "tn", "fp", "fn")),
                            *(ci(r[m], r[f"{m}_low"], r[f"{m}_high"], pct=True)
                              for m in ("sensitivity", "specificity", "accuracy", "ppv", "npv"))])
    mc = inp.mcnemar
    if mc is not None and len(mc):
        page.tables["mcnemar"] = mc
        page.mcnemar_head = ["Rater A", "Rater B", "Compared on", "A right, B wrong", "A wrong, B right", "McNemar p",
                             "p (Holm)"]
        page.mcnemar = [[pretty_rater(r["rater_a"]), pretty_rater(r["rater_b"]),
                         "malignant patients (sensitivity)" if r["group"] == "malignant"
                         else "benign patients (specificity)",
                         str(int(r["b"])), str(int(r["c"])), format_p(r["p_value"]), format_p(r["p_holm"])]
                        for _, r in mc.iterrows()]
        if synthetic:
            inp.notes["table2"].append(f"Simulated readers: every reader row and McNemar test is an "
                                       f"{SYNTHETIC_ILLUSTRATION}.")
    else:
        inp.notes["table2"].append("No reader calls: only the model's row and no McNemar tests.")
