"""Study statistics from counts: the paper's published figures, textbook values and values computed by hand (never
by calling the scipy/statsmodels function the code itself calls)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinedx.evaluation.metrics import metrics_from_counts
from spinedx.evaluation.study import (
    MCNEMAR_EXACT_BELOW,
    discordant_counts,
    error_analysis,
    feature_table,
    fisher_from_counts,
    holm,
    mcnemar_from_counts,
    mcnemar_table,
)

# --- the paper's published counts (Yeh et al. 2022, "Results") ----------------------------------


def test_paper_diffuse_signal_change_malignant_vs_benign() -> None:
    res = fisher_from_counts(44, 50, 31, 140)
    assert res.p_value <= 0.001
    assert res.odds_ratio > 1 and res.or_low > 1  # more frequent in malignant


def test_paper_r1_false_positives_vs_true_negatives() -> None:
    homogeneous = fisher_from_counts(6, 54, 42, 86)
    diffuse = fisher_from_counts(20, 54, 11, 86)
    band = fisher_from_counts(24, 54, 20, 86)
    assert homogeneous.p_value < 0.01 and homogeneous.odds_ratio < 1
    assert diffuse.p_value < 0.01 and diffuse.odds_ratio > 1
    # The paper reports p = 0.01; Fisher's exact test on these counts gives 0.0145.
    assert 0.005 < band.p_value < 0.03
    assert band.p_value == pytest.approx(0.01448, abs=1e-4)


def test_paper_model_performance() -> None:
    m = metrics_from_counts(tp=47, tn=128, fp=12, fn=3)
    assert m["sensitivity"] == pytest.approx(0.94)
    assert round(m["specificity"], 3) == 0.914
    assert round(m["accuracy"], 3) == 0.921
    assert m["sensitivity_low"] < 0.94 < m["sensitivity_high"]


# --- Fisher: textbook values and the defining equations, by hand ----------------------------------


def _conditional_pmf(a_total: int, b_total: int, m1: int, psi: float) -> dict[int, float]:
    """Fisher's noncentral hypergeometric distribution of the count in group A given the margins (by hand)."""
    support = range(max(0, m1 - b_total), min(a_total, m1) + 1)
    w = {x: math.comb(a_total, x) * math.comb(b_total, m1 - x) * psi ** x for x in support}
    total = sum(w.values())
    return {x: v / total for x, v in w.items()}


def _fisher_p_by_hand(a_n: int, a_total: int, b_n: int, b_total: int) -> float:
    """Two-sided p: the hypergeometric probabilities no larger than the observed table's (exact fractions)."""
    from fractions import Fraction

    m1 = a_n + b_n
    support = range(max(0, m1 - b_total), min(a_total, m1) + 1)
    prob = {x: Fraction(math.comb(a_total, x) * math.comb(b_total, m1 - x), math.comb(a_total + b_total, m1))
            for x in support}
    return float(sum(v for v in prob.values() if v <= prob[a_n]))


def test_fisher_tea_tasting_textbook() -> None:
    """Fisher's lady tasting tea (Fisher 1935; R's ``fisher.test`` example): 3 of 4 cups right each way. The
    hypergeometric probabilities of 0..4 are 1, 16, 36, 16, 1 (/70), so the two-sided p is 34/70 = 0.4857; R
    prints the conditional MLE odds ratio 6.408309."""
    res = fisher_from_counts(3, 4, 1, 4)
    assert res.p_value == pytest.approx(34 / 70, rel=1e-12)
    assert res.odds_ratio == pytest.approx(6.408309, rel=1e-5)
    assert res.or_low == pytest.approx(0.2117, abs=1e-4)  # R: 0.2117329


@pytest.mark.parametrize("a_n,a_total,b_n,b_total", [(3, 10, 7, 12), (15, 20, 2, 30), (1, 5, 4, 6), (9, 9, 3, 8),
                                                     (0, 12, 11, 28), (0, 50, 40, 140), (4, 4, 0, 6), (2, 7, 0, 3)])
def test_fisher_and_conditional_odds_ratio_solve_their_equations(a_n: int, a_total: int, b_n: int,
                                                                 b_total: int) -> None:
    """Hand-made tables, zero cells included, checked against the definitions written out here (no scipy): the
    p-value sums the hypergeometric probabilities no larger than the table's; the conditional MLE makes the
    expected count equal the observed one; the exact (Cornfield) bounds put alpha/2 in each tail; a zero cell
    gives an estimate of 0 or inf and a one-sided interval, with no correction added."""
    res = fisher_from_counts(a_n, a_total, b_n, b_total)
    assert res.p_value == pytest.approx(_fisher_p_by_hand(a_n, a_total, b_n, b_total), rel=1e-9)
    assert not hasattr(res, "haldane")
    m1 = a_n + b_n
    support = range(max(0, m1 - b_total), min(a_total, m1) + 1)
    if a_n in (support[0], support[-1]):  # a zero cell: unbounded on one side, no correction
        assert res.odds_ratio in (0.0, math.inf) and (res.or_low == 0.0 or res.or_high == math.inf)
    else:
        mean = sum(x * p for x, p in _conditional_pmf(a_total, b_total, m1, res.odds_ratio).items())
        assert mean == pytest.approx(a_n, rel=1e-6)
    if res.or_low > 0:
        upper_tail = sum(p for x, p in _conditional_pmf(a_total, b_total, m1, res.or_low).items() if x >= a_n)
        assert upper_tail == pytest.approx(0.025, rel=1e-4)
    if math.isfinite(res.or_high):
        lower_tail = sum(p for x, p in _conditional_pmf(a_total, b_total, m1, res.or_high).items() if x <= a_n)
        assert lower_tail == pytest.approx(0.025, rel=1e-4)


def test_issue_example_interval_agrees_with_the_fisher_test() -> None:
    """0/12 vs 11/28: p = 0.017; the exact conditional interval 0-0.72 excludes 1 (Haldane-Woolf gave 0.003-1.13)."""
    res = fisher_from_counts(0, 12, 11, 28)
    assert res.p_value == pytest.approx(0.01704, abs=1e-5)
    assert res.odds_ratio == 0.0 and res.or_low == 0.0
    assert res.or_high == pytest.approx(0.7209, abs=1e-4)
    assert res.or_high < 1 and res.p_value < 0.05


@pytest.mark.slow
def test_interval_excluding_one_always_comes_with_a_significant_fisher_test() -> None:
    """On every table of four small designs: interval excludes 1 => p < 0.05; the converse fails only in
    borderline tables (documented: 30 of 760, all with 0.025 < p < 0.05)."""
    n_tables, borderline = 0, []
    for a_total, b_total in ((12, 28), (10, 10), (5, 20), (8, 15)):
        for a_n in range(a_total + 1):
            for b_n in range(b_total + 1):
                if a_n + b_n in (0, a_total + b_total):
                    continue
                res = fisher_from_counts(a_n, a_total, b_n, b_total)
                n_tables += 1
                excludes = res.or_low > 1 or res.or_high < 1
                if excludes:
                    assert res.p_value < 0.05, (a_n, a_total, b_n, b_total)
                elif res.p_value < 0.05:
                    borderline.append(res.p_value)
    assert n_tables == 760 and len(borderline) == 30
    assert min(borderline) > 0.025


def test_undefined_odds_ratio_when_no_patient_has_the_feature() -> None:
    res = fisher_from_counts(0, 10, 0, 20)
    assert res.p_value == 1.0 and math.isnan(res.odds_ratio) and math.isnan(res.or_low)


# --- Holm-adjusted p-values within each table ------------------------------------------------------


def _holm_by_hand(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment written out: the k-th smallest of m p-values times (m - k), made monotone."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    adj = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


def test_holm_by_hand_and_skips_missing_tests() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    adj = holm(p)
    assert np.isnan(adj[2])
    # a family of 4, sorted 0.01, 0.03, 0.04, 0.5: 4 x 0.01; max(0.04, 3 x 0.03); max(0.09, 2 x 0.04); max(0.09, 0.5)
    assert adj[[0, 1, 3, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5], rel=1e-12)


def test_tables_carry_holm_columns_within_each_table() -> None:
    """Table 1, McNemar and the error analysis each adjust over their own rows (hand-made study, zero cells)."""
    import pandas as pd

    y = np.array([1] * 6 + [0] * 8)
    frame = pd.DataFrame({"patient_id": [f"p{i}" for i in range(14)], "y": y,
                          "feature_diffuse_signal_change": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                          "feature_homogeneous_marrow": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1],
                          "feature_fluid_sign": [1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1]})
    t1 = feature_table(frame)
    ref = _holm_by_hand(t1["p_value"].to_numpy())
    assert t1["p_holm"].to_numpy() == pytest.approx(ref)
    homog = t1.set_index("feature").loc["homogeneous_marrow"]
    assert homog["malignant_n"] == 0 and homog["odds_ratio"] == 0.0  # zero cell: exact, no correction
    calls = {"a": (y == 1).astype(float), "b": np.r_[np.ones(6), np.ones(8)], "c": np.r_[np.zeros(6), np.zeros(8)]}
    mc = mcnemar_table(y, calls)
    assert len(mc) == 6 and mc["p_holm"].to_numpy() == pytest.approx(_holm_by_hand(mc["p_value"].to_numpy()))
    ea = error_analysis(frame, calls["b"], "b")
    ok = ~np.isnan(ea["p_value"].to_numpy(dtype=float))
    assert ea["p_holm"].to_numpy()[ok] == pytest.approx(_holm_by_hand(ea["p_value"].to_numpy(dtype=float)[ok]))
    assert (ea["p_holm"].to_numpy()[ok] >= ea["p_value"].to_numpy()[ok]).all()


def test_fisher_empty_group_is_nan_and_bad_counts_raise() -> None:
    res = fisher_from_counts(0, 0, 3, 10)
    assert math.isnan(res.p_value) and math.isnan(res.odds_ratio)
    with pytest.raises(ValueError):
        fisher_from_counts(5, 4, 1, 2)


# --- McNemar ---------------------------------------------------------------------------------------


# Exact: p = 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c), capped at 1 (statistic min(b, c));
# chi-square with continuity correction: X2 = (|b - c| - 1)^2 / (b + c), p = erfc(sqrt(X2 / 2)) (1 degree of freedom).
@pytest.mark.parametrize("b,c,test,statistic,p_value", [
    (0, 0, "exact", 0, 1.0),
    (1, 7, "exact", 1, 18 / 256),  # 2 * (1 + 8) / 2^8 = 0.0703125
    (10, 3, "exact", 3, 756 / 8192),  # 2 * (1 + 13 + 78 + 286) / 2^13 = 0.09228515625
    (12, 12, "exact", 12, 1.0),  # 2 * (2^23 + C(24, 12) / 2) / 2^24 > 1
    (30, 12, "chi2", 289 / 42, 0.008711912962379598),  # 17^2 / 42 = 6.881
    (40, 45, "chi2", 16 / 85, 0.6643894431719992),
    # Agresti, An Introduction to Categorical Data Analysis, presidential approval (794, 150, 86, 570): without
    # the correction z^2 = 64^2 / 236 = 17.36; with it 63^2 / 236 = 16.82, p = 4.1e-5
    (150, 86, "chi2", 3969 / 236, 4.114562281345944e-05),
])
def test_mcnemar_by_hand(b: int, c: int, test: str, statistic: float, p_value: float) -> None:
    res = mcnemar_from_counts(b, c)
    assert res.test == test
    assert res.p_value == pytest.approx(p_value, rel=1e-12)
    assert res.statistic == pytest.approx(statistic, rel=1e-12)
    assert (res.b, res.c) == (b, c)


def test_mcnemar_switches_to_chi2_at_25_discordant_pairs() -> None:
    assert MCNEMAR_EXACT_BELOW == 25
    assert mcnemar_from_counts(12, 12).test == "exact"
    assert mcnemar_from_counts(13, 12).test == "chi2"


def test_discordant_counts_hand_made() -> None:
    # Five malignant patients; reader A calls 1,1,1,0,0 and reader B 1,0,0,1,nan.
    y = np.array([1, 1, 1, 1, 1])
    calls = {"a": np.array([1, 1, 1, 0, 0.0]), "b": np.array([1, 0, 0, 1, np.nan])}
    n, b, c = discordant_counts(calls["a"] == 1, np.where(np.isnan(calls["b"]), np.nan, calls["b"] == 1))
    assert (n, b, c) == (4, 2, 1)
    table = mcnemar_table(y, calls)
    mal = table[table["group"] == "malignant"].iloc[0]
    assert (mal["rater_a"], mal["rater_b"], mal["n"], mal["b"], mal["c"]) == ("a", "b", 4, 2, 1)
    assert mal["p_value"] == pytest.approx(1.0)
    ben = table[table["group"] == "benign"].iloc[0]
    assert (ben["n"], ben["b"], ben["c"]) == (0, 0, 0)


def test_mcnemar_table_benign_group_compares_specificity() -> None:
    # Benign patients: calling benign (0) is right. A is right on all 4, B wrong on 3 of them.
    y = np.zeros(4, dtype=int)
    table = mcnemar_table(y, {"a": np.zeros(4), "b": np.array([1.0, 1.0, 1.0, 0.0])})
    ben = table[table["group"] == "benign"].iloc[0]
    assert (ben["n"], ben["b"], ben["c"], ben["test"]) == (4, 3, 0, "exact")
    assert ben["p_value"] == pytest.approx(2 / 8)  # exact: 2 * C(3, 0) / 2^3
