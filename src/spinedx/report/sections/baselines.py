"""Model vs baselines: the CNN next to the radiomics baseline and the feature regression fitted on the same folds.

The ROC curves on one plot, a table with the same metrics and intervals for each, and DeLong's paired test of the
patient AUCs; the comparison sentence (and, when the CNN does not exceed the radiomics baseline, a banner at the
top of the page) says plainly which is better.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from spinedx.common import format_p
from spinedx.report import figures as F
from spinedx.report.page import ci

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page

_METRICS = ("auc", "sensitivity", "specificity", "accuracy")


def _row(name: str, m: dict[str, Any], vs: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"classifier": name, "n": m.get("n")}
    for k in _METRICS:
        row.update({k: m.get(k), f"{k}_low": m.get(f"{k}_low"), f"{k}_high": m.get(f"{k}_high")})
    for k in ("difference", "difference_low", "difference_high", "p_value", "verdict"):
        row[f"vs_model_{k}"] = None if vs is None else vs.get(k)
    return row


def build(inp: ReportInputs, page: Page) -> None:
    """The baselines section (``report_baselines.csv``) and the verdict banner."""
    section = inp.metrics.get("baselines")
    model_name = f"CNN ({inp.record.config.backbone})"
    if not isinstance(section, dict):
        inp.notes["baselines"].append("This run has no baselines in metrics.json (made before baselines were "
                                      "fitted in every run); rerun spinedx cv in this folder to add them.")
        return
    rows = [_row(model_name, inp.metrics, None)]
    curves: list[tuple[str, Any, Any]] = []
    tables = inp.baselines[1] if inp.baselines is not None else {}
    for name, b in section.items():
        label = str(b.get("label", name))
        if b.get("status") != "ok":
            inp.notes["baselines"].append(f"The {label} was not fitted: {b.get('reason')}.")
            continue
        vs = b.get("vs_model") if isinstance(b.get("vs_model"), dict) else None
        rows.append(_row(label, b, vs))
        if vs is not None:
            page.verdicts.append((str(vs.get("verdict")), f"{vs['sentence'][0].upper()}{vs['sentence'][1:]}."))
        if name in tables:
            t = tables[name]
            curves.append((label, t["label"].to_numpy(), t["probability"].to_numpy(dtype=float)))
        if b.get("description"):
            inp.notes["baselines"].append(f"{label[0].upper()}{label[1:]}: {b['description']}.")
    df = pd.DataFrame(rows)
    page.tables["baselines"] = df
    page.baselines_head = ["Classifier", "n", "AUC (95% CI)", "Sensitivity (95% CI)", "Specificity (95% CI)",
                           "Accuracy (95% CI)", "AUC difference, CNN - baseline (95% CI)", "DeLong p"]
    page.baselines = []
    for r in rows:
        d, lo, hi = r["vs_model_difference"], r["vs_model_difference_low"], r["vs_model_difference_high"]
        diff = "" if d is None else f"{d:+.3f}" + ("" if lo is None or hi is None else f" ({lo:+.3f} to {hi:+.3f})")
        page.baselines.append([r["classifier"], str(r["n"]), *(ci(r[k], r[f"{k}_low"], r[f"{k}_high"])
                                                              for k in _METRICS),
                               diff, "" if r["vs_model_p_value"] is None else format_p(r["vs_model_p_value"])])
    page.figures["baselines"] = F.data_uri(F.baselines_roc_figure(
        inp.patients["label"].to_numpy(), inp.patients["probability"].to_numpy(dtype=float), model_name,
        float(inp.metrics["auc"]) if inp.metrics.get("auc") is not None else float("nan"), curves))
