"""Study statistics from counts: the paper's published figures and checks against scipy/statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import fisher_exact
from scipy.stats.contingency import odds_ratio
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

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


# --- Fisher against scipy and statsmodels --------------------------------------------------------


@pytest.mark.parametrize("a_n,a_total,b_n,b_total", [(3, 10, 7, 12), (15, 20, 2, 30), (1, 5, 4, 6), (9, 9, 3, 8),
                                                     (0, 12, 11, 28), (0, 50, 40, 140), (4, 4, 0, 6), (2, 7, 0, 3)])
def test_fisher_and_conditional_odds_ratio_match_scipy(a_n: int, a_total: int, b_n: int, b_total: int) -> None:
    """Hand-made tables, zero cells included: p from fisher_exact, odds ratio and interval from the exact
    conditional odds_ratio (no Haldane correction)."""
    res = fisher_from_counts(a_n, a_total, b_n, b_total)
    table = np.array([[a_n, a_total - a_n], [b_n, b_total - b_n]])
    assert res.p_value == pytest.approx(fisher_exact(table).pvalue)
    ref = odds_ratio(table, kind="conditional")
    ci = ref.confidence_interval(confidence_level=0.95)
    assert res.odds_ratio == pytest.approx(ref.statistic)
    assert (res.or_low, res.or_high) == pytest.approx((ci.low, ci.high))
    assert not hasattr(res, "haldane")
    if (table[:, 0] == 0).any() or (table[:, 1] == 0).any():  # a zero cell: unbounded on one side, no correction
        assert res.odds_ratio in (0.0, math.inf) and (res.or_low == 0.0 or res.or_high == math.inf)


def test_issue_example_interval_agrees_with_the_fisher_test() -> None:
    """0/12 vs 11/28: p = 0.017; the exact conditional interval 0-0.72 excludes 1 (Haldane-Woolf gave 0.003-1.13)."""
    res = fisher_from_counts(0, 12, 11, 28)
    assert res.p_value == pytest.approx(0.01704, abs=1e-5)
    assert res.odds_ratio == 0.0 and res.or_low == 0.0
    assert res.or_high == pytest.approx(0.7209, abs=1e-4)
    assert res.or_high < 1 and res.p_value < 0.05


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


def test_holm_matches_statsmodels_and_skips_missing_tests() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    adj = holm(p)
    ref = multipletests([0.01, 0.04, 0.03, 0.5], method="holm")[1]
    assert np.isnan(adj[2])
    assert adj[[0, 1, 3, 4]] == pytest.approx(ref)
    assert adj[0] == pytest.approx(0.04) and adj[1] == pytest.approx(0.09)  # 4 x 0.01; max(3 x 0.03, 2 x 0.04)


def test_tables_carry_holm_columns_within_each_table() -> None:
    """Table 1, McNemar and the error analysis each adjust over their own rows (hand-made study, zero cells)."""
    import pandas as pd

    y = np.array([1] * 6 + [0] * 8)
    frame = pd.DataFrame({"patient_id": [f"p{i}" for i in range(14)], "y": y,
                          "feature_diffuse_signal_change": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                          "feature_homogeneous_marrow": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1],
                          "feature_fluid_sign": [1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1]})
    t1 = feature_table(frame)
    ref = multipletests(t1["p_value"], method="holm")[1]
    assert t1["p_holm"].to_numpy() == pytest.approx(ref)
    homog = t1.set_index("feature").loc["homogeneous_marrow"]
    assert homog["malignant_n"] == 0 and homog["odds_ratio"] == 0.0  # zero cell: exact, no correction
    calls = {"a": (y == 1).astype(float), "b": np.r_[np.ones(6), np.ones(8)], "c": np.r_[np.zeros(6), np.zeros(8)]}
    mc = mcnemar_table(y, calls)
    assert len(mc) == 6 and mc["p_holm"].to_numpy() == pytest.approx(multipletests(mc["p_value"], method="holm")[1])
    ea = error_analysis(frame, calls["b"], "b")
    ok = ~np.isnan(ea["p_value"].to_numpy(dtype=float))
    assert ea["p_holm"].to_numpy()[ok] == pytest.approx(multipletests(ea["p_value"][ok], method="holm")[1])
    assert (ea["p_holm"].to_numpy()[ok] >= ea["p_value"].to_numpy()[ok]).all()


def test_fisher_empty_group_is_nan_and_bad_counts_raise() -> None:
    res = fisher_from_counts(0, 0, 3, 10)
    assert math.isnan(res.p_value) and math.isnan(res.odds_ratio)
    with pytest.raises(ValueError):
        fisher_from_counts(5, 4, 1, 2)


# --- McNemar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("b,c", [(0, 0), (1, 7), (10, 3), (12, 12), (30, 12), (40, 45)])
def test_mcnemar_matches_statsmodels(b: int, c: int) -> None:
    res = mcnemar_from_counts(b, c)
    exact = b + c < MCNEMAR_EXACT_BELOW
    ref = mcnemar([[20, b], [c, 30]], exact=exact, correction=True)
    assert res.test == ("exact" if exact else "chi2")
    assert res.p_value == pytest.approx(min(float(ref.pvalue), 1.0))
    assert res.statistic == pytest.approx(float(ref.statistic))
    assert (res.b, res.c) == (b, c)


def test_mcnemar_switches_to_chi2_at_25_discordant_pairs() -> None:
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
    assert ben["p_value"] == pytest.approx(mcnemar([[1, 3], [0, 0]], exact=True).pvalue)
