"""Conformal refer: per-class coverage with Wilson intervals, referral rate, accuracy on the accepted patients, and the
coverage-referral curve over alpha (``metrics.json`` ``conformal``; out of fold)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from spinedx.report import figures as F
from spinedx.report.page import ci

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """The conformal table (``report_conformal.csv``), the curve, and notes; a note when the run has none."""
    conf = inp.metrics.get("conformal")
    if not isinstance(conf, dict) or conf.get("status") != "ok":
        why = (conf.get("reason") if isinstance(conf, dict)
               else "metrics.json has no conformal block (run made before it)")
        inp.notes["conformal"].append(f"No conformal evaluation: {why}.")
        return
    cov, r, acc = conf["coverage"], conf["referral_rate"], conf["accepted"]
    rows = [
        ["coverage, benign patients", ci(cov["benign"]["value"], cov["benign"]["low"], cov["benign"]["high"]),
         f"{cov['benign']['count']} / {cov['benign']['n']}"],
        ["coverage, malignant patients", ci(cov["malignant"]["value"], cov["malignant"]["low"],
                                            cov["malignant"]["high"]),
         f"{cov['malignant']['count']} / {cov['malignant']['n']}"],
        ["referral rate (both labels or none)", ci(r["value"], r["low"], r["high"]),
         f"{r['count']} / {r['n']} ({conf['n_ambiguous']} both, {conf['n_empty']} none)"],
    ]
    for k in ("sensitivity", "specificity", "accuracy"):
        rows.append([f"{k}, accepted patients", ci(acc[k], acc[f"{k}_low"], acc[f"{k}_high"]),
                     f"tp {acc['tp']} tn {acc['tn']} fp {acc['fp']} fn {acc['fn']}"])
    page.conformal_head = ["at alpha " + f"{conf['alpha']:g}" + " (95% Wilson interval)", "value", "count"]
    page.conformal = rows
    page.tables["conformal"] = pd.DataFrame(conf["curve"])
    page.figures["conformal"] = F.data_uri(F.conformal_curve_figure(conf["curve"], float(conf["alpha"])))
    dep = conf["deployed"]
    data = conf["data"][0].upper() + conf["data"][1:]
    inp.notes["conformal"].append(
        f"{conf['method']} ({conf['library']}). Each patient's set holds the labels whose nonconformity is within "
        f"its class's threshold: one label is a call, both or none is refer. {data}. The run "
        f"deploys thresholds benign {dep['benign']:.3f}, malignant {dep['malignant']:.3f} (conformal.json).")
    inp.notes["conformal"].append(
        "Coverage is guaranteed (at least 1 - alpha per class, on average over calibration sets) only for patients "
        "exchangeable with the calibration patients: a new scanner, protocol or population breaks it, which the "
        "domain check exists for.")
