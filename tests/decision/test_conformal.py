"""Conformal refer: Mondrian split-conformal thresholds (crepes), their sets, records and coverage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from crepes import ConformalClassifier

from spinedx.decision.conformal import CLASSES, ConformalThresholds, check_alpha, fit_conformal, nonconformity
from spinedx.errors import SpinedxError
from spinedx.evaluation.decisioncv import conformal_summary


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.2, n) + 2.0 * (2 * y - 1))))
    return p, y


def _crepes_sets(p_cal: np.ndarray, y: np.ndarray, p_test: np.ndarray, alpha: float) -> np.ndarray:
    """crepes' own class-conditional prediction sets (one Mondrian category per class), unsmoothed."""
    cc = ConformalClassifier().fit(nonconformity(p_cal)[np.arange(len(y)), y], bins=y)
    scores = nonconformity(p_test)
    return np.stack([cc.predict_set(scores[:, k], bins=np.full(len(p_test), k), confidence=1 - alpha,
                                    smoothing=False) for k in range(2)], axis=1)


@pytest.mark.parametrize("alpha", [0.02, 0.05, 0.1, 0.2, 0.35])
def test_thresholds_give_crepes_sets(alpha: float) -> None:
    p, y = _data(150, 1)
    thr = fit_conformal(p, y, alpha)
    test = np.concatenate([np.random.default_rng(2).random(2000), p, [0.0, 1.0, 0.5]])  # ties with calibration too
    mine = np.array([[c in s for c in CLASSES] for s in thr.predict_set(test)], dtype=int)
    assert np.array_equal(mine, _crepes_sets(p, y, test, alpha))


def test_class_conditional_coverage_holds_on_exchangeable_data() -> None:
    # split-conformal guarantee per class: coverage >= 1 - alpha on average over calibration draws
    cov = {c: [] for c in CLASSES}
    for rep in range(150):
        p, y = _data(120, 100 + rep)
        pt, yt = _data(400, 10_000 + rep)
        sets = fit_conformal(p, y, 0.1).predict_set(pt)
        for k, c in enumerate(CLASSES):
            cov[c].append(np.mean([c in s for s, t in zip(sets, yt, strict=True) if t == k]))
    for c in CLASSES:
        assert 0.895 <= np.mean(cov[c]) <= 0.96, (c, np.mean(cov[c]))


def test_too_few_of_a_class_keeps_that_label_always() -> None:
    # 5 malignant calibration patients: p-value >= 1/6 > 0.1 for any score, so malignant is always in the set
    y = np.array([1] * 5 + [0] * 60)
    p = np.concatenate([np.linspace(0.6, 0.9, 5), np.linspace(0.01, 0.5, 60)])
    thr = fit_conformal(p, y, 0.1)
    assert thr.thresholds["malignant"] == 1.0
    assert all("malignant" in s for s in thr.predict_set(np.array([0.0, 0.2, 0.99])))
    assert thr.thresholds["benign"] < 1.0


def test_set_semantics() -> None:
    narrow = ConformalThresholds(0.1, {"benign": 0.3, "malignant": 0.3})
    assert narrow.predict_set(np.array([0.1, 0.9, 0.5, 0.3, 0.75])) == [
        ("benign",), ("malignant",), (), ("benign",), ("malignant",)]  # 1 - p(c) <= q_c is inclusive
    wide = ConformalThresholds(0.1, {"benign": 0.6, "malignant": 0.6})
    assert wide.predict_set(np.array([0.5, 0.1])) == [("benign", "malignant"), ("benign",)]


def test_record_round_trip_and_refusals() -> None:
    p, y = _data(80, 3)
    thr = fit_conformal(p, y, 0.1)
    doc = json.loads(json.dumps({"format": 1, **thr.to_dict()}))
    back = ConformalThresholds.from_dict(doc)
    assert back == thr
    assert back.predict_set(p) == thr.predict_set(p)
    for bad in ({"format": 1, "alpha": 0.5, "thresholds": thr.thresholds},
                {"format": 1, "alpha": 0.1, "thresholds": {"benign": 0.2}},
                {"format": 1, "alpha": 0.1, "thresholds": {"benign": 0.2, "malignant": 1.5}},
                {"format": 1, "alpha": 0.1, "thresholds": thr.thresholds, "extra": 1},
                ["not", "a", "record"]):
        with pytest.raises(SpinedxError) as exc:
            ConformalThresholds.from_dict(bad, where="run/conformal.json")  # type: ignore[arg-type]
        assert exc.value.where == "run/conformal.json"


@pytest.mark.parametrize("alpha", [0, 0.5, 0.7, -0.1, float("nan"), True, "0.1"])
def test_alpha_outside_open_interval_is_refused(alpha: object) -> None:
    with pytest.raises(SpinedxError, match=r"alpha must be a number in \(0, 0.5\)"):
        check_alpha(alpha)
    if isinstance(alpha, float) and not np.isnan(alpha):
        with pytest.raises(SpinedxError):
            fit_conformal(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1]), alpha)


def test_a_class_without_calibration_patients_is_refused() -> None:
    with pytest.raises(SpinedxError, match="no malignant patient"):
        fit_conformal(np.array([0.1, 0.2]), np.array([0, 0]), 0.1)


def test_summary_counts_coverage_referral_and_accepted_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    sets = [("benign",), ("malignant",), ("benign", "malignant"), ("malignant",), (), ("benign",)]
    s = conformal_summary(y, sets)
    assert s["coverage"]["benign"]["count"] == 2 and s["coverage"]["benign"]["n"] == 3  # benign, both
    assert s["coverage"]["malignant"]["count"] == 1 and s["coverage"]["malignant"]["n"] == 3
    assert s["referral_rate"]["count"] == 2 and s["n_ambiguous"] == 1 and s["n_empty"] == 1
    acc = s["accepted"]
    assert (acc["n"], acc["tp"], acc["tn"], acc["fp"], acc["fn"]) == (4, 1, 1, 1, 1)
    assert acc["accuracy"] == pytest.approx(0.5)
    assert s["referral_rate"]["low"] < 2 / 6 < s["referral_rate"]["high"]  # a Wilson interval around it
