"""Conformal refer: class-conditional (Mondrian) split-conformal prediction sets of the calibrated probability.

Each patient gets a set of plausible labels at a chosen error rate ``alpha``: ``("benign",)``, ``("malignant",)``,
``("benign", "malignant")`` (both plausible: refer, ``conformal_ambiguous``) or ``()`` (neither: refer,
``conformal_empty``). The nonconformity of label ``c`` is ``1 - p(c)`` with ``p(malignant)`` the calibrated
probability and ``p(benign) = 1 - p(malignant)``; label ``c`` is in the set when its nonconformity is at most
``q_c``, the Mondrian quantile of the nonconformity among the calibration patients of class ``c``. So, for a new
patient exchangeable with the calibration patients of its class, the set holds the true label with probability at
least ``1 - alpha``, for benign and malignant patients separately.

The p-values come from crepes (:class:`crepes.ConformalClassifier` with the true class as the Mondrian category,
unsmoothed: deterministic, the same set for the same probability); :func:`fit_conformal` turns them into the two
thresholds ``q_c`` that ``conformal.json`` stores, so deployment needs neither crepes nor the calibration data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinedx.errors import SpinedxError

__all__ = ["CLASSES", "ConformalThresholds", "check_alpha", "fit_conformal", "nonconformity"]

#: The labels, in set order.
CLASSES = ("benign", "malignant")


def nonconformity(p_calibrated: np.ndarray) -> np.ndarray:
    """``(N, 2)``: ``1 - p(benign)``, ``1 - p(malignant)`` of calibrated malignant probabilities."""
    p = np.asarray(p_calibrated, dtype=float).reshape(-1)
    return np.stack([p, 1.0 - p], axis=1)


@dataclass(frozen=True)
class ConformalThresholds:
    """Per-class thresholds of a Mondrian split-conformal classifier at ``alpha``.

    Attributes:
        alpha: the error rate per class (the set misses a class-``c`` patient's label with probability at most
            ``alpha``).
        thresholds: ``{"benign": q_b, "malignant": q_m}``: label ``c`` is in the set when ``1 - p(c) <= q_c``
            (1.0: always in, too few calibration patients of the class for this alpha).
    """

    alpha: float
    thresholds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.alpha, self.thresholds, where="conformal thresholds")

    def predict_set(self, p_calibrated: np.ndarray) -> list[tuple[str, ...]]:
        """The prediction set of each calibrated malignant probability (labels in :data:`CLASSES` order)."""
        scores = nonconformity(p_calibrated)
        q = np.array([self.thresholds[c] for c in CLASSES])
        inside = scores <= q[None, :]
        return [tuple(c for c, keep in zip(CLASSES, row, strict=True) if keep) for row in inside]

    def to_dict(self) -> dict[str, Any]:
        """``{"alpha", "thresholds"}`` (what ``conformal.json`` holds beside ``format``)."""
        return {"alpha": float(self.alpha), "thresholds": {c: float(self.thresholds[c]) for c in CLASSES}}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "conformal.json") -> ConformalThresholds:
        """The thresholds :meth:`to_dict` wrote (a ``format`` key is allowed and ignored).

        Raises:
            SpinedxError: missing or extra keys, alpha outside (0, 0.5), thresholds that are not numbers in [0, 1].
        """
        if not isinstance(d, dict) or sorted(set(d) - {"format"}) != ["alpha", "thresholds"]:
            raise SpinedxError("not a conformal record (expected format, alpha, thresholds); rerun spinedx cv",
                               where=where)
        _check(d["alpha"], d["thresholds"], where=where)
        return cls(float(d["alpha"]), {c: float(d["thresholds"][c]) for c in CLASSES})


def check_alpha(alpha: Any, where: str = "--alpha") -> float:
    """``alpha`` as a float in (0, 0.5), or one error naming ``where``."""
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha) \
        and 0.0 < alpha < 0.5
    if not ok:
        raise SpinedxError(f"alpha must be a number in (0, 0.5), the error rate allowed per class (got {alpha!r}); "
                           "0.10 means each class's set holds its label for at least 90% of patients", where=where)
    return float(alpha)


def _check(alpha: Any, thresholds: Any, where: str) -> None:
    check_alpha(alpha, where=where)
    if not isinstance(thresholds, dict) or sorted(thresholds) != sorted(CLASSES):
        raise SpinedxError(f"conformal thresholds must name {' and '.join(CLASSES)}; rerun spinedx cv", where=where)
    for c in CLASSES:
        v = thresholds[c]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise SpinedxError(f"conformal threshold of {c} must be a number in [0, 1] (got {v!r}); rerun spinedx cv",
                               where=where)


def fit_conformal(p_calibrated: np.ndarray, y: np.ndarray, alpha: float) -> ConformalThresholds:
    """Mondrian (class-conditional) split-conformal thresholds from honest calibration data.

    crepes computes each class's unsmoothed conformal p-value ``(#{calibration scores of class c >= s} + 1) /
    (n_c + 1)``; label ``c`` belongs to the set when it is at least ``alpha`` (crepes' ``predict_set`` at confidence
    ``1 - alpha``). That holds exactly for scores up to some calibration score, which is ``q_c``; when even a score
    above every calibration score keeps its p-value >= alpha (``n_c + 1 <= 1 / alpha``), the label is always in
    (``q_c = 1``).

    Args:
        p_calibrated: calibrated malignant probabilities of the calibration patients.
        y: their labels (0 benign, 1 malignant).
        alpha: the error rate per class, in (0, 0.5).

    Raises:
        SpinedxError: alpha outside (0, 0.5), or a class without calibration patients.
    """
    from crepes import ConformalClassifier

    alpha = check_alpha(alpha)
    y = np.asarray(y, dtype=int).reshape(-1)
    scores = nonconformity(p_calibrated)
    true_scores = scores[np.arange(len(y)), y]
    for k, c in enumerate(CLASSES):
        if not (y == k).any():
            raise SpinedxError(f"no {c} patient among the conformal calibration data", where="calibration data")
    cc = ConformalClassifier().fit(true_scores, bins=y)
    thresholds: dict[str, float] = {}
    for k, c in enumerate(CLASSES):
        own = np.unique(true_scores[y == k])
        # every score at which the set can change: the class's calibration scores, and one above them all
        candidates = np.append(own, np.nextafter(own.max(), np.inf))
        pv = cc.predict_p(candidates, bins=np.full(len(candidates), k), smoothing=False)
        keep = candidates[np.asarray(pv).reshape(-1) >= alpha]
        if len(keep) and keep.max() > own.max():
            thresholds[c] = 1.0
        else:
            thresholds[c] = float(min(keep.max(), 1.0)) if len(keep) else 0.0
    return ConformalThresholds(alpha, thresholds)
