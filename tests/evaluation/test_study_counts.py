"""Study statistics from counts: the paper's published figures and checks against scipy/statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import fisher_exact
from statsmodels.stats.contingency_tables import Table2x2, mcnemar

from spinedx.evaluation.metrics import metrics_from_counts
from spinedx.evaluation.study import (
    MCNEMAR_EXACT_BELOW,
    discordant_counts,
    fisher_from_counts,
    mcnemar_from_counts,
    mcnemar_table,
)

# --- the paper's published counts (Yeh et al. 2022, "Results") ----------------------------------


def test_paper_diffuse_signal_change_malignant_vs_benign() -> None:
    res = fisher_from_counts(44, 50, 31, 140)
    assert res.p_value <= 0.001
    assert res.odds_ratio > 1 and res.or_low > 1  # more frequent in malignant
    assert not res.haldane


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


@pytest.mark.parametrize("a_n,a_total,b_n,b_total", [(3, 10, 7, 12), (15, 20, 2, 30), (1, 5, 4, 6), (9, 9, 3, 8)])
def test_fisher_matches_scipy_and_statsmodels(a_n: int, a_total: int, b_n: int, b_total: int) -> None:
    res = fisher_from_counts(a_n, a_total, b_n, b_total)
    table = np.array([[a_n, a_total - a_n], [b_n, b_total - b_n]])
    assert res.p_value == pytest.approx(fisher_exact(table).pvalue)
    zero = bool((table == 0).any())
    assert res.haldane == zero
    ref = Table2x2(table + 0.5 if zero else table.astype(float), shift_zeros=False)
    assert res.odds_ratio == pytest.approx(ref.oddsratio)
    assert (res.or_low, res.or_high) == pytest.approx(ref.oddsratio_confint())
    if not zero:
        assert res.odds_ratio == pytest.approx((a_n * (b_total - b_n)) / ((a_total - a_n) * b_n))


def test_fisher_zero_cell_uses_haldane_for_odds_ratio_only() -> None:
    # "Homogeneous marrow signal ... 0% malignant": a zero cell makes the raw odds ratio 0.
    res = fisher_from_counts(0, 50, 40, 140)
    assert res.haldane
    assert res.odds_ratio == pytest.approx((0.5 * 100.5) / (50.5 * 40.5))
    assert 0 < res.or_low < res.odds_ratio < res.or_high < 1
    assert res.p_value == pytest.approx(fisher_exact([[0, 50], [40, 100]]).pvalue)


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
