"""Statistical tests of the study from counts: Fisher's exact test with odds ratios, McNemar's test.

Yeh et al. 2022, "Statistical analysis": each binary imaging feature is compared between malignant and
benign fractures with Fisher's exact test, and the readers' and the model's sensitivity and specificity with
McNemar's test. Every test works from counts alone, so published tables can be checked without patient data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Significance level (and 1 - confidence level of every interval).
ALPHA = 0.05
#: Below this many discordant pairs McNemar uses the exact binomial test: the chi-square
#: approximation of McNemar's statistic is poor with few discordant pairs (the usual rule of
#: thumb, b + c < 25, e.g. Rosner, Fundamentals of Biostatistics; statsmodels' ``exact`` option).
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class FisherResult:
    """Fisher's exact test and the conditional odds ratio of a feature in group A vs group B.

    ``odds_ratio`` is the conditional maximum-likelihood estimate of odds(feature | A) / odds(feature | B) and
    ``or_low``/``or_high`` its exact conditional interval, both from the same noncentral hypergeometric
    distribution as Fisher's test; with a zero cell the estimate is 0 or infinite and the interval is
    one-sided (``0`` or ``inf`` at one end), as it should be: no correction is added.
    """

    a_n: int
    a_total: int
    b_n: int
    b_total: int
    p_value: float
    odds_ratio: float
    or_low: float
    or_high: float


def fisher_from_counts(a_n: int, a_total: int, b_n: int, b_total: int, alpha: float = ALPHA) -> FisherResult:
    """Two-sided Fisher exact test of ``a_n/a_total`` vs ``b_n/b_total``, with the exact conditional odds ratio.

    The paper compares each binary feature between malignant and benign fractures with Fisher's exact test
    (Yeh et al. 2022, "Statistical analysis"): :func:`scipy.stats.fisher_exact`, two-sided. The odds ratio is
    the conditional maximum-likelihood estimate and its interval the exact conditional (Cornfield) interval of
    :func:`scipy.stats.contingency.odds_ratio` (``kind="conditional"``), which conditions on the margins as the
    test does. So a zero cell needs no correction (the earlier Haldane +0.5 gave intervals that contradicted the
    test: 0/12 vs 11/28 has p = 0.017 and interval 0-0.72, where Haldane-Woolf gave 0.003-1.13). The interval
    inverts two one-sided tests at ``alpha/2`` each, while the two-sided p doubles by minimum likelihood; an
    interval that excludes 1 always comes with p < ``alpha``, but in borderline tables (p 0.026-0.05) p can
    be below ``alpha`` while the interval just includes 1 (30 of 760 tables with 12 vs 28, 10 vs 10, 5 vs 20 and
    8 vs 15 patients; tested).

    Args:
        a_n: Patients with the feature in group A (e.g. malignant).
        a_total: Patients in group A.
        b_n: Patients with the feature in group B (e.g. benign).
        b_total: Patients in group B.
        alpha: 1 - confidence level of the odds-ratio interval.

    Returns:
        The counts, p-value and odds ratio with interval; NaNs when a group is empty, and NaN odds ratio and
        interval when no patient (or every patient) has the feature (the ratio is not defined).
    """
    from scipy.stats import fisher_exact
    from scipy.stats.contingency import odds_ratio

    a_n, a_total, b_n, b_total = int(a_n), int(a_total), int(b_n), int(b_total)
    if not (0 <= a_n <= a_total and 0 <= b_n <= b_total):
        raise ValueError(f"counts must satisfy 0 <= n <= total: {a_n}/{a_total}, {b_n}/{b_total}")
    nan = math.nan
    if a_total == 0 or b_total == 0:
        return FisherResult(a_n, a_total, b_n, b_total, nan, nan, nan, nan)
    table = np.array([[a_n, a_total - a_n], [b_n, b_total - b_n]], dtype=np.int64)
    p_value = min(float(fisher_exact(table, alternative="two-sided").pvalue), 1.0)
    if table.sum(axis=0).min() == 0:  # a column margin of 0: the conditional distribution is a single point
        return FisherResult(a_n, a_total, b_n, b_total, p_value, nan, nan, nan)
    res = odds_ratio(table, kind="conditional")
    ci = res.confidence_interval(confidence_level=1 - alpha)
    return FisherResult(a_n, a_total, b_n, b_total, p_value, float(res.statistic), float(ci.low), float(ci.high))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (:func:`statsmodels.stats.multitest.multipletests`, ``method="holm"``).

    Missing p-values (NaN: a test that could not be done) are left out of the family and stay NaN; the
    family is the rest of ``p_values`` (one table of the study).
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


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
