"""Diagnostic metrics with confidence intervals.

Proportions (sensitivity, specificity, accuracy, PPV, NPV) get Wilson score 95% intervals
from :func:`statsmodels.stats.proportion.proportion_confint`; the ROC AUC comes from
:func:`sklearn.metrics.roc_auc_score` with a stratified percentile bootstrap interval from
:func:`scipy.stats.bootstrap` (malignant and benign patients resampled separately, with
replacement), and the ROC curve's band from the same resampling scheme (:func:`roc_band`).
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
    :func:`sklearn.metrics.roc_auc_score`, vectorised over resamples given as index arrays; NaN where a
    resample has one class."""
    y = np.moveaxis(np.asarray(y), axis, -1) == 1
    ranks = stats.rankdata(np.moveaxis(np.asarray(s, dtype=float), axis, -1), axis=-1)
    n1 = y.sum(-1)
    n0 = y.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _auc_two_samples(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """ROC AUC of positive scores ``pos`` against negative scores ``neg`` along ``axis``: the Mann-Whitney U
    of the positives (:func:`scipy.stats.mannwhitneyu`, ties count one half) over ``n_pos * n_neg``, which
    equals :func:`sklearn.metrics.roc_auc_score`; vectorised, so all bootstrap resamples are one call."""
    u = stats.mannwhitneyu(pos, neg, axis=axis, method="asymptotic").statistic
    return np.asarray(u / (np.shape(pos)[axis] * np.shape(neg)[axis]), dtype=float)


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
    """ROC AUC with a stratified percentile bootstrap interval; NaNs when only one class is present.

    The bootstrap resamples the malignant and the benign patients separately, each with replacement and
    keeping its size (:func:`scipy.stats.bootstrap` with the two classes as independent samples). Every
    resample therefore holds both classes and has an AUC, so the interval is finite even with few
    positives (5 of 50: an unstratified resample has no positive about 0.5% of the time, and percentile
    intervals of such resamples were NaN). The ROC band of the report (:func:`roc_band`) uses the same
    scheme. A class with a single patient is held fixed (its resamples are all that patient); with one
    patient in each class the interval is the point estimate.

    Args:
        y_true: 0/1 labels (1 positive).
        score: Scores, higher = more likely positive.
        alpha: 1 - confidence level.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(auc, low, high)``.
    """
    y_true = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=float)
    auc = roc_auc(y_true, score)
    if math.isnan(auc):
        return math.nan, math.nan, math.nan
    pos, neg = score[y_true == 1], score[y_true == 0]
    rng = np.random.default_rng(seed)
    common = {"vectorized": True, "n_resamples": n_resamples, "confidence_level": 1 - alpha,
              "method": "percentile", "random_state": rng}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning when every resample has the same AUC
        if len(pos) >= 2 and len(neg) >= 2:
            res = stats.bootstrap((pos, neg), _auc_two_samples, paired=False, **common)
        elif len(pos) >= 2 or len(neg) >= 2:
            fixed, varying, positive_varies = (neg, pos, True) if len(pos) >= 2 else (pos, neg, False)

            def one_sample(v: np.ndarray, axis: int = -1) -> np.ndarray:
                f = np.broadcast_to(fixed, (*np.shape(v)[:-1], len(fixed)))
                return _auc_two_samples(v, f, axis) if positive_varies else _auc_two_samples(f, v, axis)

            res = stats.bootstrap((varying,), one_sample, **common)
        else:
            return auc, auc, auc
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return auc, low, high


def stratified_resamples(y_true: np.ndarray, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Indices ``(n_resamples, n)`` of stratified bootstrap resamples: the positives drawn with replacement
    from the positives, the negatives from the negatives (the scheme of :func:`auc_with_ci`)."""
    y = np.asarray(y_true).astype(int)
    rng = np.random.default_rng(seed)
    parts = [np.flatnonzero(y == c) for c in (1, 0)]
    return np.concatenate([p[rng.integers(0, len(p), (n_resamples, len(p)))] for p in parts if len(p)], axis=1)


def roc_band(
    y_true: np.ndarray, score: np.ndarray, *, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05,
    grid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise percentile band of the ROC curve from stratified bootstrap resamples (as :func:`auc_with_ci`).

    Each resample's curve (:func:`sklearn.metrics.roc_curve`) is read on a grid of false-positive rates (the
    highest true-positive rate reached at each), then the ``alpha/2`` and ``1 - alpha/2`` percentiles are
    taken at every grid point.

    Returns:
        ``(fpr_grid, tpr_low, tpr_high)``; NaN bands when a class is absent.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true).astype(int)
    p = np.asarray(score, dtype=float)
    fpr_grid = np.linspace(0, 1, 101) if grid is None else np.asarray(grid, dtype=float)
    if len(np.unique(y)) < 2:
        nan = np.full_like(fpr_grid, np.nan)
        return fpr_grid, nan, nan
    curves = []
    for idx in stratified_resamples(y, n_resamples, seed):
        fpr, tpr, _ = roc_curve(y[idx], p[idx], drop_intermediate=False)
        curves.append(np.interp(fpr_grid, fpr, tpr))
    low, high = np.percentile(np.asarray(curves), [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    low[0] = 0.0  # every ROC curve starts at (0, 0)
    return fpr_grid, low, high


def classification_report(
    y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5, alpha: float = 0.05, seed: int = 0,
    n_resamples: int = 2000,
) -> dict[str, Any]:
    """All metrics of a probabilistic classifier at ``threshold`` (prediction = prob >= threshold)."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    out = binary_metrics(y_true, (prob >= threshold).astype(int), alpha=alpha)
    out["auc"], out["auc_low"], out["auc_high"] = auc_with_ci(y_true, prob, alpha=alpha, seed=seed,
                                                              n_resamples=n_resamples)
    out["threshold"] = threshold
    return out


def _weighted_slice_counts(m_pos: np.ndarray, m_neg: np.ndarray, tallies_pos: np.ndarray,
                           tallies_neg: np.ndarray) -> np.ndarray:
    """tp, fn, tn, fp (..., 4) of slices given patient multiplicities and per-patient tallies."""
    tp_fn = m_pos @ tallies_pos  # (..., 2): tp, fn
    tn_fp = m_neg @ tallies_neg  # (..., 2): tn, fp
    return np.concatenate([tp_fn, tn_fp], axis=-1)


def patient_bootstrap_report(
    y_true: np.ndarray, prob: np.ndarray, patient_id: np.ndarray, threshold: float = 0.5, alpha: float = 0.05,
    seed: int = 0, n_resamples: int = 2000,
) -> dict[str, Any]:
    """Slice-level metrics with intervals that resample **patients**, not slices.

    A patient's slices are not independent (the same vertebra on neighbouring slices, one label), so Wilson
    intervals and a slice bootstrap that treat them as independent samples are too narrow. Here every bootstrap
    resample draws patients with replacement, malignant and benign patients separately at their own sizes (the
    stratified scheme of :func:`auc_with_ci`, through :func:`scipy.stats.bootstrap` with the two classes'
    patients as independent samples), keeps all slices of each drawn patient, and recomputes the slice-level
    AUC, sensitivity, specificity, accuracy, PPV and NPV; the intervals are percentile intervals. With one slice
    per patient the AUC interval equals :func:`auc_with_ci`'s (same resamples; tested).

    Args:
        y_true: (N,) slice labels (constant within a patient).
        prob: (N,) slice probabilities.
        patient_id: (N,) patient of each slice.
        threshold: call malignant when ``prob >= threshold``.
        alpha: 1 - confidence level.
        seed: seed of the resampling.
        n_resamples: bootstrap resamples.

    Returns:
        The keys of :func:`classification_report` (point estimates over all slices), with ``_low``/``_high`` from
        the patient bootstrap, plus ``n_patients`` and ``interval`` naming the method.

    Raises:
        ValueError: a patient whose slices carry both labels.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=float)
    pid = np.asarray(patient_id).astype(str)
    patients, inv = np.unique(pid, return_inverse=True)
    lab = np.full(len(patients), -1)
    for k, (i, yy) in enumerate(zip(inv, y, strict=True)):
        if lab[i] not in (-1, yy):
            raise ValueError(f"patient {patients[i]} has slices of both labels (slice {k})")
        lab[i] = yy
    out = binary_metrics(y, (p >= threshold).astype(int), alpha=alpha)
    out["auc"] = roc_auc(y, p)
    out.update(threshold=threshold, n_patients=len(patients),
               interval="patient bootstrap (patients resampled by class, all their slices kept; percentile)")
    names = ("auc", *PROPORTIONS)
    for name in names:
        out[f"{name}_low"] = out[f"{name}_high"] = math.nan
    pos_pat, neg_pat = np.flatnonzero(lab == 1), np.flatnonzero(lab == 0)
    if len(pos_pat) < 2 or len(neg_pat) < 2:  # nothing to resample in a class: no interval
        return out
    pred = p >= threshold
    # per-patient tallies: malignant patients (tp, fn), benign patients (tn, fp)
    tallies_pos = np.stack([np.bincount(inv, weights=pred & (y == 1), minlength=len(patients))[pos_pat],
                            np.bincount(inv, weights=~pred & (y == 1), minlength=len(patients))[pos_pat]], axis=1)
    tallies_neg = np.stack([np.bincount(inv, weights=~pred & (y == 0), minlength=len(patients))[neg_pat],
                            np.bincount(inv, weights=pred & (y == 0), minlength=len(patients))[neg_pat]], axis=1)
    # AUC numerator per (positive slice, negative patient): negatives of that patient below it, ties one half
    pos_slices = np.flatnonzero(y == 1)
    neg_slices = np.flatnonzero(y == 0)
    pos_rank = {int(k): n for n, k in enumerate(pos_pat)}
    neg_rank = {int(k): n for n, k in enumerate(neg_pat)}
    s_pos, s_neg = p[pos_slices], p[neg_slices]
    below = (s_pos[:, None] > s_neg[None, :]) + 0.5 * (s_pos[:, None] == s_neg[None, :])
    neg_owner = np.array([neg_rank[int(i)] for i in inv[neg_slices]])
    pair = np.zeros((len(pos_slices), len(neg_pat)))
    np.add.at(pair.T, neg_owner, below.T)
    pos_owner = np.array([pos_rank[int(i)] for i in inv[pos_slices]])
    # summed over the positive patient's slices: (n_pos_patients, n_neg_patients)
    pair_pat = np.zeros((len(pos_pat), len(neg_pat)))
    np.add.at(pair_pat, pos_owner, pair)
    n_slices_pos = np.bincount(pos_owner, minlength=len(pos_pat)).astype(float)
    n_slices_neg = np.bincount(neg_owner, minlength=len(neg_pat)).astype(float)

    def multiplicity(idx: np.ndarray, size: int) -> np.ndarray:
        """(..., size) counts of each patient in resamples of indices ``idx`` (..., n)."""
        idx = np.asarray(idx).astype(np.int64)
        flat = idx.reshape(-1, idx.shape[-1])
        rows = np.repeat(np.arange(len(flat)), flat.shape[-1])
        m = np.bincount(rows * size + flat.ravel(), minlength=len(flat) * size).reshape(len(flat), size)
        return m.reshape(*idx.shape[:-1], size).astype(float)

    def statistic(ipos: np.ndarray, ineg: np.ndarray, axis: int = -1) -> np.ndarray:
        ipos, ineg = np.moveaxis(ipos, axis, -1), np.moveaxis(ineg, axis, -1)
        mp, mn = multiplicity(ipos, len(pos_pat)), multiplicity(ineg, len(neg_pat))
        tp, fn, tn, fp = np.moveaxis(_weighted_slice_counts(mp, mn, tallies_pos, tallies_neg), -1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((mp @ pair_pat) * mn).sum(-1) / ((mp @ n_slices_pos) * (mn @ n_slices_neg))
            return np.stack([auc, tp / (tp + fn), tn / (tn + fp), (tp + tn) / (tp + tn + fp + fn), tp / (tp + fp),
                             tn / (tn + fn)])

    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (constant) statistics, NaN PPV in resamples without a call
        res = stats.bootstrap((np.arange(len(pos_pat)), np.arange(len(neg_pat))), statistic, paired=False,
                              vectorized=True, n_resamples=n_resamples, confidence_level=1 - alpha,
                              method="percentile", random_state=rng)
    for k, name in enumerate(names):
        low, high = float(res.confidence_interval.low[k]), float(res.confidence_interval.high[k])
        out[f"{name}_low"], out[f"{name}_high"] = low, high
    return out
