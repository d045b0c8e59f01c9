"""The baseline's fitting on given folds, and DeLong's paired AUC test against an explicit derivation and against
pROC's published results on its aSAH data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spinedx.baselines import cross_validate, delong_test, fit_predict
from spinedx.baselines.compare import auc_variance
from spinedx.evaluation.metrics import _rank_auc


def _data(n_patients: int = 60, per: int = 3, signal: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    yp = (np.arange(n_patients) < n_patients // 3).astype(int)
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], per)
    y = np.repeat(yp, per)
    x = rng.normal(size=(len(y), 5))
    x[:, 0] += signal * y
    return x, y, pid


def test_fit_predict_learns_and_c_ignores_test_data() -> None:
    x, y, pid = _data()
    train = np.isin(pid, np.unique(pid)[::2], invert=True)
    p, c = fit_predict(x[train], y[train], pid[train], x[~train])
    assert roc_auc_score(y[~train], p) > 0.8
    rng = np.random.default_rng(5)
    _, c2 = fit_predict(x[train], y[train], pid[train], rng.normal(size=(7, 5)))
    assert c2 == c  # C is chosen on the training patients only


def test_cross_validate_uses_given_folds_and_shuffled_labels_give_chance() -> None:
    x, y, pid = _data(signal=0.0, seed=3)
    pats = np.unique(pid)
    fold_of = {p: i % 5 for i, p in enumerate(pats)}
    oof = cross_validate("radiomics", x, y, pid, fold_of)
    assert np.isfinite(oof.probability).all()
    assert [fold_of[p] for p in pid] == oof.fold.tolist()
    assert set(oof.chosen_c) == set(range(5))
    assert 0.3 < roc_auc_score(y, oof.probability) < 0.7


def _delong_slow(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Textbook DeLong: psi kernel over all pairs, placement values, covariance of the two AUCs."""
    pos, neg = y == 1, y == 0
    comps = []
    for s in (a, b):
        d = s[pos][:, None] - s[neg][None, :]
        psi = (d > 0) + 0.5 * (d == 0)
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = pos.sum(), neg.sum()
    v10 = np.vstack([c[1] for c in comps])
    v01 = np.vstack([c[2] for c in comps])
    cov = np.cov(v10) / m + np.cov(v01) / n
    return comps[0][0] - comps[1][0], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def test_delong_equals_explicit_derivation_with_ties() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(80) < 0.3).astype(int)
    a = np.round(y * 0.8 + rng.normal(size=80), 1)  # rounding creates ties
    b = np.round(y * 0.3 + rng.normal(size=80), 1)
    res = delong_test(y, a, b)
    diff, var = _delong_slow(y, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert res["difference"] == pytest.approx(diff)
    assert res["se"] ** 2 == pytest.approx(var)
    assert 0 <= res["p_value"] <= 1 and res["difference_low"] < res["difference"] < res["difference_high"]


def _asah() -> dict[str, np.ndarray]:
    """pROC's aSAH data (113 patients; tests/baselines/data/SOURCE.md): outcome Poor = 1, and three markers."""
    with open(Path(__file__).parent / "data" / "aSAH.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {"y": np.array([r["outcome"] == "Poor" for r in rows], dtype=int)}
    out.update({k: np.array([float(r[k]) for r in rows]) for k in ("wfns", "s100b", "ndka")})
    return out


def test_delong_reproduces_proc_roc_test_on_asah() -> None:
    """pROC's ``roc.test(roc(outcome, s100b), roc(outcome, wfns))`` (its documented example) prints Z = -2.209,
    p-value = 0.02718, AUCs 0.7314 and 0.8237; its test suite has the full digits (Z = 2.20898359144091,
    p = 0.0271757822291882, CI 0.0104061769564846 to 0.174214419249478 for wfns - s100b)."""
    d = _asah()
    assert len(d["y"]) == 113 and d["y"].sum() == 41
    res = delong_test(d["y"], d["s100b"], d["wfns"])
    assert round(res["auc_a"], 4) == 0.7314 and round(res["auc_b"], 4) == 0.8237
    assert round(res["z"], 3) == -2.209 and round(res["p_value"], 5) == 0.02718
    assert res["z"] == pytest.approx(-2.20898359144091, abs=1e-9)
    assert res["p_value"] == pytest.approx(0.0271757822291882, abs=1e-9)
    assert (res["difference_low"], res["difference_high"]) == pytest.approx((-0.174214419249478, -0.0104061769564846),
                                                                          abs=1e-9)
    # the other two pairs of pROC's tests
    for a, b, z, p in (("wfns", "ndka", 2.79777591868904, 0.00514557970691098),
                       ("ndka", "s100b", -1.39077002573558, 0.164295175223054)):
        res = delong_test(d["y"], d[a], d[b])
        assert (res["z"], res["p_value"]) == pytest.approx((z, p), abs=1e-9), (a, b)


def test_delong_se_close_to_paired_patient_bootstrap() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(150) < 0.3).astype(int)
    a = y * 1.2 + rng.normal(size=150)
    b = a * 0.5 + y * 0.2 + rng.normal(size=150)  # correlated with a
    res = delong_test(y, a, b)
    idx = rng.integers(0, 150, size=(2000, 150))  # paired bootstrap over cases, vectorised rank AUCs
    auc_a, auc_b = _rank_auc(y[idx], a[idx]), _rank_auc(y[idx], b[idx])
    assert res["se"] == pytest.approx(np.nanstd(auc_a - auc_b), rel=0.15)
    assert auc_variance(y, a) == pytest.approx(np.nanvar(auc_a), rel=0.2)


def test_delong_degenerate_cases() -> None:
    y = np.array([0, 0, 1, 1])
    same = delong_test(y, np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert same["difference"] == 0 and same["p_value"] == 1.0
    one_class = delong_test(np.zeros(4), np.arange(4.0), np.arange(4.0))
    assert np.isnan(one_class["auc_a"]) and np.isnan(one_class["p_value"])
