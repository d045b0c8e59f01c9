"""Calibration and conformal refer, evaluated honestly by the cross-validation and fitted for deployment.

The honest calibration data of outer fold ``k`` are predictions on patients outside fold ``k`` by fold models that
did not train on them: every fold model's probabilities on its own inner-validation patients (``splits.json``
``inner_val``, held out of its training; ``folds/<j>/inner_predictions.csv``), aggregated to patients by the run's
rule, restricted to patients outside fold ``k``. Fold ``k``'s calibrator (:func:`spinedx.decision.calibration.
fit_calibrator`, Platt or isotonic chosen on those data) and conformal thresholds (:func:`spinedx.decision.
conformal.fit_conformal`) are fitted on them and applied to fold ``k``'s out-of-fold probabilities, so no label of
fold ``k`` enters what scores fold ``k``'s patients, except through the training of the other fold models whose
inner predictions are used (documented in docs/decision.md). The run deploys the calibrator and thresholds fitted on
all folds' calibration data (``calibration.json``, ``conformal.json``).

:func:`evaluate_decisions` returns the ``calibration`` and ``conformal`` blocks of ``metrics.json``, the
``oof_decisions.csv`` table and the deployed fits; a run without inner predictions (made before they were written,
or optimistic) gets both blocks as ``status: unavailable`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx.decision.calibration import Calibrator, calibration_report, fit_calibrator
from spinedx.decision.conformal import CLASSES, ConformalThresholds, fit_conformal
from spinedx.errors import SpinedxError
from spinedx.evaluation.aggregate import aggregate_patients
from spinedx.evaluation.metrics import metrics_from_counts, wilson_interval

if TYPE_CHECKING:
    import pandas as pd

    from spinedx.runfolder import RunFolder, Splits

__all__ = ["ALPHA_GRID", "DecisionFit", "calibration_data", "conformal_summary", "decision_summary_lines",
           "evaluate_decisions"]

#: The alphas of the coverage-referral curve.
ALPHA_GRID = (0.01, 0.02, 0.05, 0.075, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.49)
#: Bootstrap resamples of the calibration statistics' intervals (patients resampled).
CAL_RESAMPLES = 200


@dataclass
class DecisionFit:
    """What :func:`evaluate_decisions` gives back.

    Attributes:
        calibration: ``metrics.json``'s ``calibration`` block.
        conformal: ``metrics.json``'s ``conformal`` block.
        table: ``oof_decisions.csv`` (None when unavailable).
        calibrator: the deployed calibrator (all folds' calibration data; None when unavailable).
        thresholds: the deployed conformal thresholds (None when unavailable).
    """

    calibration: dict[str, Any]
    conformal: dict[str, Any]
    table: pd.DataFrame | None
    calibrator: Calibrator | None
    thresholds: ConformalThresholds | None


def calibration_data(rf: RunFolder, splits: Splits, rule: str, repeat: int | None = None) -> pd.DataFrame | str:
    """Every fold model's patient probabilities on its inner-validation patients: columns ``model`` (the fold that
    predicted), ``patient_id``, ``patient_fold`` (the patient's outer fold), ``label``, ``probability``; or the
    reason they are unavailable (text)."""
    import pandas as pd

    frames = []
    missing = []
    for s in splits.splits:
        df = rf.read_inner_predictions(s.fold, splits, repeat)
        if df is None:
            missing.append(s.fold)
            continue
        pt = aggregate_patients(df.drop(columns=["fold"]), rule)
        pt.insert(0, "model", s.fold)
        frames.append(pt)
    if missing:
        return (f"fold(s) {', '.join(map(str, missing))} have no inner-validation predictions "
                "(folds/<k>/inner_predictions.csv): the run was made before they were written, or its early stopping "
                "used the outer fold (its inner patients were trained on); rerun spinedx cv into a new folder")
    data = pd.concat(frames, ignore_index=True)
    data["patient_fold"] = data["patient_id"].map(splits.fold_of).astype(int)
    return data[["model", "patient_id", "patient_fold", "label", "probability"]]


def _unavailable(reason: str) -> dict[str, Any]:
    return {"status": "unavailable", "reason": reason}


def _rate(count: int, n: int) -> dict[str, Any]:
    value, low, high = wilson_interval(int(count), int(n))
    return {"value": value, "low": low, "high": high, "count": int(count), "n": int(n)}


def _set_text(s: tuple[str, ...]) -> str:
    return "|".join(s)


def conformal_summary(y: np.ndarray, sets: list[tuple[str, ...]]) -> dict[str, Any]:
    """Per-class coverage with Wilson intervals, referral rate (set not a single label), and sensitivity,
    specificity and accuracy (Wilson intervals) on the accepted patients (a single label)."""
    y = np.asarray(y, int)
    covered = np.array([CLASSES[t] in s for t, s in zip(y, sets, strict=True)])
    size = np.array([len(s) for s in sets])
    accepted = size == 1
    call = np.array([1 if s == ("malignant",) else 0 for s in sets])
    ya, ca = y[accepted], call[accepted]
    acc = metrics_from_counts(int(((ya == 1) & (ca == 1)).sum()), int(((ya == 0) & (ca == 0)).sum()),
                              int(((ya == 0) & (ca == 1)).sum()), int(((ya == 1) & (ca == 0)).sum()))
    return {
        "coverage": {c: _rate(int(covered[y == k].sum()), int((y == k).sum())) for k, c in enumerate(CLASSES)},
        "referral_rate": _rate(int((~accepted).sum()), len(y)),
        "n_ambiguous": int((size == 2).sum()), "n_empty": int((size == 0).sum()), "n_accepted": int(accepted.sum()),
        "accepted": {k: acc.get(k) for k in ("n", "tp", "tn", "fp", "fn", "sensitivity", "sensitivity_low",
                                             "sensitivity_high", "specificity", "specificity_low", "specificity_high",
                                             "accuracy", "accuracy_low", "accuracy_high")},
    }


def _at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    call = (p >= threshold).astype(int)
    m = metrics_from_counts(int(((y == 1) & (call == 1)).sum()), int(((y == 0) & (call == 0)).sum()),
                            int(((y == 0) & (call == 1)).sum()), int(((y == 1) & (call == 0)).sum()))
    return {k: m[k] for k in ("sensitivity", "sensitivity_low", "sensitivity_high", "specificity", "specificity_low",
                              "specificity_high", "accuracy", "accuracy_low", "accuracy_high")}


def evaluate_decisions(patients: pd.DataFrame, data: pd.DataFrame | str, alpha: float, threshold: float, seed: int,
                       baselines: dict[str, pd.DataFrame] | None = None) -> DecisionFit:
    """Calibrate and conformalise each outer fold on its honest calibration data, score the out-of-fold patients,
    and fit the deployed calibrator and thresholds on all of the data.

    Args:
        patients: the out-of-fold patient table (``patient_id, fold, label, probability``).
        data: :func:`calibration_data` (or the reason it is unavailable).
        alpha: the conformal error rate per class.
        threshold: the run's decision threshold (sensitivity and specificity before and after calibration).
        seed: the bootstrap seed.
        baselines: baseline name -> out-of-fold patient table (their calibration beside the model's).
    """
    import pandas as pd

    if isinstance(data, str):
        return DecisionFit(_unavailable(data), _unavailable(data), None, None, None)
    y_all = patients["label"].to_numpy(int)
    p_all = patients["probability"].to_numpy(float)
    p_cal = np.full(len(patients), np.nan)
    sets: list[tuple[str, ...]] = [()] * len(patients)
    per_fold: list[dict[str, Any]] = []
    cal_k: dict[int, tuple[np.ndarray, np.ndarray, Calibrator]] = {}
    try:
        for k in sorted(patients["fold"].unique()):
            rows = data[data["patient_fold"] != k]
            cal, how = fit_calibrator(rows["probability"].to_numpy(), rows["label"].to_numpy(), "auto",
                                      groups=rows["model"].to_numpy())
            pc_rows = cal.apply(rows["probability"].to_numpy())
            thr = fit_conformal(pc_rows, rows["label"].to_numpy(), alpha)
            idx = np.flatnonzero(patients["fold"].to_numpy() == k)
            p_cal[idx] = cal.apply(p_all[idx])
            for i, s in zip(idx, thr.predict_set(p_cal[idx]), strict=True):
                sets[i] = s
            cal_k[int(k)] = (pc_rows, rows["label"].to_numpy(int), cal)
            per_fold.append({"fold": int(k), "method": cal.method, "n": how["n"], "n_malignant": how["n_malignant"],
                             "brier_cv": how["brier_cv"], "thresholds": thr.to_dict()["thresholds"]})
        deployed, how_all = fit_calibrator(data["probability"].to_numpy(), data["label"].to_numpy(), "auto",
                                           groups=data["model"].to_numpy())
        deployed_thr = fit_conformal(deployed.apply(data["probability"].to_numpy()), data["label"].to_numpy(), alpha)
    except SpinedxError as exc:
        reason = f"too few honest calibration patients: {exc.message}"
        return DecisionFit(_unavailable(reason), _unavailable(reason), None, None, None)

    how_data = ("each outer fold's calibrator and conformal thresholds fitted on the fold models' predictions on "
                "their inner-validation patients (held out of their training) outside that fold; deployed: fitted on "
                "all of them")
    calibration: dict[str, Any] = {
        "status": "ok", "method": deployed.method, "selection": how_all, "data": how_data,
        "n_calibration_rows": len(data), "n_calibration_patients": int(data["patient_id"].nunique()),
        "per_fold": [{k: f[k] for k in ("fold", "method", "n", "n_malignant", "brier_cv")} for f in per_fold],
        "before": calibration_report(y_all, p_all, n_resamples=CAL_RESAMPLES, seed=seed),
        "after": calibration_report(y_all, p_cal, n_resamples=CAL_RESAMPLES, seed=seed),
        "threshold": threshold,
        "at_threshold": {"before": _at_threshold(y_all, p_all, threshold),
                         "after": _at_threshold(y_all, p_cal, threshold)},
        "baselines": {},
    }
    for name, table in (baselines or {}).items():
        calibration["baselines"][name] = calibration_report(table["label"].to_numpy(int),
                                                            table["probability"].to_numpy(float),
                                                            n_resamples=CAL_RESAMPLES, seed=seed)
    # the coverage-referral curve: the same folds and calibrators, the thresholds refitted at each alpha
    curve = []
    folds_arr = patients["fold"].to_numpy()
    for a in ALPHA_GRID:
        sets_a: list[tuple[str, ...]] = [()] * len(patients)
        for k, (pc_rows, y_rows, _) in cal_k.items():
            thr_a = fit_conformal(pc_rows, y_rows, a)
            idx = np.flatnonzero(folds_arr == k)
            for i, s in zip(idx, thr_a.predict_set(p_cal[idx]), strict=True):
                sets_a[i] = s
        summ = conformal_summary(y_all, sets_a)
        curve.append({"alpha": a, "coverage_benign": summ["coverage"]["benign"]["value"],
                      "coverage_malignant": summ["coverage"]["malignant"]["value"],
                      "referral_rate": summ["referral_rate"]["value"],
                      "accepted_accuracy": summ["accepted"]["accuracy"]})
    from importlib.metadata import version

    conformal: dict[str, Any] = {
        "status": "ok", "alpha": alpha, "method": "Mondrian (class-conditional) split-conformal, nonconformity "
        "1 - p(label) of the calibrated probability, unsmoothed p-values", "library": f"crepes {version('crepes')}",
        "data": how_data, **conformal_summary(y_all, sets),
        "per_fold": [{"fold": f["fold"], "thresholds": f["thresholds"]} for f in per_fold],
        "deployed": deployed_thr.to_dict()["thresholds"], "curve": curve,
    }
    table = pd.DataFrame({"patient_id": patients["patient_id"].to_numpy(), "fold": folds_arr, "label": y_all,
                          "probability_uncalibrated": p_all, "probability": p_cal,
                          "conformal_set": [_set_text(s) for s in sets]})
    return DecisionFit(calibration, conformal, table, deployed, deployed_thr)


def decision_summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The summary lines of ``metrics.json``'s ``conformal`` and ``calibration`` blocks (``spinedx cv`` and the demo
    print them beside the AUC): referral rate and accepted-patient accuracy, per-class coverage, and the calibration
    before -> after. Empty when the run predates them."""

    def num(v: Any, digits: int = 3) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.{digits}f}"

    def ci(v: Any, lo: Any, hi: Any) -> str:
        return f"{num(v)} ({num(lo)}-{num(hi)})"

    conf, cal = metrics.get("conformal"), metrics.get("calibration")
    lines: list[str] = []
    if isinstance(conf, dict):
        if conf.get("status") == "ok":
            r, acc, cov = conf["referral_rate"], conf["accepted"], conf["coverage"]
            lines.append(f"conformal refer (alpha {conf['alpha']:g}, out-of-fold): referral rate "
                         f"{ci(r['value'], r['low'], r['high'])}, accepted-patient accuracy "
                         f"{ci(acc['accuracy'], acc['accuracy_low'], acc['accuracy_high'])} "
                         f"({conf['n_accepted']} of {r['n']} accepted); coverage benign "
                         f"{ci(cov['benign']['value'], cov['benign']['low'], cov['benign']['high'])}, malignant "
                         f"{ci(cov['malignant']['value'], cov['malignant']['low'], cov['malignant']['high'])}")
        else:
            lines.append(f"conformal refer: unavailable ({conf.get('reason')})")
    if isinstance(cal, dict):
        if cal.get("status") == "ok":
            b, a = cal["before"], cal["after"]
            tb, ta = cal["at_threshold"]["before"], cal["at_threshold"]["after"]
            lines.append(f"calibration ({cal['method']}, fitted per fold on inner-validation predictions), before -> "
                         f"after: Brier {num(b['brier'])} -> {num(a['brier'])}, ECE {num(b['ece'])} -> "
                         f"{num(a['ece'])}, slope {num(b['slope'], 2)} -> {num(a['slope'], 2)}, intercept "
                         f"{num(b['intercept'], 2)} -> {num(a['intercept'], 2)}; at threshold {cal['threshold']:g} "
                         f"sensitivity {num(tb['sensitivity'])} -> {num(ta['sensitivity'])}, specificity "
                         f"{num(tb['specificity'])} -> {num(ta['specificity'])}")
        elif not (isinstance(conf, dict) and conf.get("reason") == cal.get("reason")):
            lines.append(f"calibration: unavailable ({cal.get('reason')})")
    return lines
