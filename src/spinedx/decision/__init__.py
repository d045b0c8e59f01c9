"""Deciding on one case (issue 20): calibrated probability, conformal refer, and the checks against the training data.

* :mod:`spinedx.decision.record`: :class:`Decision` (``decision``, ``refer_reasons``, ``probability``,
  ``probability_uncalibrated``, ``conformal_set``, ``alpha``, ``trained_on``, ``source``) and :func:`decide`.
* :mod:`spinedx.decision.artefacts`: a run's or bundle's ``calibration.json``, ``conformal.json`` and ``domain.json``.
* :mod:`spinedx.decision.domain`: outside the training data (a cross-fitted Mahalanobis distance in radiomics
  features) and fold models that disagree (their honest training spread); ``fit_run_domain`` at the end of ``cv``.
* :mod:`spinedx.decision.calibration`, :mod:`spinedx.decision.conformal`: the calibrator and the Mondrian conformal
  thresholds, fitted on each fold's honest calibration data (the evaluation side).

Imports: this package sits between ``evaluation | explain`` and ``inference``: evaluation, predict and serve import
it; it imports inference, models, baselines, the run folder and below.
"""

from __future__ import annotations

from spinedx.decision.artefacts import DecisionArtefacts, load_artefacts
from spinedx.decision.record import DECISIONS, REFER_REASONS, Decision, decide

__all__ = ["DECISIONS", "REFER_REASONS", "Decision", "DecisionArtefacts", "decide", "load_artefacts"]
