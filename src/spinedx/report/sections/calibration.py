"""Calibration: before/after reliability curves with the baseline beside them, Brier score, calibration intercept and
slope, ECE with patient-bootstrap intervals (``metrics.json`` ``calibration``), and the histogram of probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spinedx.report import figures as F
from spinedx.report.page import ci, fmt

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page

_STATS = (("brier", "Brier score"), ("ece", "ECE (10 bins)"), ("intercept", "calibration intercept"),
          ("slope", "calibration slope"))


def build(inp: ReportInputs, page: Page) -> None:
    """The calibration figure, the table of calibration statistics (``report_calibration.csv``) and notes."""
    y = inp.patients["label"].to_numpy()
    p = inp.patients["probability"].to_numpy(dtype=float)
    cal = inp.metrics.get("calibration")
    decisions = inp.run.read_oof_decisions(inp.splits)
    after = None
    if decisions is not None and isinstance(cal, dict) and cal.get("status") == "ok":
        after = decisions.set_index("patient_id").loc[inp.patients["patient_id"], "probability"].to_numpy(float)
    others: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if inp.baselines is not None:
        for name, table in inp.baselines[1].items():
            label = (inp.metrics.get("baselines", {}).get(name) or {}).get("label", name)
            others[label] = (table["label"].to_numpy(), table["probability"].to_numpy(dtype=float))
    page.figures["calibration"] = F.data_uri(F.calibration_figure(y, p, after=after, others=others))
    how = ("is the maximum over slices, so it tends to overstate malignancy for patients with many slices"
           if inp.record.aggregation == "max" else f"is the {inp.record.aggregation} over slices")
    if not isinstance(cal, dict) or cal.get("status") != "ok":
        brier = float(np.mean((p - y) ** 2))
        why = (cal.get("reason") if isinstance(cal, dict)
               else "metrics.json has no calibration block (run made before it)")
        inp.notes["calibration"].append(f"Brier score {brier:.3f} (uncalibrated). The patient probability {how}. "
                                        f"No calibration map: {why}.")
        return
    rows: list[dict[str, Any]] = []
    columns = [("model, uncalibrated", cal["before"]), ("model, calibrated (out of fold)", cal["after"])]
    for name, rep in cal.get("baselines", {}).items():
        label = (inp.metrics.get("baselines", {}).get(name) or {}).get("label", name)
        columns.append((f"{label} (as fitted)", rep))
    for key, _ in _STATS:
        for who, rep in columns:
            rows.append({"statistic": key, "probability": who, "value": rep.get(key), "low": rep.get(f"{key}_low"),
                         "high": rep.get(f"{key}_high")})
    page.tables["calibration"] = pd.DataFrame(rows)
    page.calibration_head = ["statistic (95% patient-bootstrap interval)"] + [who for who, _ in columns]
    page.calibration = [[label] + [ci(rep.get(key), rep.get(f"{key}_low"), rep.get(f"{key}_high"))
                                   if np.isfinite(rep.get(key) if rep.get(key) is not None else np.nan)
                                   else "n/a" for _, rep in columns] for key, label in _STATS]
    tb, ta = cal["at_threshold"]["before"], cal["at_threshold"]["after"]
    sel = cal.get("selection") or {}
    score = sel.get("brier_cv") or {}
    chosen = (f"chosen over {'isotonic' if cal['method'] == 'platt' else 'Platt'} by the Brier score of each fitted "
              "on all fold models' inner predictions but one model's and scored on it "
              f"(Platt {fmt(score.get('platt'))}, isotonic {fmt(score.get('isotonic'))})"
              if score.get("platt") is not None else "")
    data = cal["data"][0].upper() + cal["data"][1:]
    inp.notes["calibration"].append(
        f"Calibration map: {cal['method']}{', ' + chosen if chosen else ''}. {data} "
        f"({cal['n_calibration_rows']} predictions of {cal['n_calibration_patients']} patients). The calibrated "
        f"curve and statistics are out of fold: no patient's own label entered the map that scored it.")
    inp.notes["calibration"].append(
        f"At threshold {cal['threshold']:g}: sensitivity {fmt(tb['sensitivity'])} uncalibrated, "
        f"{fmt(ta['sensitivity'])} calibrated; specificity {fmt(tb['specificity'])} uncalibrated, "
        f"{fmt(ta['specificity'])} calibrated. The patient probability {how}. Intercept: calibration-in-the-large "
        "(0 is ideal); slope: logistic recalibration slope (1 is ideal; below 1, overconfident).")
