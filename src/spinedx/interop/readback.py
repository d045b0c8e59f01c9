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
        probability: patient probability of malignancy.
        spread: ``{"Standard Deviation": .., "Minimum": .., "Maximum": ..}`` over the fold models.
        classification: the coded call, ``(code value, scheme, meaning)``.
        finding_type: ``(code value, scheme, meaning)`` of the finding.
        regions: per referenced image, ``(SOPInstanceUID, frame or None, (5, 2) polyline)`` of the lesion group.
        slice_probabilities: per planar group, ``(SOPInstanceUID, probability)``.
        algorithm: TID 4019 name, version and parameters.
        study_instance_uid: the SR's study.
        patient_id: the SR's PatientID.
    """

    probability: float
    spread: dict[str, float]
    classification: tuple[str, str, str]
    finding_type: tuple[str, str, str] | None
    regions: list[tuple[str, int | None, Any]]
    slice_probabilities: list[tuple[str, float]]
    algorithm: dict[str, Any] = field(default_factory=dict)
    study_instance_uid: str = ""
    patient_id: str = ""

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


def read_sr(path: str | Path) -> SRSummary:
    """Read a spinedx TID 1500 report (written by :func:`spinedx.interop.write_dicom_results`).

    Raises:
        SpinedxError: not a measurement report with spinedx's lesion group.
    """
    import highdicom as hd

    from spinedx.interop import codes

    sr = hd.sr.srread(path)
    content: Any = sr.content  # a MeasurementReport for TID 1500 documents (typed as the generic sequence)
    try:
        vol = content.get_volumetric_roi_measurement_groups()
        planar = content.get_planar_roi_measurement_groups()
    except (AttributeError, ValueError) as exc:
        raise SpinedxError(f"not a TID 1500 measurement report ({exc})", where=str(path)) from None
    if len(vol) != 1:
        raise SpinedxError(f"expected one lesion measurement group, found {len(vol)}", where=str(path))
    lesion = vol[0]
    probs = lesion.get_measurements(name=codes.PROBABILITY)
    main = [m for m in probs if m.derivation is None]
    spread = {str(m.derivation.meaning): float(m.value) for m in probs if m.derivation is not None}
    quals = lesion.get_qualitative_evaluations(name=codes.CLASSIFICATION)
    if len(main) != 1 or len(quals) != 1:
        raise SpinedxError("the lesion group lacks its probability or classification", where=str(path))
    regions = []
    for r in lesion.roi or []:
        ref = r.ContentSequence[0].ReferencedSOPSequence[0]
        frame = ref.get("ReferencedFrameNumber")
        regions.append((str(ref.ReferencedSOPInstanceUID), None if frame is None else int(frame), r.value))
    per_slice = []
    for g in planar:
        ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
        prob = float(g.get_measurements(name=codes.PROBABILITY)[0].value)
        per_slice.append((str(ref.ReferencedSOPInstanceUID), prob))
    return SRSummary(
        probability=float(main[0].value), spread=spread, classification=_code(quals[0].value),
        finding_type=None if lesion.finding_type is None else _code(lesion.finding_type), regions=regions,
        slice_probabilities=per_slice, algorithm=_algorithm(lesion), study_instance_uid=str(sr.StudyInstanceUID),
        patient_id=str(sr.PatientID))
