"""Repeated cross-validation: the spread of each metric across repeats next to repeat 0 and the pooled figures.

A single cross-validation's intervals describe the sampling of patients for one training run; the spread across
repeats (new splits and initial weights, ``spinedx cv --repeats N``) shows how much of the figure is training
randomness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from spinedx.report.page import ci, fmt

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page

_METRICS = ("auc", "sensitivity", "specificity", "accuracy")


def build(inp: ReportInputs, page: Page) -> None:
    """The repeats section (``report_repeats.csv``), or a note that the run is a single cross-validation."""
    rep = inp.metrics.get("repeats")
    if not isinstance(rep, dict):
        inp.notes["repeats"].append("A single cross-validation (one split, one training run per fold): its "
                                    "intervals ignore training randomness. spinedx cv --repeats N repeats the whole "
                                    "cross-validation with N seeds and reports the spread.")
        return
    model = f"CNN ({inp.record.config.backbone})"
    rows: list[dict[str, Any]] = []

    def add(name: str, spread: dict[str, Any], first: dict[str, Any], pooled: dict[str, Any] | None) -> None:
        for k in _METRICS:
            sp = spread[k]
            rows.append({"classifier": name, "metric": k, "repeat_0": first.get(k),
                         "repeat_0_low": first.get(f"{k}_low"), "repeat_0_high": first.get(f"{k}_high"),
                         "mean": sp["mean"], "sd": sp["sd"], "min": sp["min"], "max": sp["max"],
                         "pooled": None if pooled is None else pooled.get(k),
                         "pooled_low": None if pooled is None else pooled.get(f"{k}_low"),
                         "pooled_high": None if pooled is None else pooled.get(f"{k}_high"),
                         "values": " ".join(fmt(v) for v in sp["values"])})

    add(model, rep["spread"], inp.metrics, rep.get("pooled"))
    for name, spread in rep.get("baselines", {}).items():
        label = str((inp.metrics.get("baselines", {}).get(name) or {}).get("label", name))
        add(label, spread, inp.metrics.get("baselines", {}).get(name) or {}, None)
    df = pd.DataFrame(rows)
    page.tables["repeats"] = df
    page.repeats_head = ["Classifier", "Metric", "Repeat 0 (95% CI)", "Mean across repeats", "SD", "Range",
                         "Pooled (95% CI)", "Each repeat"]
    page.repeats = [[r["classifier"], r["metric"], ci(r["repeat_0"], r["repeat_0_low"], r["repeat_0_high"]),
                     fmt(r["mean"]), fmt(r["sd"]), f"{fmt(r['min'])} to {fmt(r['max'])}",
                     "" if r["pooled"] is None else ci(r["pooled"], r["pooled_low"], r["pooled_high"]), r["values"]]
                    for r in rows]
    page.repeats_text = (f"{rep['n']} repeats of the whole {inp.metrics.get('folds')}-fold cross-validation with "
                         f"seeds {', '.join(map(str, rep['seeds']))} (new patient splits and initial weights each). "
                         "The rest of this report describes repeat 0 (the run folder's own folds and models). "
                         f"Pooled: {rep['pooled_how']}. SD with n-1.")
    for name, b in rep.get("baselines", {}).items():
        label = str((inp.metrics.get("baselines", {}).get(name) or {}).get("label", name))
        d = b["difference"]
        inp.notes["repeats"].append(
            f"CNN minus {label} patient AUC across repeats: mean {fmt(d['mean'])}, range {fmt(d['min'])} to "
            f"{fmt(d['max'])}; DeLong verdict per repeat: {', '.join(str(v) for v in b['verdicts'])}.")
