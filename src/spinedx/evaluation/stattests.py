"""Statistical tests of the study from counts: Fisher's exact test with odds ratios, McNemar's test.

Yeh et al. 2022, "Statistical analysis": each binary imaging feature is compared between malignant and
benign fractures with Fisher's exact test, and the readers' and the model's sensitivity and specificity with
McNemar's test. Every test works from counts alone, so published tables can be checked without patient data.
"""

from __future__ import annotations

import math
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
    """Fisher's exact test and odds ratio of a feature in group A vs group B.

    ``odds_ratio`` is odds(feature | A) / odds(feature | B). ``haldane`` is True when a cell was
    zero and 0.5 was added to every cell for the odds ratio and its interval only (the p-value
    always uses the raw counts).
    """

    a_n: int
    a_total: int
    b_n: int
    b_total: int
    p_value: float
    odds_ratio: float
    or_low: float
    or_high: float
    haldane: bool


def fisher_from_counts(a_n: int, a_total: int, b_n: int, b_total: int, alpha: float = ALPHA) -> FisherResult:
    """Two-sided Fisher exact test of ``a_n/a_total`` vs ``b_n/b_total``, with the odds ratio.

    The paper compares each binary feature between malignant and benign fractures with Fisher's
    exact test (Yeh et al. 2022, "Statistical analysis"). The odds ratio and its Woolf (log)
    interval come from :class:`statsmodels.stats.contingency_tables.Table2x2`; where a cell is
    zero the odds ratio is infinite or zero, so the Haldane-Anscombe correction (+0.5 to every
    cell) is applied there only, and flagged.

    Args:
        a_n: Patients with the feature in group A (e.g. malignant).
        a_total: Patients in group A.
        b_n: Patients with the feature in group B (e.g. benign).
        b_total: Patients in group B.
        alpha: 1 - confidence level of the odds-ratio interval.

    Returns:
        The counts, p-value and odds ratio with interval; NaNs when a group is empty.
    """
    from scipy.stats import fisher_exact
    from statsmodels.stats.contingency_tables import Table2x2

    a_n, a_total, b_n, b_total = int(a_n), int(a_total), int(b_n), int(b_total)
    if not (0 <= a_n <= a_total and 0 <= b_n <= b_total):
        raise ValueError(f"counts must satisfy 0 <= n <= total: {a_n}/{a_total}, {b_n}/{b_total}")
    if a_total == 0 or b_total == 0:
        nan = math.nan
        return FisherResult(a_n, a_total, b_n, b_total, nan, nan, nan, nan, False)
    table = np.array([[a_n, a_total - a_n], [b_n, b_total - b_n]], dtype=float)
    p_value = float(fisher_exact(table.astype(int), alternative="two-sided").pvalue)
    haldane = bool((table == 0).any())
    t22 = Table2x2(table + 0.5 if haldane else table, shift_zeros=False)
    low, high = t22.oddsratio_confint(alpha=alpha)
    return FisherResult(a_n, a_total, b_n, b_total, min(p_value, 1.0), float(t22.oddsratio), float(low),
                        float(high), haldane)


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
