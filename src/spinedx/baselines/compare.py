"""Paired comparison of two ROC AUCs on the same patients (DeLong et al., Biometrics 1988).

The model and a baseline score the same out-of-fold patients, so their AUCs are correlated; DeLong's test
uses the structural components (placement values) of both AUCs to estimate the variance of their difference.
The fast algorithm of Sun & Xu (IEEE Signal Process Lett 2014) computes them from mid-ranks, handling ties as
the Mann-Whitney statistic does (a tie counts one half), so the AUCs equal scikit-learn's ``roc_auc_score``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,), positive placements V10 (k, m) and negative placements V01 (k, n) of k score vectors."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # share of negatives below each positive (ties half)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # share of positives above each negative
    return auc, v10, v01


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """DeLong's test of ``AUC(a) - AUC(b)`` on paired scores of the same cases.

    Args:
        y_true: (n,) labels 0/1.
        score_a: (n,) scores of the first classifier (e.g. the CNN's patient probabilities).
        score_b: (n,) scores of the second (e.g. the radiomics baseline's), same cases in the same order.
        alpha: 1 - confidence level of the interval of the difference.

    Returns:
        ``{"auc_a", "auc_b", "difference", "se", "z", "p_value", "difference_low", "difference_high",
        "method"}``; NaN where one class is missing or both scores carry no rank information (se 0).
    """
    y = np.asarray(y_true).astype(int)
    s = np.vstack([np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)])
    out: dict[str, Any] = {"method": "DeLong et al. 1988 (fast algorithm of Sun & Xu 2014), two-sided"}
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m == 0 or n == 0 or s.shape[1] != len(y):
        return {**out, **dict.fromkeys(("auc_a", "auc_b", "difference", "se", "z", "p_value", "difference_low",
                                        "difference_high"), math.nan)}
    auc, v10, v01 = _placements(y, s)
    s10 = np.cov(v10) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(v01) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(var) if var > 0 else 0.0
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
        q = float(stats.norm.ppf(1 - alpha / 2))
        low, high = diff - q * se, diff + q * se
    else:
        z = p = low = high = math.nan
        if diff == 0:
            p = 1.0
    return {**out, "auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff, "se": se, "z": z,
            "p_value": p, "difference_low": low, "difference_high": high}


def auc_variance(y_true: np.ndarray, score: np.ndarray) -> float:
    """DeLong's variance of one AUC (for checks and single-model intervals)."""
    y = np.asarray(y_true).astype(int)
    m, n = int((y == 1).sum()), int((y == 0).sum())
    _, v10, v01 = _placements(y, np.asarray(score, dtype=float)[None, :])
    return float(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n)
