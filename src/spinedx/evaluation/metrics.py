"""Diagnostic metrics with confidence intervals.

Proportions (sensitivity, specificity, accuracy, PPV, NPV) get Wilson score 95% intervals
from :func:`statsmodels.stats.proportion.proportion_confint`; the ROC AUC comes from
:func:`sklearn.metrics.roc_auc_score` with a percentile bootstrap interval from
:func:`scipy.stats.bootstrap` (patients resampled with replacement).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

PROPORTIONS = ("sensitivity", "specificity", "accuracy", "ppv", "npv")


def wilson_interval(count: int, nobs: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """Proportion ``count/nobs`` with its Wilson score interval; NaNs when ``nobs`` is 0."""
    if nobs <= 0:
        return math.nan, math.nan, math.nan
    low, high = proportion_confint(count, nobs, alpha=alpha, method="wilson")
    return count / nobs, float(low), float(high)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """tp, tn, fp, fn for binary labels (1 = malignant = positive)."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    return {
        "tp": int(np.sum((y_true == 1) & (y_pred == 1))),
        "tn": int(np.sum((y_true == 0) & (y_pred == 0))),
        "fp": int(np.sum((y_true == 0) & (y_pred == 1))),
        "fn": int(np.sum((y_true == 1) & (y_pred == 0))),
    }


def metrics_from_counts(tp: int, tn: int, fp: int, fn: int, alpha: float = 0.05) -> dict[str, Any]:
    """Sensitivity, specificity, accuracy, PPV and NPV with Wilson intervals, from counts alone.

    Keys: ``n, tp, tn, fp, fn`` and for each proportion ``name``, ``name_low``, ``name_high``.
    """
    out: dict[str, Any] = {"n": tp + tn + fp + fn, "tp": tp, "tn": tn, "fp": fp, "fn": fn}
    parts = {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "accuracy": (tp + tn, tp + tn + fp + fn),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }
    for name, (k, n) in parts.items():
        est, low, high = wilson_interval(k, n, alpha)
        out[name], out[f"{name}_low"], out[f"{name}_high"] = est, low, high
    return out


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """:func:`metrics_from_counts` for label and prediction arrays."""
    return metrics_from_counts(**confusion_counts(y_true, y_pred), alpha=alpha)


def _rank_auc(y: np.ndarray, s: np.ndarray, axis: int = -1) -> np.ndarray:
    """ROC AUC along ``axis`` via the Mann-Whitney rank sum (ties get average ranks), equal to
    :func:`sklearn.metrics.roc_auc_score`; vectorised so the bootstrap's resamples are one call
    (thousands of ``roc_auc_score`` calls took seconds). NaN where a resample has one class."""
    y = np.moveaxis(np.asarray(y), axis, -1) == 1
    ranks = stats.rankdata(np.moveaxis(np.asarray(s, dtype=float), axis, -1), axis=-1)
    n1 = y.sum(-1)
    n0 = y.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (:func:`sklearn.metrics.roc_auc_score`) without an interval; NaN when only one class
    (or no sample) is present."""
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(roc_auc_score(y_true, np.asarray(score, dtype=float)))


def auc_with_ci(
    y_true: np.ndarray, score: np.ndarray, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """ROC AUC with a percentile bootstrap interval. NaNs when only one class is present."""
    y_true = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=float)
    auc = roc_auc(y_true, score)
    if math.isnan(auc):
        return math.nan, math.nan, math.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (y_true, score), _rank_auc, paired=True, vectorized=True, n_resamples=n_resamples,
            confidence_level=1 - alpha, method="percentile", random_state=np.random.default_rng(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return auc, low, high


def classification_report(
    y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5, alpha: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """All metrics of a probabilistic classifier at ``threshold`` (prediction = prob >= threshold)."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    out = binary_metrics(y_true, (prob >= threshold).astype(int), alpha=alpha)
    out["auc"], out["auc_low"], out["auc_high"] = auc_with_ci(y_true, prob, alpha=alpha, seed=seed)
    out["threshold"] = threshold
    return out
