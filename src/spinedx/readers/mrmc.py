"""Multi-reader multi-case (MRMC) analysis of ROC reader studies: Obuchowski-Rockette with Hillis's degrees of freedom.

A reader study has ``I`` modalities (treatments, e.g. unaided and aided by the model), ``J`` readers and ``K`` cases,
every reader reading every case in every modality (the fully crossed design). The figure of merit of reader ``j`` in
modality ``i`` is the empirical (Wilcoxon, trapezoidal) area under the ROC curve, ``theta[i, j]``.

The Obuchowski-Rockette (OR) model (Obuchowski & Rockette, Commun Stat Simul Comput 1995;24:285-308) writes

    theta[i, j] = mu + tau_i + R_j + (tau R)_ij + eps_ij

with random reader effects ``R_j ~ N(0, sigma_R^2)``, ``(tau R)_ij ~ N(0, sigma_TR^2)`` and errors ``eps`` (case
sampling and within-reader noise) whose covariance has four values: ``Var`` (same modality, same reader), ``Cov1``
(other modality, same reader), ``Cov2`` (same modality, other reader) and ``Cov3`` (other modality, other reader).
They are estimated here by the case jackknife: with ``theta[i, j, (k)]`` the AUC without case ``k``,

    Cov(eps_ij, eps_i'j') = (K - 1)/K sum_k (theta[i,j,(k)] - theta[i,j,(.)]) (theta[i',j',(k)] - theta[i',j',(.)])

averaged over the pairs each value stands for (Hillis, Stat Med 2007;26:596-619, section 2; Chakraborty, *Observer
Performance Methods for Diagnostic Imaging*, CRC 2017, chapter 10).

The mean squares of the modality x reader table of AUCs are

    MS(T)  = J / (I - 1) * sum_i (theta[i, .] - theta[., .])^2
    MS(R)  = I / (J - 1) * sum_j (theta[., j] - theta[., .])^2
    MS(TR) = sum_ij (theta[i, j] - theta[i, .] - theta[., j] + theta[., .])^2 / ((I - 1)(J - 1))

and the three analyses are (Hillis 2007, equations 7-8 and section 5; Hillis, Berbaum & Metz, Acad Radiol
2008;15:647-661, "Recent developments in the Dorfman-Berbaum-Metz procedure for multireader ROC study analysis",
table 2):

* **RRRC** (readers and cases random): ``F = MS(T) / [MS(TR) + J max(Cov2 - Cov3, 0)]`` on ``I - 1`` and Hillis's
  ``ddf = [MS(TR) + J max(Cov2 - Cov3, 0)]^2 / {MS(TR)^2 / [(I - 1)(J - 1)]}`` degrees of freedom; the difference of
  two modalities' reader-averaged AUCs has standard error ``sqrt(2/J [MS(TR) + J max(Cov2 - Cov3, 0)])`` and a
  t interval on ``ddf``.
* **FRRC** (readers fixed, cases random): ``chi2 = (I - 1) MS(T) / [Var - Cov1 + (J - 1) max(Cov2 - Cov3, 0)]`` on
  ``I - 1`` degrees of freedom; z intervals with standard error ``sqrt(2/J [Var - Cov1 + (J - 1) max(Cov2 - Cov3,
  0)])``; per reader, ``sqrt(2 (Var_j - Cov1_j))``.
* **RRFC** (readers random, cases fixed): ``F = MS(T) / MS(TR)`` on ``I - 1`` and ``(I - 1)(J - 1)``; t intervals
  with standard error ``sqrt(2 MS(TR) / J)``.

The variance components follow Hillis, Obuchowski & Berbaum ("Power estimation for multireader ROC methods: an
updated and unified approach", Acad Radiol 2011;18:129-142, equation 9) with the constraint RJafroc applies:
``sigma_TR^2 = MS(TR) - Var + Cov1 + max(Cov2 - Cov3, 0)`` and
``sigma_R^2 = [MS(R) - sigma_TR^2 - Var + Cov2 - (I - 1)(Cov1 - Cov3)] / I``.

:func:`spinedx.readers.standalone.standalone_vs_readers` compares one algorithm's AUC with the readers' average in a
single modality by Chakraborty's 1T-RRRC method (RJafroc ``StSignificanceTestingCadVsRad(method = "1T-RRRC")``):
the OR model for one treatment (Hillis 2007, section 5.3) applied to the difference figure of merit
``psi_j = theta_j - theta_model``.

Everything is numpy/scipy; the jackknife is vectorised over modalities, readers and cases (ranks, no loop over the
deleted case), so 200 cases x 5 readers x 2 modalities take about a millisecond. The numbers reproduce RJafroc's
published output for the Van Dyke data (RRRC, FRRC, RRFC, variance components) and for its CAD-vs-radiologists
example (tests/readers/test_mrmc_reference.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "ModalityCI",
    "PairCI",
    "ORResult",
    "VarianceComponents",
    "empirical_auc",
    "jackknife_auc",
    "jackknife_covariance",
    "or_analysis",
    "or_from_foms",
]


# ---------------------------------------------------------------------------------------------------------------
# Figures of merit and their jackknife
# ---------------------------------------------------------------------------------------------------------------

def _split_ranks(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per positive case, the Wilcoxon kernel summed over the negatives; per negative, summed over the positives.

    For a positive case ``a`` with score ``x_a`` the row sum ``sum_b psi(x_a, y_b)`` (``psi`` = 1 when ``x_a > y_b``,
    1/2 on a tie, 0 otherwise) equals its average rank among all cases minus its average rank among the positives;
    for a negative case ``b`` the column sum ``sum_a psi(x_a, y_b)`` is ``n1`` minus (its rank among all cases minus
    its rank among the negatives). Ranks along the last axis, so any leading shape is handled at once.
    """
    pos = np.flatnonzero(truth == 1)
    neg = np.flatnonzero(truth == 0)
    r_all = stats.rankdata(scores, axis=-1)
    row = r_all[..., pos] - stats.rankdata(scores[..., pos], axis=-1)
    col = len(pos) - (r_all[..., neg] - stats.rankdata(scores[..., neg], axis=-1))
    return row, col, pos, neg


def _check_inputs(scores: np.ndarray, truth: np.ndarray, *, min_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(truth)
    if y.ndim != 1 or s.shape[-1:] != y.shape:
        raise ValueError(f"scores {s.shape} and truth {y.shape} do not match: cases along the last axis")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("truth must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n1 = int((y == 1).sum())
    n0 = len(y) - n1
    if n1 < min_per_class or n0 < min_per_class:
        raise ValueError(f"need at least {min_per_class} positive and {min_per_class} negative cases "
                         f"(have {n1} and {n0})")
    return s, y.astype(int)


def empirical_auc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Empirical (trapezoidal, Wilcoxon-Mann-Whitney) ROC AUC along the last axis, ties counting one half.

    Args:
        scores: ``(..., K)`` ratings, higher = more likely positive.
        truth: ``(K,)`` 0/1 (1 = positive).

    Returns:
        ``(...)`` AUCs (equal to :func:`sklearn.metrics.roc_auc_score` for every slice).
    """
    s, y = _check_inputs(scores, truth, min_per_class=1)
    row, _, pos, neg = _split_ranks(s, y)
    return np.asarray(row.sum(-1) / (len(pos) * len(neg)), dtype=float)


def jackknife_auc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The AUC with each case left out in turn (the case jackknife), for every leading index at once.

    Leaving out positive case ``a`` removes its row of the Wilcoxon kernel: ``(S - row_a) / ((n1 - 1) n0)``;
    leaving out negative case ``b`` removes its column: ``(S - col_b) / (n1 (n0 - 1))``, where ``S`` is the kernel's
    total (:func:`_split_ranks`). Exact, not an approximation, and O(K log K) per reader and modality.

    Args:
        scores: ``(..., K)`` ratings.
        truth: ``(K,)`` 0/1; at least two cases of each class (else a left-out case leaves a class empty).

    Returns:
        ``(..., K)``: element ``[..., k]`` is the AUC without case ``k``.
    """
    s, y = _check_inputs(scores, truth, min_per_class=2)
    row, col, pos, neg = _split_ranks(s, y)
    n1, n0 = len(pos), len(neg)
    total = row.sum(-1, keepdims=True)
    out = np.empty(s.shape, dtype=float)
    out[..., pos] = (total - row) / ((n1 - 1) * n0)
    out[..., neg] = (total - col) / (n1 * (n0 - 1))
    return out


def jackknife_covariance(jk: np.ndarray) -> np.ndarray:
    """Jackknife covariance of figures of merit: ``(K - 1)/K * sum_k d[a, k] d[b, k]`` over flattened leading indices.

    Args:
        jk: ``(..., K)`` leave-one-out figures of merit.

    Returns:
        ``(..., ...)``: for ``jk`` of shape ``(I, J, K)`` the ``(I, J, I, J)`` covariance array.
    """
    jk = np.asarray(jk, dtype=float)
    k = jk.shape[-1]
    d = jk - jk.mean(-1, keepdims=True)
    lead = jk.shape[:-1]
    flat = d.reshape(-1, k)
    cov = (k - 1) / k * (flat @ flat.T)
    return cov.reshape(*lead, *lead)


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VarianceComponents:
    """OR variance components (Hillis 2007; Hillis, Obuchowski & Berbaum 2011, equation 9).

    ``var``, ``cov1``, ``cov2``, ``cov3``: the error covariances (jackknife); ``var_tr``: modality-by-reader variance;
    ``var_r``: reader variance; ``ms_t``, ``ms_r``, ``ms_tr``: the mean squares of the AUC table.
    """

    var: float
    cov1: float
    cov2: float
    cov3: float
    var_tr: float
    var_r: float
    ms_t: float
    ms_r: float
    ms_tr: float


@dataclass(frozen=True)
class PairCI:
    """One difference of reader-averaged AUCs, ``modality_a - modality_b``, with its test and interval.

    ``stat`` is t (RRRC, RRFC) or z (FRRC: ``df`` is infinite); ``reader`` names the reader for per-reader FRRC rows.
    """

    modality_a: str
    modality_b: str
    estimate: float
    std_err: float
    df: float
    stat: float
    p: float
    low: float
    high: float
    reader: str | None = None


@dataclass(frozen=True)
class ModalityCI:
    """The reader-averaged AUC of one modality with its interval (from that modality's data alone)."""

    modality: str
    estimate: float
    std_err: float
    df: float
    low: float
    high: float


@dataclass(frozen=True)
class FTest:
    """An F test (RRRC, RRFC) or, with ``ddf`` infinite, the chi-square test (FRRC: ``chisq = ndf * F``)."""

    f: float
    ndf: float
    ddf: float
    p: float
    ci_diff: list[PairCI]
    ci_each: list[ModalityCI]
    ci_diff_each_reader: list[PairCI] = field(default_factory=list)

    @property
    def chisq(self) -> float:
        """``ndf * F``: the chi-square statistic when ``ddf`` is infinite (FRRC)."""
        return self.ndf * self.f


@dataclass
class ORResult:
    """Obuchowski-Rockette analysis of a fully crossed reader study (see the module docstring).

    Attributes:
        modalities: modality names, in the order of ``auc``'s rows.
        readers: reader names, in the order of ``auc``'s columns.
        n_positive, n_negative: cases by truth.
        auc: ``(I, J)`` per-reader AUC (or other figure of merit).
        auc_mean: ``(I,)`` reader-averaged AUC per modality.
        components: :class:`VarianceComponents`.
        rrrc, frrc, rrfc: the three analyses (:class:`FTest`).
        alpha: 1 - confidence level of every interval.
    """

    modalities: tuple[str, ...]
    readers: tuple[str, ...]
    n_positive: int
    n_negative: int
    auc: np.ndarray
    auc_mean: np.ndarray
    components: VarianceComponents
    rrrc: FTest
    frrc: FTest
    rrfc: FTest
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN/inf left as floats: clean with :func:`spinedx.common.json_clean`)."""
        def test(t: FTest, kind: str) -> dict[str, Any]:
            out: dict[str, Any]
            if kind == "frrc":
                out = {"chisq": t.chisq, "df": t.ndf, "p": t.p}
            else:
                out = {"f": t.f, "ndf": t.ndf, "ddf": t.ddf, "p": t.p}
            out["ci"] = [_pair_dict(c) for c in t.ci_diff]
            out["ci_each_modality"] = [asdict(c) for c in t.ci_each]
            if t.ci_diff_each_reader:
                out["ci_each_reader"] = [_pair_dict(c) for c in t.ci_diff_each_reader]
            return out

        return {
            "modalities": list(self.modalities),
            "readers": list(self.readers),
            "n_cases": self.n_positive + self.n_negative,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "alpha": self.alpha,
            "auc": {m: {r: float(self.auc[i, j]) for j, r in enumerate(self.readers)}
                    for i, m in enumerate(self.modalities)},
            "auc_reader_average": {m: float(self.auc_mean[i]) for i, m in enumerate(self.modalities)},
            "variance_components": asdict(self.components),
            "rrrc": test(self.rrrc, "rrrc"),
            "frrc": test(self.frrc, "frrc"),
            "rrfc": test(self.rrfc, "rrfc"),
        }


def _pair_dict(c: PairCI) -> dict[str, Any]:
    out = asdict(c)
    out["comparison"] = f"{c.modality_a} - {c.modality_b}"
    if c.reader is None:
        out.pop("reader")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Helpers for the distributions (infinite degrees of freedom, zero denominators)
# ---------------------------------------------------------------------------------------------------------------

def _ratio(num: float, den: float) -> float:
    """``num / den`` with 0/0 = NaN and x/0 = inf (a degenerate study gives NaN statistics, never an exception)."""
    if den == 0:
        return math.nan if num == 0 else math.copysign(math.inf, num)
    return num / den


def _f_sf(f: float, ndf: float, ddf: float) -> float:
    if math.isnan(f) or math.isnan(ddf):
        return math.nan
    if math.isinf(ddf):  # F(ndf, inf) * ndf is chi-square(ndf); scipy's F returns NaN there
        return float(stats.chi2.sf(f * ndf, ndf))
    return float(stats.f.sf(f, ndf, ddf))


def _t_two_sided(t: float, df: float) -> float:
    if math.isnan(t) or math.isnan(df):
        return math.nan
    return float(2 * stats.t.sf(abs(t), df))


def _t_quantile(q: float, df: float) -> float:
    return math.nan if math.isnan(df) else float(stats.t.ppf(q, df))


def _pair(a: str, b: str, est: float, se: float, df: float, alpha: float, reader: str | None = None) -> PairCI:
    est, se, df = float(est), float(se), float(df)
    stat = _ratio(est, se)
    crit = _t_quantile(1 - alpha / 2, df)
    return PairCI(a, b, est, se, df, stat, _t_two_sided(stat, df), est - crit * se, est + crit * se, reader)


def _each(name: str, est: float, var_mean: float, df: float, alpha: float) -> ModalityCI:
    est, df = float(est), float(df)
    se = math.sqrt(var_mean) if var_mean >= 0 else math.nan
    crit = _t_quantile(1 - alpha / 2, df)
    return ModalityCI(name, est, se, df, est - crit * se, est + crit * se)


def _hillis_ddf(ms_den: float, ms: float, df_ms: float) -> float:
    """Hillis's denominator degrees of freedom ``ms_den^2 / (ms^2 / df_ms)`` (Hillis 2007, equation 8)."""
    if ms == 0:
        return math.nan if ms_den == 0 else math.inf
    return ms_den**2 / (ms**2 / df_ms)


# ---------------------------------------------------------------------------------------------------------------
# The OR analysis
# ---------------------------------------------------------------------------------------------------------------

def _names(given: Sequence[str] | None, n: int, prefix: str) -> tuple[str, ...]:
    names = tuple(str(x) for x in given) if given is not None else tuple(f"{prefix}{i}" for i in range(n))
    if len(names) != n:
        raise ValueError(f"{len(names)} {prefix} names for {n} {prefix}s")
    return names


def or_from_foms(
    foms: np.ndarray, jk: np.ndarray, *, modalities: Sequence[str] | None = None,
    readers: Sequence[str] | None = None, alpha: float = 0.05, n_positive: int = 0, n_negative: int = 0,
) -> ORResult:
    """OR analysis from figures of merit and their case jackknife (any figure of merit, not only the AUC).

    Args:
        foms: ``(I, J)`` figure of merit per modality and reader (I >= 2, J >= 2).
        jk: ``(I, J, K)`` the figure of merit without each case (:func:`jackknife_auc`).
        modalities, readers: names (default ``trt0..``, ``rdr0..``).
        alpha: 1 - confidence level.
        n_positive, n_negative: recorded in the result.

    Returns:
        :class:`ORResult`.
    """
    theta = np.asarray(foms, dtype=float)
    jk = np.asarray(jk, dtype=float)
    if theta.ndim != 2 or jk.shape[:2] != theta.shape:
        raise ValueError(f"foms {theta.shape} and jackknife {jk.shape} do not match")
    n_mod, n_rdr = theta.shape
    if n_mod < 2 or n_rdr < 2:
        raise ValueError(f"the OR analysis needs at least 2 modalities and 2 readers (have {n_mod} and {n_rdr})")
    mods = _names(modalities, n_mod, "trt")
    rdrs = _names(readers, n_rdr, "rdr")

    # Error covariances: average the (I, J, I, J) jackknife covariance over the pairs each one stands for.
    cov = jackknife_covariance(jk)
    same_i = np.eye(n_mod, dtype=bool)[:, None, :, None]
    same_j = np.eye(n_rdr, dtype=bool)[None, :, None, :]
    var = float(cov[same_i & same_j].mean())
    cov1 = float(cov[~same_i & same_j].mean())
    cov2 = float(cov[same_i & ~same_j].mean())
    cov3 = float(cov[~same_i & ~same_j].mean())
    diag_i = cov[np.arange(n_mod), :, np.arange(n_mod), :]            # (I, J, J): within one modality
    var_each_mod = np.array([np.diag(c).mean() for c in diag_i])
    cov2_each_mod = np.array([c[~np.eye(n_rdr, dtype=bool)].mean() for c in diag_i])
    diag_j = cov[:, np.arange(n_rdr), :, np.arange(n_rdr)]            # (J, I, I): within one reader
    var_each_rdr = np.array([np.diag(c).mean() for c in diag_j])
    cov1_each_rdr = np.array([c[~np.eye(n_mod, dtype=bool)].mean() for c in diag_j])

    # Mean squares of the modality x reader table.
    mean_i = theta.mean(1)
    mean_j = theta.mean(0)
    grand = theta.mean()
    ms_t = n_rdr / (n_mod - 1) * float(((mean_i - grand) ** 2).sum())
    ms_r = n_mod / (n_rdr - 1) * float(((mean_j - grand) ** 2).sum())
    df_tr = (n_mod - 1) * (n_rdr - 1)
    ms_tr = float(((theta - mean_i[:, None] - mean_j[None, :] + grand) ** 2).sum()) / df_tr
    ms_r_each = ((theta - mean_i[:, None]) ** 2).sum(1) / (n_rdr - 1)

    var_tr = ms_tr - var + cov1 + max(cov2 - cov3, 0.0)
    var_r = (ms_r - var_tr - var + cov2 - (n_mod - 1) * (cov1 - cov3)) / n_mod
    comps = VarianceComponents(var=var, cov1=cov1, cov2=cov2, cov3=cov3, var_tr=var_tr, var_r=var_r,
                               ms_t=ms_t, ms_r=ms_r, ms_tr=ms_tr)
    pairs = list(itertools.combinations(range(n_mod), 2))

    # RRRC (Hillis 2007, equations 7-8; Hillis, Berbaum & Metz 2008, table 2)
    den = ms_tr + n_rdr * max(cov2 - cov3, 0.0)
    ddf = _hillis_ddf(den, ms_tr, df_tr)
    f_rrrc = _ratio(ms_t, den)
    se = math.sqrt(2 / n_rdr * den)
    rrrc_each = []
    for i in range(n_mod):
        den_i = ms_r_each[i] + n_rdr * max(cov2_each_mod[i], 0.0)
        rrrc_each.append(_each(mods[i], mean_i[i], den_i / n_rdr, _hillis_ddf(den_i, ms_r_each[i], n_rdr - 1),
                               alpha))
    rrrc = FTest(f_rrrc, n_mod - 1, ddf, _f_sf(f_rrrc, n_mod - 1, ddf),
                 [_pair(mods[a], mods[b], mean_i[a] - mean_i[b], se, ddf, alpha) for a, b in pairs], rrrc_each)

    # FRRC: readers fixed; normal (z) reference, chi-square test on I - 1 degrees of freedom
    den_f = var - cov1 + (n_rdr - 1) * max(cov2 - cov3, 0.0)
    f_frrc = _ratio(ms_t, den_f)
    se_f = math.sqrt(2 / n_rdr * den_f) if den_f >= 0 else math.nan
    frrc_each = [_each(mods[i], mean_i[i], (var_each_mod[i] + (n_rdr - 1) * max(cov2_each_mod[i], 0.0)) / n_rdr,
                       math.inf, alpha) for i in range(n_mod)]
    frrc_rdr = []
    for j in range(n_rdr):
        d = var_each_rdr[j] - cov1_each_rdr[j]
        se_j = math.sqrt(2 * d) if d >= 0 else math.nan
        frrc_rdr += [_pair(mods[a], mods[b], theta[a, j] - theta[b, j], se_j, math.inf, alpha, rdrs[j])
                     for a, b in pairs]
    frrc = FTest(f_frrc, n_mod - 1, math.inf, _f_sf(f_frrc, n_mod - 1, math.inf),
                 [_pair(mods[a], mods[b], mean_i[a] - mean_i[b], se_f, math.inf, alpha) for a, b in pairs],
                 frrc_each, frrc_rdr)

    # RRFC: cases fixed; the modality x reader interaction is the error term
    f_rrfc = _ratio(ms_t, ms_tr)
    se_r = math.sqrt(2 * ms_tr / n_rdr)
    rrfc = FTest(f_rrfc, n_mod - 1, df_tr, _f_sf(f_rrfc, n_mod - 1, df_tr),
                 [_pair(mods[a], mods[b], mean_i[a] - mean_i[b], se_r, df_tr, alpha) for a, b in pairs],
                 [_each(mods[i], mean_i[i], ms_r_each[i] / n_rdr, n_rdr - 1, alpha) for i in range(n_mod)])

    return ORResult(modalities=mods, readers=rdrs, n_positive=n_positive, n_negative=n_negative, auc=theta,
                    auc_mean=mean_i, components=comps, rrrc=rrrc, frrc=frrc, rrfc=rrfc, alpha=alpha)


def or_analysis(
    scores: np.ndarray, truth: np.ndarray, *, modalities: Sequence[str] | None = None,
    readers: Sequence[str] | None = None, alpha: float = 0.05,
) -> ORResult:
    """Obuchowski-Rockette analysis with Hillis's ddf of empirical AUCs, covariances by the case jackknife.

    Args:
        scores: ``(I, J, K)`` ratings of modality ``i``, reader ``j``, case ``k`` (fully crossed).
        truth: ``(K,)`` 0/1, at least two cases of each.
        modalities, readers: names for the output.
        alpha: 1 - confidence level of the intervals.

    Returns:
        :class:`ORResult` (RRRC, FRRC, RRFC, AUCs, variance components).

    Raises:
        ValueError: shapes that do not match, fewer than 2 modalities or readers, non-finite scores, truth not 0/1
            or fewer than two cases of a class. (:mod:`spinedx.readers.analysis` checks user input first and names
            the file and row.)
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 3:
        raise ValueError(f"scores must be (modalities, readers, cases), not {s.shape}")
    jk = jackknife_auc(s, truth)
    y = np.asarray(truth).astype(int)
    return or_from_foms(empirical_auc(s, y), jk, modalities=modalities, readers=readers, alpha=alpha,
                        n_positive=int(y.sum()), n_negative=int(len(y) - y.sum()))
