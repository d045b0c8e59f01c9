"""Logistic regression on the 15 imaging features (Yeh et al. 2022, "Results": accuracy 0.94), with separation
detected and handled (Albert & Anderson 1984; Konis 2007).

Two accuracies are reported, each labelled: in-sample (fitted and scored on the same patients: what the paper
reported) and out-of-fold (each patient scored by a fit that did not see it: what a new patient can expect).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.evaluation.metrics import auc_with_ci, roc_auc, wilson_interval
from spinedx.evaluation.tables import feature_columns

#: Grid of C (inverse L2 strength) searched by inner CV when the features separate the labels.
REGULARISED_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
INNER_FOLDS = 5
#: The paper's accuracy of a logistic regression on the 15 features ("Results").
PAPER_LOGISTIC_ACCURACY = 0.94


def detect_separation(x: np.ndarray, y: np.ndarray) -> str:
    """Whether the features separate the labels: ``"complete"``, ``"quasi-complete"`` or ``"none"``.

    With (quasi-)complete separation the maximum-likelihood logistic regression does not exist
    (coefficients run to infinity; Albert & Anderson 1984). Detected with linear programs as in
    Konis (2007): quasi-complete separation when some non-zero ``beta`` (intercept included)
    has ``s_i * x_i . beta >= 0`` for every patient (``s = +1`` malignant, ``-1`` benign) with at
    least one strict; complete when ``s_i * x_i . beta >= 1`` is feasible.
    """
    from scipy.optimize import linprog

    x = np.asarray(x, dtype=float)
    s = np.where(np.asarray(y, dtype=int) == 1, 1.0, -1.0)
    a = s[:, None] * np.column_stack([np.ones(len(x)), x])
    complete = linprog(np.zeros(a.shape[1]), A_ub=-a, b_ub=-np.ones(len(a)), bounds=(None, None), method="highs")
    if complete.status == 0:
        return "complete"
    quasi = linprog(-a.sum(axis=0), A_ub=-a, b_ub=np.zeros(len(a)), bounds=(-1, 1), method="highs")
    if quasi.status == 0 and -quasi.fun > 1e-7:
        return "quasi-complete"
    return "none"


def _fit_logistic(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[Any, np.ndarray, str, str]:
    """Fit one logistic regression; returns (model, used column mask, separation, method).

    Columns constant in the training data carry no information (and a constant-1 column is
    confounded with the intercept), so they are left out of the fit with coefficient 0.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    mask = x.std(axis=0) > 0
    sep = detect_separation(x[:, mask], y)
    if not mask.any():
        return None, mask, sep, "prevalence only (no varying feature)"
    n_min = int(min(np.sum(y == 1), np.sum(y == 0)))
    if sep == "none":
        model, method = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=1000), "unpenalised"
    elif n_min >= 2:
        # The strength is chosen by an inner stratified CV on the log-loss: a fixed C is either too
        # weak to matter or strong enough to let noise features outvote a separating one in small folds.
        inner = StratifiedKFold(n_splits=min(INNER_FOLDS, n_min), shuffle=True, random_state=seed)
        model = LogisticRegressionCV(Cs=list(REGULARISED_CS), cv=inner, scoring="neg_log_loss",
                                     solver="newton-cholesky", max_iter=1000)
        method = "L2"
    else:
        model, method = LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=1000), "L2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x[:, mask], y)
    if method == "L2":
        c_used = float(np.ravel(model.C_)[0]) if hasattr(model, "C_") else 1.0
        method = f"L2 (C={c_used:g})"
    return model, mask, sep, method


def _predict_logistic(model: Any, mask: np.ndarray, x: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    if model is None:  # nothing to learn from: the training prevalence
        return np.full(len(x), float(np.mean(y_train)))
    return model.predict_proba(x[:, mask])[:, 1]


def feature_logistic(
    frame: pd.DataFrame, folds: Sequence[Sequence[str]] | None = None, *, seed: int = 0, n_splits: int = 10,
    folds_source: str | None = None, bootstrap_resamples: int = 2000,
) -> dict[str, Any]:
    """Logistic regression on all imaging features: in-sample (the paper: accuracy 0.94) and out of fold.

    The model is plain (unpenalised) maximum likelihood when the training data do not separate;
    when they separate (completely or quasi-completely, see :func:`detect_separation`) the
    maximum-likelihood fit does not exist, so an L2-regularised fit is used instead, its ``C``
    chosen from :data:`REGULARISED_CS` by an inner stratified CV on the training patients. The
    choice is made, and reported, for every fit.

    Args:
        frame: Study table with ``patient_id``, ``y`` and ``feature_*`` (0/1). Patients with a
            missing feature are left out and counted.
        folds: Validation patient ids of each fold (the CV run's folds, so the comparison with
            the model is on the same patients); None: stratified ``n_splits``-fold by patient
            with ``seed``. Patients in no fold are used for training only.
        seed: Seed of the stratified folds.
        n_splits: Number of stratified folds when ``folds`` is None.
        folds_source: Where ``folds`` came from (reported).
        bootstrap_resamples: Bootstrap resamples for the AUC interval.

    Returns:
        A JSON-ready dict: method, separation, ``in_sample`` (accuracy with Wilson interval and AUC of the fit
        on all patients, scored on them; the paper's figure is next to it), ``evaluation`` (out-of-fold
        accuracy with Wilson interval and AUC with bootstrap interval, per-fold choices), and
        coefficients/odds ratios fitted on all data.
    """
    from sklearn.model_selection import StratifiedKFold

    cols = feature_columns(frame)
    if not cols:
        raise SpinedxError("the study table has no feature_* columns; add the 15 binary features to fit the "
                           "logistic regression", where="feature_logistic")
    complete = frame.dropna(subset=cols)
    n_dropped = len(frame) - len(complete)
    x = complete[cols].to_numpy(dtype=float)
    y = complete["y"].to_numpy(dtype=int)
    ids = complete["patient_id"].astype(str).to_numpy()

    if folds is None:
        n_min = int(min(np.sum(y == 1), np.sum(y == 0)))
        k = min(n_splits, n_min)
        if k < 2:
            raise SpinedxError(f"need at least 2 malignant and 2 benign patients with complete features to "
                               f"cross-validate the logistic regression (have {n_min} in the smaller group)",
                               where="feature_logistic")
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        val_sets = [ids[v] for _, v in skf.split(x, y)]
        folds_source = folds_source or f"stratified {k}-fold by patient (seed {seed})"
    else:
        val_sets = [np.asarray([str(p) for p in f]) for f in folds]
        folds_source = folds_source or "given"

    prob = np.full(len(y), np.nan)
    per_fold = []
    for k, val in enumerate(val_sets):
        is_val = np.isin(ids, val)
        train = ~is_val
        if is_val.sum() == 0:
            continue
        if len(np.unique(y[train])) < 2:
            raise SpinedxError(f"fold {k}: the training patients are all one class; the folds cannot train a "
                               "logistic regression", where="feature_logistic")
        model, mask, sep, method = _fit_logistic(x[train], y[train], seed)
        prob[is_val] = _predict_logistic(model, mask, x[is_val], y[train])
        per_fold.append({"fold": k, "n_train": int(train.sum()), "n_val": int(is_val.sum()), "separation": sep,
                         "method": method})

    done = ~np.isnan(prob)
    yv, pv = y[done], prob[done]
    pred = (pv >= 0.5).astype(int)
    n_correct = int(np.sum(pred == yv))
    acc, acc_low, acc_high = wilson_interval(n_correct, len(yv))
    auc, auc_low, auc_high = auc_with_ci(yv, pv, n_resamples=bootstrap_resamples, seed=seed)

    model, mask, sep, method = _fit_logistic(x, y, seed)
    # In-sample: fitted on every patient and scored on the same patients. This is what the paper's 0.94 is
    # (its Results give no held-out evaluation of the regression); it overstates accuracy on new patients.
    p_in = _predict_logistic(model, mask, x, y)
    n_correct_in = int(np.sum((p_in >= 0.5).astype(int) == y))
    acc_in, acc_in_low, acc_in_high = wilson_interval(n_correct_in, len(y))
    coefs = np.zeros(len(cols))
    intercept = float(np.log(np.mean(y) / (1 - np.mean(y)))) if 0 < np.mean(y) < 1 else math.nan
    if model is not None:
        coefs[mask] = model.coef_[0]
        intercept = float(model.intercept_[0])
    return {
        "features": [c.removeprefix("feature_") for c in cols],
        "n_patients": len(y),
        "n_left_out_missing_features": int(n_dropped),
        "separation": sep,
        "method": method,
        "method_note": (
            "unpenalised maximum-likelihood logistic regression (scikit-learn, C=inf): the features do not "
            "separate the labels" if sep == "none" else
            f"L2-regularised logistic regression (scikit-learn, C chosen from {REGULARISED_CS[0]:g}..."
            f"{REGULARISED_CS[-1]:g} by inner {INNER_FOLDS}-fold CV on the log-loss): the features separate the "
            f"labels ({sep} separation), so the maximum-likelihood fit does not exist"
        ),
        "constant_features": [c.removeprefix("feature_") for c, m in zip(cols, mask, strict=True) if not m],
        "in_sample": {
            "label": "in-sample (fitted and scored on the same patients, as the paper reported)",
            "n": len(y), "n_correct": n_correct_in, "threshold": 0.5,
            "accuracy": acc_in, "accuracy_low": acc_in_low, "accuracy_high": acc_in_high,
            "auc": roc_auc(y, p_in),
            "method": method, "separation": sep,
            "paper_accuracy": PAPER_LOGISTIC_ACCURACY,
        },
        "evaluation": {
            "label": "out-of-fold (each patient scored by a fit that did not see it)",
            "folds_source": folds_source,
            "n_folds": len(per_fold),
            "n_evaluated": int(done.sum()),
            "threshold": 0.5,
            "n_correct": n_correct,
            "accuracy": acc, "accuracy_low": acc_low, "accuracy_high": acc_high,
            "auc": auc, "auc_low": auc_low, "auc_high": auc_high,
            "folds": per_fold,
        },
        "coefficients": {
            "intercept": intercept,
            "features": [
                {"feature": c.removeprefix("feature_"), "coefficient": float(w), "odds_ratio": float(np.exp(w)),
                 "used": bool(m)}
                for c, w, m in zip(cols, coefs, mask, strict=True)
            ],
        },
        "oof": {"patient_id": ids[done].tolist(), "probability": pv.tolist()},
    }
