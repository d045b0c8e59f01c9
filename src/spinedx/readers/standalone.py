"""One standalone algorithm vs the readers' average in one modality: Chakraborty's 1T-RRRC method (and 1T-RRFC).

The OR model for one treatment (Hillis 2007, section 5.3) applied to the difference figure of merit
``psi_j = theta_j - theta_model`` (RJafroc ``StSignificanceTestingCadVsRad(method = "1T-RRRC")``); the figures of
merit and their case jackknife come from :mod:`spinedx.readers.mrmc`. Reproduces RJafroc's CAD-vs-radiologists
example (tests/readers/test_mrmc_reference.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spinedx.readers.mrmc import (
    _hillis_ddf,
    _names,
    _ratio,
    _t_quantile,
    _t_two_sided,
    empirical_auc,
    jackknife_auc,
    jackknife_covariance,
)

__all__ = ["StandaloneResult", "standalone_vs_readers"]


@dataclass(frozen=True)
class StandaloneResult:
    """One algorithm vs the readers' average in one modality (Chakraborty's 1T-RRRC, with 1T-RRFC beside it).

    ``diff`` is readers' average minus the algorithm (RJafroc's ``avgDiffFom``, RAD - CAD); ``ci_diff`` its interval
    and ``ci_readers`` the interval of the readers' average AUC; ``t``, ``df``, ``p`` the 1T-RRRC test (``F = t^2``
    on 1 and ``df``); ``var`` and ``cov2`` the jackknife error variance and covariance of the difference figures of
    merit and ``var_r`` the readers' variance; ``rrfc_*`` the random-reader fixed-case t test of the differences.
    """

    modality: str
    readers: tuple[str, ...]
    model_auc: float
    reader_auc: tuple[float, ...]
    readers_mean: float
    diff: float
    ci_diff: tuple[float, float]
    ci_readers: tuple[float, float]
    t: float
    df: float
    p: float
    var: float
    cov2: float
    var_r: float
    rrfc_t: float
    rrfc_df: float
    rrfc_p: float
    rrfc_ci_diff: tuple[float, float]
    alpha: float

    @property
    def f(self) -> float:
        """The F statistic, ``t^2`` on 1 and ``df`` degrees of freedom."""
        return self.t**2

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        out = asdict(self)
        out["f"] = self.f
        out["reader_auc"] = dict(zip(self.readers, self.reader_auc, strict=True))
        out.pop("readers")
        return out


def standalone_vs_readers(
    model_scores: np.ndarray, reader_scores: np.ndarray, truth: np.ndarray, *, readers: Sequence[str] | None = None,
    modality: str = "", alpha: float = 0.05,
) -> StandaloneResult:
    """Standalone algorithm vs readers on the same cases: Chakraborty's 1T-RRRC analysis (and 1T-RRFC).

    The difference figure of merit of reader ``j`` is ``psi_j = theta_j - theta_0`` (``theta_0``: the algorithm). Its
    single-treatment OR model ``psi_j = Delta + R_j + eps_j`` has ``Var`` and ``Cov2`` estimated by the case jackknife
    of the differences (Chakraborty 2017, chapter 22 "Standalone CAD vs. radiologists"; RJafroc
    ``StSignificanceTestingCadVsRad``, ``method = "1T-RRRC"``). With Hillis 2007, section 5.3:

        MS(R) = sum_j (psi_j - psi_.)^2 / (J - 1),   MS_den = MS(R) + J max(Cov2, 0)
        t = psi_. / sqrt(MS_den / J),   ddf = MS_den^2 / (MS(R)^2 / (J - 1))

    and the interval ``psi_. +- t_{1-alpha/2, ddf} sqrt(MS_den / J)``. 1T-RRFC is the one-sample t test of the
    ``psi_j`` (J - 1 degrees of freedom; Hupse et al., Eur Radiol 2013;23:93-100).

    Args:
        model_scores: ``(K,)`` the algorithm's scores.
        reader_scores: ``(J, K)`` the readers' scores (J >= 2).
        truth: ``(K,)`` 0/1.
        readers, modality: names for the output.
        alpha: 1 - confidence level.

    Returns:
        :class:`StandaloneResult`.
    """
    model = np.asarray(model_scores, dtype=float)
    rdr = np.asarray(reader_scores, dtype=float)
    if model.ndim != 1 or rdr.ndim != 2 or rdr.shape[1] != model.shape[0]:
        raise ValueError(f"model scores {model.shape} and reader scores {rdr.shape} do not match")
    n_rdr = rdr.shape[0]
    if n_rdr < 2:
        raise ValueError(f"the comparison needs at least 2 readers (have {n_rdr})")
    names = _names(readers, n_rdr, "rdr")
    both = np.concatenate([model[None], rdr])
    fom = empirical_auc(both, truth)
    jk = jackknife_auc(both, truth)
    psi = fom[1:] - fom[0]
    cov = jackknife_covariance(jk[1:] - jk[0][None])
    off = ~np.eye(n_rdr, dtype=bool)
    var = float(np.diag(cov).mean())
    cov2 = float(cov[off].mean())
    mean = float(psi.mean())
    ms_r = float(((psi - mean) ** 2).sum() / (n_rdr - 1))
    ms_den = ms_r + n_rdr * max(cov2, 0.0)
    df = _hillis_ddf(ms_den, ms_r, n_rdr - 1)
    se = math.sqrt(ms_den / n_rdr)
    t = _ratio(mean, se)
    crit = _t_quantile(1 - alpha / 2, df)
    ci = (mean - crit * se, mean + crit * se)
    readers_mean = float(fom[1:].mean())
    se_fc = math.sqrt(ms_r / n_rdr)
    t_fc = _ratio(mean, se_fc)
    crit_fc = _t_quantile(1 - alpha / 2, n_rdr - 1)
    return StandaloneResult(
        modality=modality, readers=names, model_auc=float(fom[0]), reader_auc=tuple(float(x) for x in fom[1:]),
        readers_mean=readers_mean, diff=mean, ci_diff=ci,
        ci_readers=(readers_mean + ci[0] - mean, readers_mean + ci[1] - mean), t=t, df=df,
        p=_t_two_sided(t, df), var=var, cov2=cov2, var_r=float(np.var(fom[1:], ddof=1)),
        rrfc_t=t_fc, rrfc_df=float(n_rdr - 1), rrfc_p=_t_two_sided(t_fc, n_rdr - 1),
        rrfc_ci_diff=(mean - crit_fc * se_fc, mean + crit_fc * se_fc), alpha=alpha,
    )
