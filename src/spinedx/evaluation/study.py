"""Study statistics: readers vs model, imaging features, and error analysis.

Implements the "Statistical analysis" section of Yeh et al., Eur Spine J 2022;31:2022-2030:

* **Table 2** - sensitivity, specificity, accuracy, PPV and NPV of every reader and of the model's
  out-of-fold patient predictions, with Wilson 95% intervals (:mod:`spinedx.evaluation.metrics`),
  and McNemar tests between every pair of raters, separately on malignant patients (sensitivity)
  and on benign patients (specificity).
* **Table 1** - the 15 binary imaging features scored by the senior reader, compared between
  malignant and benign patients with Fisher's exact test and odds ratios; then a logistic
  regression on all features (the paper reports 0.94 accuracy).
* **Error analysis** - features of one reader's false positives vs true negatives (benign
  patients) and false negatives vs true positives (malignant patients), as the paper does for
  the first-year resident (R1).

Every test is also available from counts alone (:func:`fisher_from_counts`,
:func:`mcnemar_from_counts`) so published tables can be checked without patient data.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.evaluation.metrics import auc_with_ci, metrics_from_counts, wilson_interval
from spinedx.features import FEATURES, LABELS, READER_COLUMNS

ALPHA = 0.05
#: Below this many discordant pairs McNemar uses the exact binomial test: the chi-square
#: approximation of McNemar's statistic is poor with few discordant pairs (the usual rule of
#: thumb, b + c < 25, e.g. Rosner, Fundamentals of Biostatistics; statsmodels' ``exact`` option).
MCNEMAR_EXACT_BELOW = 25
#: Rater name of the model's out-of-fold patient predictions in every table.
MODEL_RATER = "model"
#: Grid of C (inverse L2 strength) searched by inner CV when the features separate the labels.
REGULARISED_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
INNER_FOLDS = 5
#: The paper's accuracy of a logistic regression on the 15 features ("Results").
PAPER_LOGISTIC_ACCURACY = 0.94

PERF_COLUMNS = (
    "rater", "n", "n_missing", "tp", "tn", "fp", "fn",
    *(f"{m}{s}" for m in ("sensitivity", "specificity", "accuracy", "ppv", "npv") for s in ("", "_low", "_high")),
)
MCNEMAR_COLUMNS = ("rater_a", "rater_b", "group", "n", "b", "c", "test", "statistic", "p_value")
TABLE1_COLUMNS = (
    "feature", "description", "malignant_n", "malignant_total", "malignant_pct", "benign_n", "benign_total",
    "benign_pct", "p_value", "odds_ratio", "or_low", "or_high", "haldane",
)
ERROR_COLUMNS = (
    "reader", "comparison", "feature", "description", "group1_n", "group1_total", "group2_n", "group2_total",
    "p_value", "odds_ratio", "or_low", "or_high", "haldane",
)


# --------------------------------------------------------------------------------------------
# Tests from counts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FisherResult:
    """Fisher's exact test and odds ratio of a feature in group A vs group B.

    ``odds_ratio`` is odds(feature | A) / odds(feature | B). ``haldane`` is True when a cell was
    zero and 0.5 was added to every cell for the odds ratio and its interval only (the p-value
    always uses the raw counts).
    """

    a_n: int
    a_total: int
    b_n: int
    b_total: int
    p_value: float
    odds_ratio: float
    or_low: float
    or_high: float
    haldane: bool


def fisher_from_counts(a_n: int, a_total: int, b_n: int, b_total: int, alpha: float = ALPHA) -> FisherResult:
    """Two-sided Fisher exact test of ``a_n/a_total`` vs ``b_n/b_total``, with the odds ratio.

    The paper compares each binary feature between malignant and benign fractures with Fisher's
    exact test (Yeh et al. 2022, "Statistical analysis"). The odds ratio and its Woolf (log)
    interval come from :class:`statsmodels.stats.contingency_tables.Table2x2`; where a cell is
    zero the odds ratio is infinite or zero, so the Haldane-Anscombe correction (+0.5 to every
    cell) is applied there only, and flagged.

    Args:
        a_n: Patients with the feature in group A (e.g. malignant).
        a_total: Patients in group A.
        b_n: Patients with the feature in group B (e.g. benign).
        b_total: Patients in group B.
        alpha: 1 - confidence level of the odds-ratio interval.

    Returns:
        The counts, p-value and odds ratio with interval; NaNs when a group is empty.
    """
    from scipy.stats import fisher_exact
    from statsmodels.stats.contingency_tables import Table2x2

    a_n, a_total, b_n, b_total = int(a_n), int(a_total), int(b_n), int(b_total)
    if not (0 <= a_n <= a_total and 0 <= b_n <= b_total):
        raise ValueError(f"counts must satisfy 0 <= n <= total: {a_n}/{a_total}, {b_n}/{b_total}")
    if a_total == 0 or b_total == 0:
        nan = math.nan
        return FisherResult(a_n, a_total, b_n, b_total, nan, nan, nan, nan, False)
    table = np.array([[a_n, a_total - a_n], [b_n, b_total - b_n]], dtype=float)
    p_value = float(fisher_exact(table.astype(int), alternative="two-sided").pvalue)
    haldane = bool((table == 0).any())
    t22 = Table2x2(table + 0.5 if haldane else table, shift_zeros=False)
    low, high = t22.oddsratio_confint(alpha=alpha)
    return FisherResult(a_n, a_total, b_n, b_total, min(p_value, 1.0), float(t22.oddsratio), float(low),
                        float(high), haldane)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar test of two raters on the same patients.

    ``b``: patients rater A got right and rater B got wrong; ``c``: the reverse.
    """

    n: int
    b: int
    c: int
    test: str
    statistic: float
    p_value: float


def mcnemar_from_counts(b: int, c: int, n: int | None = None) -> McNemarResult:
    """McNemar test from the discordant counts ``b`` and ``c``.

    The paper compares sensitivity and specificity between raters with McNemar's test (Yeh et
    al. 2022, "Statistical analysis"). Only discordant pairs carry information. With fewer than
    :data:`MCNEMAR_EXACT_BELOW` of them the exact binomial test is used (the chi-square
    approximation is unreliable there), else the chi-square test with continuity correction;
    both via :func:`statsmodels.stats.contingency_tables.mcnemar`.

    Args:
        b: Patients rater A got right and rater B got wrong.
        c: Patients rater A got wrong and rater B got right.
        n: Patients both raters called (reported only); defaults to ``b + c``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0: b={b}, c={c}")
    exact = b + c < MCNEMAR_EXACT_BELOW
    # Concordant cells do not enter McNemar's test; zeros there keep the table valid.
    res = mcnemar(np.array([[0, b], [c, 0]]), exact=exact, correction=True)
    return McNemarResult(
        n=int(b + c if n is None else n), b=b, c=c, test="exact" if exact else "chi2",
        statistic=float(res.statistic), p_value=min(float(res.pvalue), 1.0),
    )


def discordant_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, int]:
    """``(n, b, c)`` from per-patient correctness (1/0, NaN = no call) of two raters.

    Patients without a call from either rater are left out of ``n``.
    """
    ca = np.asarray(correct_a, dtype=float)
    cb = np.asarray(correct_b, dtype=float)
    both = ~np.isnan(ca) & ~np.isnan(cb)
    ca, cb = ca[both], cb[both]
    return int(both.sum()), int(np.sum((ca == 1) & (cb == 0))), int(np.sum((ca == 0) & (cb == 1)))


# --------------------------------------------------------------------------------------------
# Table 2: raters
# --------------------------------------------------------------------------------------------


def rater_performance(y_true: np.ndarray, calls: Mapping[str, np.ndarray], alpha: float = ALPHA) -> pd.DataFrame:
    """Table 2: one row per rater with counts and proportions with Wilson intervals.

    Args:
        y_true: Labels, 1 = malignant (positive), 0 = benign.
        calls: Rater name -> calls aligned with ``y_true`` (1 malignant, 0 benign, NaN no call).
            Patients without a call are left out of that rater's figures and counted in
            ``n_missing``.
        alpha: 1 - confidence level.

    Returns:
        Columns :data:`PERF_COLUMNS`.
    """
    y = np.asarray(y_true, dtype=int)
    rows = []
    for rater, call in calls.items():
        call = np.asarray(call, dtype=float)
        has = ~np.isnan(call)
        yt, yp = y[has], call[has].astype(int)
        counts = {
            "tp": int(np.sum((yt == 1) & (yp == 1))), "tn": int(np.sum((yt == 0) & (yp == 0))),
            "fp": int(np.sum((yt == 0) & (yp == 1))), "fn": int(np.sum((yt == 1) & (yp == 0))),
        }
        row = {"rater": rater, "n_missing": int((~has).sum()), **metrics_from_counts(**counts, alpha=alpha)}
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PERF_COLUMNS))


def mcnemar_table(y_true: np.ndarray, calls: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """McNemar tests between every pair of raters, on malignant and on benign patients.

    On malignant patients a rater is right when it calls malignant (the test compares
    sensitivities); on benign patients when it calls benign (specificities). Each pair uses the
    patients both raters called.

    Returns:
        Columns :data:`MCNEMAR_COLUMNS`; ``b`` counts patients ``rater_a`` got right and
        ``rater_b`` got wrong, ``c`` the reverse.
    """
    y = np.asarray(y_true, dtype=int)
    correct = {}
    for name, v in calls.items():
        call = np.asarray(v, dtype=float)
        correct[name] = np.where(np.isnan(call), np.nan, (call == y).astype(float))
    rows = []
    for a, b in itertools.combinations(list(calls), 2):
        for group, label in (("malignant", 1), ("benign", 0)):
            sel = y == label
            n, nb, nc = discordant_counts(correct[a][sel], correct[b][sel])
            res = mcnemar_from_counts(nb, nc, n=n)
            rows.append({"rater_a": a, "rater_b": b, "group": group, "n": n, "b": nb, "c": nc, "test": res.test,
                         "statistic": res.statistic, "p_value": res.p_value})
    return pd.DataFrame(rows, columns=list(MCNEMAR_COLUMNS))


# --------------------------------------------------------------------------------------------
# Table 1: features
# --------------------------------------------------------------------------------------------


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The ``feature_*`` columns of ``frame``: the paper's Table 1 order, then any others."""
    known = [f"feature_{n}" for n in FEATURES if f"feature_{n}" in frame.columns]
    extra = sorted(c for c in frame.columns if c.startswith("feature_") and c not in known)
    return known + extra


def reader_columns(frame: pd.DataFrame) -> list[str]:
    """The ``reader_*`` columns: the known readers most to least experienced, then any others."""
    known = [c for c in READER_COLUMNS if c in frame.columns]
    return known + [c for c in frame.columns if c.startswith("reader_") and c not in known]


def _description(column: str) -> str:
    name = column.removeprefix("feature_")
    return FEATURES.get(name, name.replace("_", " "))


def _feature_row(col: str, a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Fisher/odds-ratio row for feature ``col`` in patient groups ``a`` vs ``b`` (NaN left out)."""
    a, b = a.dropna(), b.dropna()
    res = fisher_from_counts(int(a.sum()), len(a), int(b.sum()), len(b))
    return {"feature": col.removeprefix("feature_"), "description": _description(col),
            "p_value": res.p_value, "odds_ratio": res.odds_ratio, "or_low": res.or_low, "or_high": res.or_high,
            "haldane": res.haldane, "_res": res}


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else math.nan


def feature_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1: each feature's count and percent in the malignant and benign groups, Fisher p, OR.

    Args:
        frame: Study table with ``y`` (1 malignant) and ``feature_*`` columns (0/1, NaN = not
            scored: left out of that feature's totals).

    Returns:
        Columns :data:`TABLE1_COLUMNS`, one row per feature in the paper's order.
    """
    mal, ben = frame[frame["y"] == 1], frame[frame["y"] == 0]
    rows = []
    for col in feature_columns(frame):
        row = _feature_row(col, mal[col], ben[col])
        res: FisherResult = row.pop("_res")
        row.update(malignant_n=res.a_n, malignant_total=res.a_total, malignant_pct=_pct(res.a_n, res.a_total),
                   benign_n=res.b_n, benign_total=res.b_total, benign_pct=_pct(res.b_n, res.b_total))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


# --------------------------------------------------------------------------------------------
# Logistic regression on the features
# --------------------------------------------------------------------------------------------


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
    """Logistic regression on all imaging features, evaluated out of fold (the paper: accuracy 0.94).

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
        A JSON-ready dict: method, separation, out-of-fold accuracy (Wilson interval) and AUC
        (bootstrap interval), per-fold choices, and coefficients/odds ratios fitted on all data.
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
        "evaluation": {
            "folds_source": folds_source,
            "n_folds": len(per_fold),
            "n_evaluated": int(done.sum()),
            "threshold": 0.5,
            "n_correct": n_correct,
            "accuracy": acc, "accuracy_low": acc_low, "accuracy_high": acc_high,
            "auc": auc, "auc_low": auc_low, "auc_high": auc_high,
            "paper_accuracy": PAPER_LOGISTIC_ACCURACY,
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


# --------------------------------------------------------------------------------------------
# Error analysis
# --------------------------------------------------------------------------------------------


def error_analysis(frame: pd.DataFrame, call: np.ndarray, reader: str) -> pd.DataFrame:
    """Features behind one reader's errors (the paper's analysis of the R1 resident).

    Among benign patients the reader's false positives are compared with the true negatives,
    among malignant patients the false negatives with the true positives, feature by feature
    with Fisher's exact test (features as scored by the senior reader). Patients without a
    call from the reader are left out.

    Args:
        frame: Study table (``y``, ``feature_*``).
        call: The reader's calls aligned with ``frame`` (1 malignant, 0 benign, NaN none).
        reader: The reader's name (reported).

    Returns:
        Columns :data:`ERROR_COLUMNS`; group 1 is the error group (FP or FN), group 2 the correct one.
    """
    call = np.asarray(call, dtype=float)
    y = frame["y"].to_numpy(dtype=int)
    groups = {
        "fp_vs_tn": ((y == 0) & (call == 1), (y == 0) & (call == 0)),
        "fn_vs_tp": ((y == 1) & (call == 0), (y == 1) & (call == 1)),
    }
    rows = []
    for comparison, (g1, g2) in groups.items():
        for col in feature_columns(frame):
            row = _feature_row(col, frame.loc[g1, col], frame.loc[g2, col])
            res: FisherResult = row.pop("_res")
            rows.append({**row, "reader": reader, "comparison": comparison, "group1_n": res.a_n,
                         "group1_total": res.a_total, "group2_n": res.b_n, "group2_total": res.b_total})
    return pd.DataFrame(rows, columns=list(ERROR_COLUMNS))


def default_error_reader(frame: pd.DataFrame) -> str | None:
    """The least experienced reader present (``reader_r1`` in the paper), or None without readers."""
    readers = reader_columns(frame)
    known = [c for c in READER_COLUMNS if c in readers]
    if known:
        return known[-1]
    return readers[-1] if readers else None


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

_CALLS = {"benign": 0.0, "malignant": 1.0}


def load_study_table(path: str | Path) -> pd.DataFrame:
    """Load the study table (cohort manifest) for :func:`run_study`.

    Uses :func:`spinedx.cohort.load_manifest` with ``require_images=False``: only
    ``patient_id``, ``label``, ``feature_*`` and ``reader_*`` are needed, so a study table
    without images works too.

    Args:
        path: The cohort manifest CSV.

    Returns:
        ``patient_id`` (str), ``label``, ``y`` (1 malignant), ``feature_*`` (0/1), ``reader_*``
        (``'benign'``/``'malignant'``/None).

    Raises:
        ManifestError: missing file or column, listing every bad label, feature or reader value.
    """
    from spinedx.cohort import load_manifest

    frame = load_manifest(path, require_images=False).to_frame()
    frame["patient_id"] = frame["patient_id"].astype(str)
    return frame


def rater_calls(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reader columns as calls (1 malignant, 0 benign, NaN none), most experienced first."""
    return {c: frame[c].map(lambda v: _CALLS.get(v, np.nan) if isinstance(v, str) else np.nan)
            .to_numpy(dtype=float) for c in reader_columns(frame)}


@dataclass
class RunPredictions:
    """The model's out-of-fold patient predictions from a CV run folder (``spinedx cv``)."""

    run_dir: Path
    oof: pd.DataFrame  # patient_id (str), fold, label?, probability?, prediction (0/1)
    folds: list[list[str]] | None
    folds_source: str | None
    threshold: float
    optimistic: bool | None
    config: dict[str, Any] = field(default_factory=dict)

    def calls_for(self, patient_ids: Sequence[str]) -> np.ndarray:
        """The model's calls aligned with ``patient_ids`` (NaN where the run has no prediction)."""
        m = dict(zip(self.oof["patient_id"], self.oof["prediction"].astype(float), strict=True))
        return np.array([m.get(str(p), np.nan) for p in patient_ids], dtype=float)


def _find_key(obj: Any, keys: Sequence[str]) -> Any:
    """First value of any of ``keys`` in a nested dict (breadth first)."""
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            for k in keys:
                if k in cur and not isinstance(cur[k], dict):
                    return cur[k]
            queue.extend(v for v in cur.values() if isinstance(v, dict))
    return None


def _read_splits(path: Path) -> list[list[str]] | None:
    """Validation patient ids per fold from ``splits.json``, or None when unusable.

    Layout written by ``spinedx cv`` (:func:`spinedx.evaluation.splits.make_splits`):
    ``{"folds": n, "fold_of": {pid: k}, "splits": [{"fold": k, "val": [ids], "inner_val": [...]}]}``.
    Also accepted: the list under ``"folds"`` instead of ``"splits"``, a top-level list,
    ``val_patients``/``validation``/``test`` instead of ``val``, lists of ids instead of dicts,
    or only the ``fold_of`` mapping. Anything else gives None (the folds are then taken from
    the ``fold`` column of ``oof_patients.csv``).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entries: Any = data
    if isinstance(data, dict):
        entries = next((data[k] for k in ("splits", "folds") if isinstance(data.get(k), list)), None)
        if entries is None and isinstance(data.get("fold_of"), dict) and data["fold_of"]:
            by_fold: dict[str, list[str]] = {}
            for pid, k in data["fold_of"].items():
                by_fold.setdefault(str(k), []).append(str(pid))
            return [by_fold[k] for k in sorted(by_fold, key=lambda k: (len(k), k))]
    if not isinstance(entries, list) or not entries:
        return None
    if all(isinstance(e, dict) and isinstance(e.get("fold"), int) for e in entries):
        entries = sorted(entries, key=lambda e: e["fold"])
    out = []
    for e in entries:
        val = next((e[k] for k in ("val", "val_patients", "validation", "test") if k in e), None) \
            if isinstance(e, dict) else e
        if not isinstance(val, list):
            return None
        out.append([str(p) for p in val])
    return out


def load_run(run_dir: str | Path, patient_ids: Sequence[str] | None = None,
             labels: Mapping[str, int] | None = None) -> RunPredictions:
    """Read a CV run folder's ``oof_patients.csv``, ``splits.json`` and ``config.yaml``.

    ``prediction`` (0/1 or benign/malignant) is used as the model's call; without it,
    ``probability >= threshold`` from ``config.yaml`` (default 0.5).

    Args:
        run_dir: The folder written by ``spinedx cv``.
        patient_ids: The cohort's patients; every patient in the run must be among them.
        labels: patient_id -> y of the cohort; the run's ``label`` column must agree.

    Raises:
        SpinedxError: missing folder or ``oof_patients.csv``, bad columns or values, patients not
            in the cohort, labels that disagree with the cohort, overlapping folds.
    """
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpinedxError("run folder not found; give the folder written by `spinedx cv`", where=str(run_dir))
    oof_path = run_dir / "oof_patients.csv"
    if not oof_path.is_file():
        raise SpinedxError("missing oof_patients.csv; the run folder must come from a finished `spinedx cv`",
                           where=str(oof_path))
    config: dict[str, Any] = {}
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        try:
            loaded = yaml.safe_load(cfg_path.read_text())
        except yaml.YAMLError as exc:
            raise SpinedxError(f"config.yaml is not valid YAML ({exc})", where=str(cfg_path)) from exc
        config = loaded if isinstance(loaded, dict) else {}
    threshold = _find_key(config, ("threshold",))
    try:
        threshold = 0.5 if threshold is None else float(threshold)
    except (TypeError, ValueError) as exc:
        raise SpinedxError(f"threshold {threshold!r} is not a number", where=str(cfg_path)) from exc
    optimistic = _find_key(config, ("optimistic", "optimistic_early_stopping", "early_stopping_optimistic"))

    try:
        oof = pd.read_csv(oof_path, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpinedxError(f"cannot read as CSV ({exc})", where=str(oof_path)) from exc
    if "patient_id" not in oof.columns or not ({"prediction", "probability"} & set(oof.columns)):
        raise SpinedxError("needs columns patient_id and prediction (or probability); found "
                           + ", ".join(map(str, oof.columns)), where=str(oof_path))
    oof["patient_id"] = oof["patient_id"].astype(str).str.strip()
    dup = sorted(set(oof["patient_id"][oof["patient_id"].duplicated()]))
    if dup:
        raise SpinedxError(f"patient(s) {', '.join(dup[:5])} appear more than once", where=str(oof_path))
    if "probability" in oof.columns:
        oof["probability"] = pd.to_numeric(oof["probability"], errors="coerce")
    if "prediction" in oof.columns:
        pred = oof["prediction"].astype(str).str.strip().str.lower().map(
            {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "benign": 0, "malignant": 1, "false": 0, "true": 1})
        bad = oof["patient_id"][pred.isna()].tolist()
        if bad:
            raise SpinedxError(f"prediction of patient {bad[0]} is not 0/1 (or benign/malignant)", where=str(oof_path))
    else:
        bad = oof["patient_id"][oof["probability"].isna()].tolist()
        if bad:
            raise SpinedxError(f"probability of patient {bad[0]} is not a number", where=str(oof_path))
        pred = (oof["probability"] >= threshold).astype(int)
    oof["prediction"] = pred.astype(int)

    splits_path = run_dir / "splits.json"
    folds = _read_splits(splits_path) if splits_path.is_file() else None
    source = "splits.json" if folds is not None else None
    if folds is None and "fold" in oof.columns:
        folds = [oof.loc[oof["fold"] == k, "patient_id"].tolist() for k in sorted(oof["fold"].dropna().unique())]
        source = "oof_patients.csv fold column"
    if folds is not None:
        seen: set[str] = set()
        for f in folds:
            again = seen & set(f)
            if again:
                raise SpinedxError(f"patient {min(again)} is in more than one validation fold",
                                   where=str(splits_path if source == "splits.json" else oof_path))
            seen |= set(f)

    if patient_ids is not None:
        known = set(map(str, patient_ids))
        for where, ids in ((oof_path, oof["patient_id"]), (splits_path, itertools.chain.from_iterable(folds or []))):
            missing = sorted(set(ids) - known)
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise SpinedxError(f"patient {missing[0]}{more} of the run is not in the cohort; use the cohort "
                                   "manifest the run was made from", where=str(where))
    if labels is not None and "label" in oof.columns:
        for pid, lab in zip(oof["patient_id"], oof["label"], strict=True):
            v = str(lab).strip().lower()
            y = LABELS.get(v, {"0": 0, "1": 1, "0.0": 0, "1.0": 1}.get(v))
            if y is None or (pid in labels and labels[pid] != y):
                raise SpinedxError(f"patient {pid}: label '{lab}' in the run disagrees with the cohort",
                                   where=str(oof_path))
    return RunPredictions(run_dir, oof, folds, source, threshold,
                          None if optimistic is None else bool(optimistic), config)


# --------------------------------------------------------------------------------------------
# The whole study
# --------------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    """Everything ``spinedx stats`` computes; :func:`write_study` writes it."""

    table2: pd.DataFrame
    mcnemar: pd.DataFrame
    table1: pd.DataFrame
    logistic: dict[str, Any] | None
    error_analysis: pd.DataFrame | None
    error_reader: str | None
    summary: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)


def _clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return _clean(df.to_dict(orient="records"))


def compute_study(
    frame: pd.DataFrame, run: RunPredictions | None = None, reader: str | None = None, *,
    alpha: float = ALPHA, bootstrap_resamples: int = 2000, seed: int = 0,
) -> StudyResult:
    """All study statistics from a loaded study table and (optionally) a CV run.

    Args:
        frame: From :func:`load_study_table` (or ``Cohort.to_frame()``).
        run: From :func:`load_run`; adds the ``model`` rater and gives the logistic regression
            the run's patient folds.
        reader: Rater for the error analysis (a ``reader_*`` column or ``model``); default the
            least experienced reader present (:func:`default_error_reader`).
        alpha: Significance level (and 1 - confidence level of the intervals).
        bootstrap_resamples: Bootstrap resamples of the AUC intervals.
        seed: Seed of the stratified folds (no run) and of the bootstraps.
    """
    ids = frame["patient_id"].astype(str).tolist()
    y = frame["y"].to_numpy(dtype=int)
    calls = rater_calls(frame)
    model_info: dict[str, Any] | None = None
    if run is not None:
        calls[MODEL_RATER] = run.calls_for(ids)
        model_info = {"run": str(run.run_dir), "threshold": run.threshold, "optimistic": run.optimistic,
                      "folds_source": run.folds_source}

    # Checked first: a typo in --reader should fail before the slow parts.
    if reader is None:
        reader = default_error_reader(frame)
    elif reader not in calls:
        if f"reader_{reader}" in calls:
            reader = f"reader_{reader}"
        else:
            raise SpinedxError(f"no rater '{reader}'; choose one of " + ", ".join(calls), where="--reader")

    if run is not None and model_info is not None and "probability" in run.oof.columns:
        prob = dict(zip(run.oof["patient_id"], run.oof["probability"], strict=True))
        p = np.array([prob.get(pid, np.nan) for pid in ids], dtype=float)
        has = ~np.isnan(p)
        auc, low, high = auc_with_ci(y[has], p[has], alpha=alpha, n_resamples=bootstrap_resamples, seed=seed)
        model_info.update(auc=auc, auc_low=low, auc_high=high, n_auc=int(has.sum()))

    table2 = rater_performance(y, calls, alpha=alpha)
    mcn = mcnemar_table(y, calls)
    table1 = feature_table(frame)

    logistic = None
    if feature_columns(frame):
        folds = run.folds if run is not None else None
        logistic = feature_logistic(frame, folds, seed=seed, bootstrap_resamples=bootstrap_resamples,
                                    folds_source=f"run {run.folds_source}" if folds is not None and run else None)

    errors = error_analysis(frame, calls[reader], reader) if reader is not None and feature_columns(frame) else None

    summary = {
        "n_patients": len(frame), "n_malignant": int(np.sum(y == 1)), "n_benign": int(np.sum(y == 0)),
        "raters": list(calls), "alpha": alpha,
        "table2": _records(table2),
        "mcnemar_significant": _records(mcn[mcn["p_value"] < alpha]),
        "model": model_info,
        "features_significant": table1.loc[table1["p_value"] < alpha, "feature"].tolist(),
        "logistic": None if logistic is None else {k: v for k, v in logistic.items() if k not in ("oof",)},
        "error_analysis": None if errors is None else {
            "reader": reader,
            "significant": _records(errors.loc[errors["p_value"] < alpha,
                                               ["comparison", "feature", "group1_n", "group1_total", "group2_n",
                                                "group2_total", "p_value"]]),
        },
        "methods": {
            "proportions": "Wilson score 95% intervals (statsmodels proportion_confint)",
            "mcnemar": f"statsmodels mcnemar: exact binomial when b + c < {MCNEMAR_EXACT_BELOW} (the chi-square "
                       "approximation is unreliable with few discordant pairs), else chi-square with continuity "
                       "correction; b = patients rater_a got right and rater_b got wrong, c = the reverse; "
                       "'malignant' compares sensitivity, 'benign' specificity",
            "fisher": "scipy fisher_exact two-sided; odds ratio and Woolf interval from statsmodels Table2x2, "
                      "Haldane-Anscombe +0.5 on every cell only where a cell is zero (haldane column)",
            "missing_calls": "patients without a rater's call are left out of that rater's figures (n_missing)",
        },
    }
    return StudyResult(table2, mcn, table1, logistic, errors, reader, _clean(summary))


def write_study(result: StudyResult, out_dir: str | Path, inputs: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the tables, ``feature_logistic.json`` and ``stats.json`` (with provenance) to ``out_dir``."""
    from spinedx.provenance import provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table2": out / "table2_performance.csv", "mcnemar": out / "mcnemar.csv",
             "table1": out / "table1_features.csv"}
    result.table2.to_csv(files["table2"], index=False)
    result.mcnemar.to_csv(files["mcnemar"], index=False)
    result.table1.to_csv(files["table1"], index=False)
    if result.logistic is not None:
        files["logistic"] = out / "feature_logistic.json"
        files["logistic"].write_text(json.dumps(_clean(result.logistic), indent=2))
    if result.error_analysis is not None:
        files["error_analysis"] = out / "error_analysis.csv"
        result.error_analysis.to_csv(files["error_analysis"], index=False)
    files["stats"] = out / "stats.json"
    summary = {**result.summary, "inputs": _clean(dict(inputs or {})),
               "files": {k: v.name for k, v in files.items()}, "provenance": provenance()}
    files["stats"].write_text(json.dumps(summary, indent=2))
    result.out_dir, result.files = out, files
    return files


def run_study(
    cohort_csv: str | Path, out_dir: str | Path | None = None, run_dir: str | Path | None = None,
    reader: str | None = None, *, bootstrap_resamples: int = 2000, seed: int = 0,
) -> StudyResult:
    """``spinedx stats``: load the study table (and run), compute everything, write the files.

    Args:
        cohort_csv: Cohort manifest (only patient_id, label, feature_*, reader_* are needed).
        out_dir: Output folder; default ``RUN_DIR/stats`` when a run is given.
        run_dir: CV run folder (``oof_patients.csv``, ``splits.json``, ``config.yaml``).
        reader: Rater for the error analysis (default the least experienced reader).
        bootstrap_resamples: Bootstrap resamples of the AUC intervals.
        seed: Seed of the stratified folds (no run) and of the bootstraps.

    Returns:
        The result, with ``files`` naming what was written.
    """
    from spinedx.provenance import sha256_file

    frame = load_study_table(cohort_csv)
    run = None
    if run_dir is not None:
        run = load_run(run_dir, frame["patient_id"].tolist(), dict(zip(frame["patient_id"], frame["y"], strict=True)))
    if out_dir is None:
        if run_dir is None:
            raise SpinedxError("give an output folder (--out DIR)", where="--out")
        out_dir = Path(run_dir) / "stats"
    result = compute_study(frame, run, reader, bootstrap_resamples=bootstrap_resamples, seed=seed)
    inputs = {"cohort": str(cohort_csv), "cohort_sha256": sha256_file(cohort_csv),
              "run": None if run_dir is None else str(run_dir), "reader": result.error_reader}
    write_study(result, out_dir, inputs)
    return result
