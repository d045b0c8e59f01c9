"""Read a spinedx SR back with highdicom: the values it carries, for checks, tests and viewers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError


@dataclass
class SRSummary:
    """What a spinedx measurement report says.

    Attributes:
        probability: patient probability of malignancy stated (a fraction in [0, 1]; the SR holds it in %).
        probability_uncalibrated: the ensemble mean before calibration, when the SR states a calibrated one.
        spread: ``{"Fold-model SD": ..}`` over the fold models (fractions).
        decision: ``benign``, ``malignant`` or ``refer``.
        classification: the coded decision, ``(code value, scheme, meaning)``.
        finding_type: ``(code value, scheme, meaning)`` of the groups' finding (the decision).
        refer_reasons: the coded reasons to refer, ``(code value, scheme, meaning)``.
        comments: the TEXT comments of the groups (the decision in words, the provenance line).
        regions: per lesion slice, ``(SOPInstanceUID, frame or None, (5, 2) polyline)`` of its box (each group's
            own box, the first region of its probability).
        algorithm: TID 4019 name, version and parameters.
        study_instance_uid: the SR's study.
        patient_id: the SR's PatientID.
        predecessors: SOPInstanceUIDs of the documents this one supersedes (Predecessor Documents Sequence).
        n_groups: measurement groups in the report.
    """

    probability: float
    probability_uncalibrated: float | None
    spread: dict[str, float]
    decision: str
    classification: tuple[str, str, str]
    finding_type: tuple[str, str, str] | None
    refer_reasons: list[tuple[str, str, str]]
    comments: list[str]
    regions: list[tuple[str, int | None, Any]]
    algorithm: dict[str, Any] = field(default_factory=dict)
    study_instance_uid: str = ""
    patient_id: str = ""
    predecessors: list[str] = field(default_factory=list)
    n_groups: int = 0

    @property
    def model_hash(self) -> str | None:
        """The model sha256 named in the algorithm parameters."""
        for p in self.algorithm.get("parameters", []):
            if p.startswith("model sha256 "):
                return p.split()[-1]
        return None


def _code(c: Any) -> tuple[str, str, str]:
    return (str(c.value), str(c.scheme_designator), str(c.meaning))


def _algorithm(group: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"parameters": []}
    for item in group[0].ContentSequence:
        name = getattr(item, "ConceptNameCodeSequence", [None])[0]
        if name is None or item.ValueType != "TEXT":
            continue
        meaning = str(name.CodeMeaning)
        if meaning == "Algorithm Name":
            out["name"] = str(item.TextValue)
        elif meaning == "Algorithm Version":
            out["version"] = str(item.TextValue)
        elif meaning == "Algorithm Parameters":
            out["parameters"].append(str(item.TextValue))
    return out


def _group_facts(group: Any, where: str) -> dict[str, Any]:
    """The values one spinedx measurement group states (probability and spread as fractions)."""
    from spinedx.interop import codes

    def value(name: Any) -> float | None:
        found = group.get_measurements(name=name)
        if len(found) > 1:
            raise SpinedxError(f"a measurement group states {name.meaning!r} {len(found)} times", where=where)
        return None if not found else float(found[0].value) / 100.0

    prob = group.get_measurements(name=codes.PROBABILITY)
    if len(prob) != 1:
        raise SpinedxError(f"a measurement group states {len(prob)} probabilities of cancer (one expected)",
                           where=where)
    quals = group.get_qualitative_evaluations(name=codes.CLASSIFICATION)
    if len(quals) != 1:
        raise SpinedxError("a measurement group lacks its classification", where=where)
    region = None
    for item in prob[0][0].ContentSequence if "ContentSequence" in prob[0][0] else []:
        if item.ValueType == "SCOORD" and region is None:
            ref = item.ContentSequence[0].ReferencedSOPSequence[0]
            frame = ref.get("ReferencedFrameNumber")
            region = (str(ref.ReferencedSOPInstanceUID), None if frame is None else int(frame), item.value)
    comments = [str(item.TextValue) for item in group[0].ContentSequence
                if item.ValueType == "TEXT" and str(item.ConceptNameCodeSequence[0].CodeValue) == codes.COMMENT.value]
    return {
        "probability": float(prob[0].value) / 100.0, "uncalibrated": value(codes.UNCALIBRATED),
        "sd": value(codes.FOLD_SD), "classification": _code(quals[0].value),
        "reasons": [_code(q.value) for q in group.get_qualitative_evaluations(name=codes.REFER_REASON)],
        "finding": None if group.finding_type is None else _code(group.finding_type), "region": region,
        "comments": comments, "algorithm": _algorithm(group),
    }


def read_sr(path: str | Path) -> SRSummary:
    """Read a spinedx TID 1500 report (written by :func:`spinedx.interop.write_dicom_results`).

    Every measurement group must state the same patient-level values (they differ only in the lesion slice whose
    box comes first); a report whose groups disagree is refused.

    Raises:
        SpinedxError: not a measurement report with spinedx's groups, or groups that disagree.
    """
    import highdicom as hd

    from spinedx.interop import codes

    where = str(path)
    sr = hd.sr.srread(path)
    content: Any = sr.content  # a MeasurementReport for TID 1500 documents (typed as the generic sequence)
    try:
        groups = content.get_image_measurement_groups()
    except (AttributeError, ValueError) as exc:
        raise SpinedxError(f"not a TID 1500 measurement report ({exc})", where=where) from None
    if not groups:
        raise SpinedxError("the report holds no spinedx measurement group", where=where)
    facts = [_group_facts(g, where) for g in groups]
    same = ("probability", "uncalibrated", "sd", "classification", "reasons", "finding", "comments")
    for f in facts[1:]:
        diff = [k for k in same if f[k] != facts[0][k]]
        if diff:
            raise SpinedxError(f"the measurement groups disagree on {', '.join(diff)}", where=where)
    first = facts[0]
    by_code = {c.value: d for d, c in codes.DECISION_CODES.items()}
    decision = by_code.get(first["classification"][0])
    if decision is None:
        raise SpinedxError(f"unknown classification {first['classification']}", where=where)
    predecessors = [str(s.ReferencedSOPInstanceUID) for item in sr.get("PredecessorDocumentsSequence", [])
                    for series in item.ReferencedSeriesSequence for s in series.ReferencedSOPSequence]
    return SRSummary(
        probability=first["probability"], probability_uncalibrated=first["uncalibrated"],
        spread={} if first["sd"] is None else {codes.FOLD_SD.meaning: first["sd"]}, decision=decision,
        classification=first["classification"], finding_type=first["finding"], refer_reasons=first["reasons"],
        comments=first["comments"], regions=[f["region"] for f in facts if f["region"] is not None],
        algorithm=first["algorithm"], study_instance_uid=str(sr.StudyInstanceUID), patient_id=str(sr.PatientID),
        predecessors=predecessors, n_groups=len(groups))
