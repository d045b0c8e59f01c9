"""What a run folder or a bundle holds for deciding: calibrator, conformal thresholds, domain and spread references.

Files (each ``{"format": 1, ...}``, written at the end of ``spinedx cv`` and copied into a bundle by ``spinedx
export``, where ``SHA256SUMS`` and ``bundle.json`` check them like the fold models):

* ``calibration.json``: :class:`spinedx.decision.calibration.Calibrator` (``method``, ``params``);
* ``conformal.json``: :class:`spinedx.decision.conformal.ConformalThresholds` (``alpha``, ``thresholds``);
* ``domain.json``: the domain reference and the spread reference (:mod:`spinedx.decision.domain`).

A run or bundle made before them loads with the ones it lacks named (:attr:`DecisionArtefacts.missing`,
:meth:`DecisionArtefacts.warning`); the decision then falls back to the probability alone, marked as such
(:func:`spinedx.decision.record.decide`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError

__all__ = ["CALIBRATION_JSON", "CONFORMAL_JSON", "DECISION_FILES", "DOMAIN_JSON", "DecisionArtefacts",
           "load_artefacts", "trained_on_of"]

from spinedx.interop.runfacts import DECISION_FILES

CALIBRATION_JSON, CONFORMAL_JSON, DOMAIN_JSON = DECISION_FILES


@dataclass(frozen=True)
class DecisionArtefacts:
    """A model's decision artefacts (any may be None).

    Attributes:
        calibrator: maps the uncalibrated patient probability to a calibrated one.
        conformal: the Mondrian conformal thresholds at the run's alpha.
        domain: the domain reference (:class:`spinedx.decision.domain.DomainReference`).
        spread: the spread reference (:class:`spinedx.decision.domain.SpreadReference`).
        trained_on: what the models were trained on.
        missing: what the model lacks, in words (``calibration.json``, ``domain.json spread reference (...)``).
        where: the run folder or bundle.
    """

    calibrator: Any = None
    conformal: Any = None
    domain: Any = None
    spread: Any = None
    trained_on: dict[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    where: str = ""

    def warning(self) -> str | None:
        """One line naming what is missing and what the decision falls back to; None when nothing is."""
        if not self.missing:
            return None
        files = [m for m in self.missing if m in DECISION_FILES]
        parts = [f"no {', '.join(files)} (made before spinedx decided with them; rerun spinedx cv in the run folder "
                 "to add them, then spinedx export)"] if files else []
        parts += [f"no {m}" for m in self.missing if m not in DECISION_FILES]
        fallback = ("the decision is the call at the run's threshold from the probability alone"
                    if self.conformal is None else "the decision is made without them")
        return f"{self.where}: {'; '.join(parts)}: {fallback}, marked as such in the output"


def trained_on_of(record: Any) -> dict[str, Any]:
    """What a run's models were trained on: ``synthetic``, ``n_patients``, ``prevalence``, ``origin``
    (:attr:`spinedx.runrecord.RunRecord.trained_on`)."""
    return dict(record.trained_on)


def _doc(raw: bytes, name: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpinedxError(f"{name} is not JSON ({getattr(exc, 'msg', exc)}); rerun spinedx cv (or export the "
                           "bundle again)", where=where) from None
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise SpinedxError(f"{name} is not a format-1 spinedx record; rerun spinedx cv (or export the bundle again) "
                           "with this spinedx", where=where)
    return {k: v for k, v in doc.items() if k != "format"}


def _read(folder: Path, digest: str | None, names: Sequence[str]) -> dict[str, bytes]:
    """The bytes of the decision files present: a bundle's read once and checked against its ``SHA256SUMS`` and
    ``bundle.json`` (a run folder's as they are: its owner wrote them atomically)."""
    if digest is None:
        return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}
    from spinedx.interop.bundle import bundle_files_bytes

    return bundle_files_bytes(folder, names, expect_digest=digest)


def load_artefacts(path: str | Path, record: Any, *, digest: str | None = None) -> DecisionArtefacts:
    """The decision artefacts of a run folder or a bundle.

    Args:
        path: the run folder or bundle.
        record: its :class:`spinedx.runrecord.RunRecord` (what the models were trained on).
        digest: the bundle's digest (a bundle's files are checked against it); None for a run folder.

    Raises:
        SpinedxError: a file that is present but damaged or not this spinedx's (named).
    """
    from spinedx.decision.domain import DomainReference, SpreadReference

    folder = Path(path)
    raw = _read(folder, digest, DECISION_FILES)
    missing: list[str] = [n for n in DECISION_FILES if n not in raw]
    calibrator = conformal = domain = spread = None
    try:
        if CALIBRATION_JSON in raw:
            where = str(folder / CALIBRATION_JSON)
            calibrator = _calibrator(_doc(raw[CALIBRATION_JSON], CALIBRATION_JSON, where), where)
        if CONFORMAL_JSON in raw:
            where = str(folder / CONFORMAL_JSON)
            conformal = _conformal(_doc(raw[CONFORMAL_JSON], CONFORMAL_JSON, where), where)
        if DOMAIN_JSON in raw:
            doc = _doc(raw[DOMAIN_JSON], DOMAIN_JSON, str(folder / DOMAIN_JSON))
            domain = DomainReference.from_dict(doc["domain"])
            if doc.get("spread") is not None:
                spread = SpreadReference.from_dict(doc["spread"])
            else:
                why = doc.get("spread_absent_reason") or "not fitted"
                missing.append(f"spread reference for models_disagree ({why})")
    except (KeyError, TypeError, ValueError) as exc:
        raise SpinedxError(f"a decision file is not what this spinedx writes ({type(exc).__name__}: {exc}); rerun "
                           "spinedx cv (or export the bundle again)", where=str(folder)) from None
    return DecisionArtefacts(calibrator, conformal, domain, spread, trained_on_of(record), tuple(missing),
                             str(folder))


def _calibrator(doc: dict[str, Any], where: str) -> Any:
    from spinedx.decision.calibration import Calibrator

    return Calibrator.from_dict(doc, where=where)


def _conformal(doc: dict[str, Any], where: str) -> Any:
    from spinedx.decision.conformal import ConformalThresholds

    return ConformalThresholds.from_dict(doc, where=where)
