"""Table 1: the imaging features in malignant and benign patients (Fisher exact test, odds ratios)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spinedx.common import format_p
from spinedx.features import FEATURES
from spinedx.report.page import ci, fmt

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def logistic_text(d: dict[str, Any]) -> str:
    """The feature logistic regression's two accuracies, each labelled: in-sample (what the paper reported,
    0.94) and out of fold."""
    ins: dict[str, Any] = d["in_sample"] if isinstance(d.get("in_sample"), dict) else {}
    ev: dict[str, Any] = d["evaluation"] if isinstance(d.get("evaluation"), dict) else {}
    txt = "Logistic regression on all features."
    if ins.get("accuracy") is not None:
        txt += (f" In-sample accuracy (fitted and scored on the same {ins.get('n')} patients, as the paper "
                f"reported): {ci(ins.get('accuracy'), ins.get('accuracy_low'), ins.get('accuracy_high'))} "
                f"(paper: {fmt(ins.get('paper_accuracy'), 2)}).")
    txt += " Out-of-fold"
    if ev.get("folds_source"):
        txt += f" ({ev['folds_source']})"
    if ev.get("accuracy") is not None:
        txt += f": accuracy {ci(ev.get('accuracy'), ev.get('accuracy_low'), ev.get('accuracy_high'))}"
    if ev.get("auc") is not None:
        txt += f", AUC {ci(ev.get('auc'), ev.get('auc_low'), ev.get('auc_high'))}"
    txt += "."
    if d.get("method_note"):
        txt += f" Method: {d['method_note']}."
    return txt


def odds_text(est: Any, low: Any, high: Any) -> str:
    """``2.10 (1.05-4.40)``; ``inf`` for an unbounded end (a zero cell), ``n/a`` when undefined."""
    import math

    def num(v: Any) -> str:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return "n/a"
        return "n/a" if math.isnan(f) else ("\u221e" if math.isinf(f) else f"{f:.2f}")

    if num(est) == "n/a":
        return "n/a"
    return f"{num(est)} ({num(low)}-{num(high)})"


def build(inp: ReportInputs, page: Page) -> None:
    """Table 1 rows (``report_table1_features.csv``) and the logistic-regression sentence."""
    t1 = inp.table1
    if t1 is None:
        inp.notes["table1"].append("No imaging features (feature_* columns of the cohort manifest): Table 1 is not "
                                   "shown.")
        return
    page.tables["table1_features"] = t1
    page.table1_head = ["Feature", "Malignant n (%)", "Benign n (%)", "Fisher p", "p (Holm)", "Odds ratio (95% CI)"]
    page.table1 = []
    for _, r in t1.iterrows():
        key = str(r["feature"]).removeprefix("feature_")
        mt, bt = int(r["malignant_total"]), int(r["benign_total"])
        mn, bn = int(r["malignant_n"]), int(r["benign_n"])
        orr = odds_text(r["odds_ratio"], r["or_low"], r["or_high"])
        desc = r["description"] if isinstance(r["description"], str) and r["description"] else FEATURES.get(key, key)
        page.table1.append([desc, f"{mn}/{mt} ({100 * mn / max(mt, 1):.0f}%)",
                            f"{bn}/{bt} ({100 * bn / max(bt, 1):.0f}%)", format_p(r["p_value"]),
                            format_p(r["p_holm"]), orr])
    if not page.table1:
        inp.notes["table1"].append("The cohort manifest has no feature_* columns: Table 1 is empty.")
    if inp.logistic is not None:
        page.logistic = logistic_text(inp.logistic)
