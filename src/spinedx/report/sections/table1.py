"""Table 1: the imaging features in malignant and benign patients (Fisher exact test, odds ratios)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spinedx.common import format_p
from spinedx.features import FEATURES
from spinedx.report.sections import ci, fmt

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.sections import Page


def logistic_text(d: dict[str, Any]) -> str:
    """One sentence on the feature logistic regression (the paper reports accuracy 0.94)."""
    ev: dict[str, Any] = d["evaluation"] if isinstance(d.get("evaluation"), dict) else {}
    txt = "Logistic regression on all features, evaluated out of fold"
    if ev.get("folds_source"):
        txt += f" ({ev['folds_source']})"
    if ev.get("accuracy") is not None:
        txt += f": accuracy {ci(ev.get('accuracy'), ev.get('accuracy_low'), ev.get('accuracy_high'))}"
    if ev.get("auc") is not None:
        txt += f", AUC {ci(ev.get('auc'), ev.get('auc_low'), ev.get('auc_high'))}"
    txt += " (the paper: accuracy 0.94)."
    if d.get("method_note"):
        txt += f" Method: {d['method_note']}."
    return txt


def build(inp: ReportInputs, page: Page) -> None:
    """Table 1 rows (``report_table1_features.csv``) and the logistic-regression sentence."""
    t1 = inp.table1
    if t1 is None:
        inp.notes["table1"].append("No imaging features (feature_* columns of the cohort manifest): Table 1 is not "
                                   "shown.")
        return
    page.tables["table1_features"] = t1
    page.table1_head = ["Feature", "Malignant n (%)", "Benign n (%)", "Fisher p", "Odds ratio (95% CI)"]
    page.table1 = []
    for _, r in t1.iterrows():
        key = str(r["feature"]).removeprefix("feature_")
        mt, bt = int(r["malignant_total"]), int(r["benign_total"])
        mn, bn = int(r["malignant_n"]), int(r["benign_n"])
        orr = f"{fmt(r['odds_ratio'], 2)} ({fmt(r['or_low'], 2)}-{fmt(r['or_high'], 2)})"
        if str(r["haldane"]).strip().lower() in ("true", "1", "1.0"):
            orr += " *"
        desc = r["description"] if isinstance(r["description"], str) and r["description"] else FEATURES.get(key, key)
        page.table1.append([desc, f"{mn}/{mt} ({100 * mn / max(mt, 1):.0f}%)",
                            f"{bn}/{bt} ({100 * bn / max(bt, 1):.0f}%)", format_p(r["p_value"]), orr])
    if not page.table1:
        inp.notes["table1"].append("The cohort manifest has no feature_* columns: Table 1 is empty.")
    if inp.logistic is not None:
        page.logistic = logistic_text(inp.logistic)
