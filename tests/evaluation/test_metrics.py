"""Metrics with intervals: Wilson against published values, the AUC interval against scikit-learn, small imbalanced
data, the ROC band, the patient bootstrap against a brute-force loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spinedx.evaluation.metrics import (
    auc_with_ci,
    classification_report,
    roc_band,
    stratified_resamples,
    wilson_interval,
)


def _scores(n_pos: int, n_neg: int, shift: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, rng.normal(size=n_pos + n_neg) + shift * y


def test_five_positives_in_fifty_give_a_finite_interval() -> None:
    """Issue 8: the unstratified bootstrap gave NaN here (resamples without a positive)."""
    y, s = _scores(5, 45)
    auc, low, high = auc_with_ci(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert math.isfinite(low) and math.isfinite(high) and 0 <= low <= auc <= high <= 1


@pytest.mark.parametrize("n_pos, n_neg, seed", [(30, 70, 1), (8, 120, 2), (50, 140, 3)])
def test_point_estimate_is_sklearn_and_interval_brackets_it(n_pos: int, n_neg: int, seed: int) -> None:
    y, s = _scores(n_pos, n_neg, seed=seed)
    s = np.round(s, 1)  # ties
    auc, low, high = auc_with_ci(y, s, n_resamples=500, seed=seed)
    assert auc == roc_auc_score(y, s)
    assert low < auc < high
    # The interval shrinks with more patients (the same effect on 4x the data).
    y4, s4 = np.tile(y, 4), np.tile(s, 4)
    _, low4, high4 = auc_with_ci(y4, s4, n_resamples=500, seed=seed)
    assert high4 - low4 < high - low


def test_degenerate_cases() -> None:
    assert all(math.isnan(v) for v in auc_with_ci([1, 1, 1], [0.2, 0.5, 0.9]))  # one class: no AUC
    assert all(math.isnan(v) for v in auc_with_ci([0, 0], [0.2, 0.5]))
    assert auc_with_ci([1, 0], [0.9, 0.1]) == (1.0, 1.0, 1.0)  # one patient per class: nothing to resample
    auc, low, high = auc_with_ci([1, 0, 0, 0, 0], [0.5, 0.1, 0.6, 0.2, 0.3])  # one positive, held fixed
    assert auc == roc_auc_score([1, 0, 0, 0, 0], [0.5, 0.1, 0.6, 0.2, 0.3]) and 0 <= low <= auc <= high <= 1
    assert auc_with_ci([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)  # all tied
    y, s = _scores(10, 10, shift=10.0)  # perfectly separated
    assert auc_with_ci(y, s, n_resamples=200) == (1.0, 1.0, 1.0)


def test_resamples_keep_both_classes_and_their_sizes() -> None:
    y = np.r_[np.ones(3, int), np.zeros(40, int)]
    idx = stratified_resamples(y, 300, seed=4)
    assert idx.shape == (300, 43)
    assert (y[idx].sum(axis=1) == 3).all()


def test_roc_band_is_consistent_with_the_auc_interval() -> None:
    """The band the report draws comes from the same stratified resampling: its edges enclose the AUC interval."""
    for n_pos, n_neg, seed in ((5, 45, 0), (20, 60, 1)):
        y, s = _scores(n_pos, n_neg, seed=seed)
        auc, low, high = auc_with_ci(y, s, n_resamples=1000, seed=seed)
        grid, band_low, band_high = roc_band(y, s, n_resamples=1000, seed=seed)
        assert np.isfinite(band_low).all() and np.isfinite(band_high).all()
        assert (band_low <= band_high).all()
        area_low, area_high = np.trapezoid(band_low, grid), np.trapezoid(band_high, grid)
        # pointwise bands are wider than the AUC interval: the area under each edge lies outside it
        assert area_low <= low + 0.02 and area_high >= high - 0.02


def test_classification_report_proportions_are_wilson() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.2, 0.1, 0.7, 0.3, 0.4, 0.8])
    rep = classification_report(y, p, n_resamples=200)
    assert (rep["tp"], rep["fn"], rep["tn"], rep["fp"]) == (3, 1, 3, 1)
    # Wilson by hand, p = 3/4, n = 4, z = 1.959963984540054 (z^2 = 3.841458820694124):
    # (p + z^2/2n) / (1 + z^2/n) -/+ z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2) = 0.627528 -/+ 0.326886
    assert rep["sensitivity"] == 0.75 and rep["sensitivity_low"] == pytest.approx(0.30064184258240184, rel=1e-12)
    assert rep["sensitivity_high"] == pytest.approx(0.9544127391902995, rel=1e-12)
    assert rep["auc"] == roc_auc_score(y, p)


@pytest.mark.parametrize(("count", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_1998(count: int, n: int, low: float, high: float) -> None:
    """Newcombe, Stat Med 1998;17:857-872, Table I, method 3 (score interval without continuity correction)."""
    est, lo, hi = wilson_interval(count, n)
    assert est == count / n
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_patient_bootstrap_with_one_slice_per_patient_is_the_stratified_auc_bootstrap() -> None:
    from spinedx.evaluation.metrics import patient_bootstrap_report

    y, s = _scores(20, 40, seed=5)
    s = np.round(s, 1)
    pid = np.array([f"P{i:03d}" for i in range(len(y))])  # sorted like the scores: same resamples
    rep = patient_bootstrap_report(y, s, pid, n_resamples=1000, seed=3)
    assert (rep["auc"], rep["auc_low"], rep["auc_high"]) == pytest.approx(auc_with_ci(y, s, n_resamples=1000, seed=3))
    assert rep["n_patients"] == 60 and rep["interval"].startswith("patient bootstrap")


def test_patient_bootstrap_does_not_shrink_with_repeated_slices() -> None:
    """Three identical slices per patient carry no more information than one: the patient bootstrap keeps the
    width, while Wilson/slice-bootstrap intervals (slices as independent) shrink by about sqrt(3)."""
    from spinedx.evaluation.metrics import patient_bootstrap_report

    y, s = _scores(20, 40, seed=6)
    pid = np.array([f"P{i:03d}" for i in range(len(y))])
    one = patient_bootstrap_report(y, s, pid, n_resamples=1000, seed=1)
    y3, s3, pid3 = np.repeat(y, 3), np.repeat(s, 3), np.repeat(pid, 3)
    three = patient_bootstrap_report(y3, s3, pid3, n_resamples=1000, seed=1)
    naive = classification_report(y3, s3, n_resamples=1000, seed=1)
    for name in ("auc", "sensitivity", "specificity", "accuracy"):
        assert three[name] == pytest.approx(one[name])
        assert three[f"{name}_low"] == pytest.approx(one[f"{name}_low"])
        assert three[f"{name}_high"] == pytest.approx(one[f"{name}_high"])
        assert naive[f"{name}_high"] - naive[f"{name}_low"] < 0.8 * (three[f"{name}_high"] - three[f"{name}_low"])


def test_patient_bootstrap_counts_by_hand() -> None:
    """Point estimates are the slice-level counts; one patient per class leaves no interval (dropped)."""
    from spinedx.evaluation.metrics import patient_bootstrap_report

    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.3, 0.6, 0.2, 0.7])
    pid = np.array(["a", "a", "b", "c", "c"])
    rep = patient_bootstrap_report(y, p, pid, n_resamples=200)
    assert (rep["tp"], rep["fn"], rep["tn"], rep["fp"]) == (2, 1, 1, 1)
    assert rep["auc"] == roc_auc_score(y, p)
    assert math.isnan(rep["auc_low"]) and math.isnan(rep["sensitivity_high"])  # one benign patient
    with pytest.raises(ValueError, match="both labels"):
        patient_bootstrap_report(np.array([1, 0]), np.array([0.5, 0.5]), np.array(["a", "a"]))


def _patient_bootstrap_by_hand(y: np.ndarray, p: np.ndarray, pid: np.ndarray, n_resamples: int, seed: int,
                               threshold: float = 0.5) -> dict[str, tuple[float, float]]:
    """The obvious loop: draw malignant and benign patients with replacement (the draws scipy.stats.bootstrap makes
    from ``default_rng(seed)``: the malignant patients' indices for every resample, then the benign ones', patients
    in sorted order), keep every slice of each drawn patient, recompute the slice metrics, take percentiles."""
    patients = sorted(set(pid))
    label = {q: int(y[pid == q][0]) for q in patients}
    pos = [q for q in patients if label[q] == 1]
    neg = [q for q in patients if label[q] == 0]
    rng = np.random.default_rng(seed)
    draw_pos = rng.integers(0, len(pos), (n_resamples, len(pos)))
    draw_neg = rng.integers(0, len(neg), (n_resamples, len(neg)))
    values: dict[str, list[float]] = {k: [] for k in ("auc", "sensitivity", "specificity", "accuracy", "ppv", "npv")}
    for b in range(n_resamples):
        chosen = [pos[i] for i in draw_pos[b]] + [neg[i] for i in draw_neg[b]]
        yy = np.concatenate([y[pid == q] for q in chosen])
        pp = np.concatenate([p[pid == q] for q in chosen])
        call = pp >= threshold
        tp, fn = int((call & (yy == 1)).sum()), int((~call & (yy == 1)).sum())
        tn, fp = int((~call & (yy == 0)).sum()), int((call & (yy == 0)).sum())
        values["auc"].append(roc_auc_score(yy, pp))
        values["sensitivity"].append(tp / (tp + fn))
        values["specificity"].append(tn / (tn + fp))
        values["accuracy"].append((tp + tn) / len(yy))
        values["ppv"].append(tp / (tp + fp) if tp + fp else math.nan)
        values["npv"].append(tn / (tn + fn) if tn + fn else math.nan)
    return {k: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) for k, v in values.items()}


def test_patient_bootstrap_equals_a_brute_force_loop_with_unequal_slice_counts() -> None:
    """Patients with 1 to 5 slices (scores spread within a patient, ties across patients): every interval equals the
    one of the loop above, which resamples patients by class and keeps all their slices."""
    from spinedx.evaluation.metrics import patient_bootstrap_report

    rng = np.random.default_rng(12)
    n_slices = [1, 5, 2, 4, 3, 1, 2, 5, 3, 1, 4, 2, 2, 3]  # 6 malignant patients, 8 benign
    labels = [1] * 6 + [0] * 8
    pid = np.concatenate([[f"P{i:02d}"] * k for i, k in enumerate(n_slices)])
    y = np.concatenate([[lab] * k for lab, k in zip(labels, n_slices, strict=True)])
    p = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 1)  # overlapping classes; rounded: ties
    rep = patient_bootstrap_report(y, p, pid, n_resamples=300, seed=7)
    ref = _patient_bootstrap_by_hand(y, p, pid, n_resamples=300, seed=7)
    assert rep["n_patients"] == 14
    for name, (low, high) in ref.items():
        assert math.isfinite(low) and math.isfinite(high) and low < high, name
        assert rep[f"{name}_low"] == pytest.approx(low, abs=1e-12), name
        assert rep[f"{name}_high"] == pytest.approx(high, abs=1e-12), name
