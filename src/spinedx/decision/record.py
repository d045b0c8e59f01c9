"""The decision of one case: ``benign``, ``malignant`` or ``refer`` with its reasons (one contract everywhere).

:func:`decide` turns the fold models' patient probabilities into a :class:`Decision`: the ensemble mean (the
uncalibrated probability), the run's calibration map (the calibrated probability), the conformal prediction set at the
run's alpha, and the checks against the training data (:mod:`spinedx.decision.domain`). A case is referred when its
conformal set holds both labels (``conformal_ambiguous``) or none (``conformal_empty``), when it lies outside the
training data (``outside_training_data``, whatever the probability) or when the fold models disagree beyond their
honest training spread (``models_disagree``). ``prediction.json``, the API's predict response and the DICOM SR
(:func:`spinedx.interop.content.decision_of`) state the same fields.

A run or bundle made before these checks existed still decides, from the probability alone (its call at the run's
threshold), and says so: ``source`` is ``probability_alone`` and ``missing`` names what the run lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx.common import call

if TYPE_CHECKING:
    from spinedx.decision.artefacts import DecisionArtefacts

__all__ = ["DECISIONS", "REFER_REASONS", "SOURCES", "Decision", "decide"]

#: What a decision can be.
DECISIONS = ("benign", "malignant", "refer")
#: Why a case is referred, in the order they are listed.
REFER_REASONS = ("outside_training_data", "models_disagree", "conformal_ambiguous", "conformal_empty")
#: ``checks``: every check of the run was applied; ``probability_alone``: the run lacks its conformal thresholds
#: (made before them), so the decision is the call at the run's threshold (plus whatever checks it has).
SOURCES = ("checks", "probability_alone")


@dataclass(frozen=True)
class Decision:
    """What spinedx decides about one case.

    Attributes:
        decision: ``benign``, ``malignant`` or ``refer``.
        refer_reasons: why it refers (names of :data:`REFER_REASONS`; empty unless ``refer``).
        probability: the calibrated patient probability of malignancy (the uncalibrated one when the run has no
            calibrator).
        probability_uncalibrated: the mean of the fold models' patient probabilities.
        conformal_set: the labels the conformal predictor keeps (None: the run has no conformal thresholds).
        alpha: the conformal miscoverage level (None: no conformal thresholds).
        trained_on: what the models were trained on (``synthetic``, ``n_patients``, ``prevalence``, ``origin``).
        source: :data:`SOURCES`.
        missing: what the run or bundle lacks (``calibration.json``, ...), named in the warning.
        checks: the numbers behind the checks (distance and threshold, spread and threshold, threshold).
    """

    decision: str
    refer_reasons: tuple[str, ...]
    probability: float
    probability_uncalibrated: float
    conformal_set: tuple[str, ...] | None
    alpha: float | None
    trained_on: dict[str, Any]
    source: str = "checks"
    missing: tuple[str, ...] = ()
    checks: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        if bool(self.refer_reasons) != (self.decision == "refer"):
            raise ValueError(f"decision {self.decision!r} with refer_reasons {list(self.refer_reasons)}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    @property
    def note(self) -> str | None:
        """A sentence when the decision is not the full one (the run lacks some of its checks)."""
        if not self.missing:
            return None
        how = ("; benign or malignant is the call at the run's threshold from the probability alone"
               if self.source == "probability_alone" else "")
        return f"decided without {', '.join(self.missing)}{how}"

    def to_record(self) -> dict[str, Any]:
        """The fields ``prediction.json`` and the API's predict response hold."""
        return {"decision": self.decision, "refer_reasons": list(self.refer_reasons),
                "probability": self.probability, "probability_uncalibrated": self.probability_uncalibrated,
                "conformal_set": None if self.conformal_set is None else list(self.conformal_set),
                "alpha": self.alpha, "trained_on": dict(self.trained_on), "decision_source": self.source,
                "decision_missing": list(self.missing), "decision_note": self.note,
                "decision_checks": dict(self.checks)}


def decide(per_model: np.ndarray, artefacts: DecisionArtefacts, *, threshold: float,
           features: np.ndarray | None = None) -> Decision:
    """Decide one case from its fold models' patient probabilities.

    Args:
        per_model: each fold model's patient probability (after aggregation over the lesion slices).
        artefacts: the run's or bundle's calibrator, conformal thresholds, domain and spread references
            (:func:`spinedx.decision.artefacts.load_artefacts`; any may be missing).
        threshold: the run's decision threshold (used only without conformal thresholds).
        features: the case's feature vector (:func:`spinedx.decision.domain.case_features`) for the domain check;
            None skips it (recorded as not checked).

    Returns:
        The decision.
    """
    p = np.asarray(per_model, dtype=np.float64).ravel()
    if not len(p) or not np.isfinite(p).all():
        raise ValueError("per_model must hold finite probabilities")
    p_uncal = float(p.mean())
    p_cal = p_uncal
    if artefacts.calibrator is not None:
        p_cal = float(np.clip(artefacts.calibrator.apply(np.array([p_uncal]))[0], 0.0, 1.0))
    reasons: list[str] = []
    checks: dict[str, Any] = {"threshold": float(threshold)}
    if artefacts.domain is not None and features is not None:
        dist = float(artefacts.domain.distance(features)[0])
        checks["domain_distance"] = dist
        checks["domain_threshold"] = artefacts.domain.threshold
        if not np.isfinite(dist) or dist > artefacts.domain.threshold:
            reasons.append("outside_training_data")
    if artefacts.spread is not None:
        from spinedx.decision.domain import pairwise_spread

        spread = pairwise_spread(p)
        checks["spread"] = spread
        checks["spread_threshold"] = artefacts.spread.threshold
        if len(p) > 1 and spread > artefacts.spread.threshold:
            reasons.append("models_disagree")
    cset: tuple[str, ...] | None = None
    alpha = None
    if artefacts.conformal is not None:
        cset = tuple(artefacts.conformal.predict_set(np.array([p_cal]))[0])
        alpha = float(artefacts.conformal.alpha)
        if len(cset) == 2:
            reasons.append("conformal_ambiguous")
        elif not cset:
            reasons.append("conformal_empty")
        base = cset[0] if len(cset) == 1 else None
        source = "checks"
    else:
        base = call(p_uncal, threshold)
        source = "probability_alone"
    ordered = tuple(r for r in REFER_REASONS if r in reasons)
    decision = "refer" if ordered or base is None else base
    return Decision(decision, ordered, p_cal, p_uncal, cset, alpha, dict(artefacts.trained_on), source,
                    tuple(artefacts.missing), checks)
