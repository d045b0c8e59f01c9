"""The prediction as a Comprehensive 3D SR measurement report (DICOM PS3.16 TID 1500), written with highdicom.

Content tree (codes and their choice in :mod:`spinedx.interop.codes`)::

    Imaging Measurement Report (TID 1500)
      Observer: device "spinedx" (TID 1004), procedure reported: Imaging procedure
      Imaging Measurements
        Measurement Group (TID 1501), the patient's result (no image region of its own)
          Tracking identifier/UID; Finding: the decision (Malignant | Benign | Indeterminate result)
          Finding site: Vertebra; Algorithm identification (TID 4019): name, version, model sha256, threshold, ...
          Probability of cancer = the patient probability stated (calibrated when the run has a calibrator), in %
          Uncalibrated probability (when the stated one is calibrated); Fold-model SD, lowest, highest (private)
          Classification = the decision; Reason to refer = each reason (private codes), when it refers
          Comment = the decision in words; Comment = "trained on a synthetic cohort; research use only"
        Measurement Group (TID 1501), one per lesion slice
          Tracking identifier/UID; Finding: the decision; Finding site; Algorithm identification
          Probability of cancer = that slice's probability, in %
            > INFERRED FROM SCOORD POLYLINE: the lesion box on that stored T2 image
          Classification = the decision; Comment = the decision in words; Comment = provenance

Why this shape (OHIF v3.13 read as PS3.16 allows; docs/interop.md "What a PACS viewer shows"): OHIF draws one
region per measurement group (the first) and prints every NUM of that group on the image, so each lesion slice has
its own group holding exactly one probability, and the patient-level values sit in a group without a region, which
OHIF neither draws nor prints over a slice's box. The region is the measurement's INFERRED FROM child (TID 300 via
TID 1501), where OHIF's measurements panel looks for it. OHIF prints a TEXT "Comment" of a group: that is where the
decision is stated in words; it reads no CODE qualitative evaluation. Every value is also coded (Finding,
Classification, reasons) for software readers (:func:`spinedx.interop.read_sr`).

The patient probability is the paper's rule (Yeh et al. 2022: the highest slice probability of each patient, here
per fold model, then the mean over the fold models), calibrated when the run carries a calibrator; the decision
is the prediction's (issue 20: benign, malignant, or refer with its reasons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    CoordinatesForMeasurement,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from spinedx.interop import codes
from spinedx.interop.content import ResultContent
from spinedx.interop.geometry import PlaneBox

#: Manufacturer written into results (General Equipment module).
MANUFACTURER = "spinedx (research software)"
#: Tracking identifier of the measurement groups (each names its slice after it). It starts with the tag OHIF v3
#: (cornerstone3D's SR adapters) gives a rectangle: OHIF loads a group into its measurements panel only when its
#: tracking identifier names one of its tools (a SCOORD under the first NUM is then where it finds the region).
LESION_GROUP = "Cornerstone3DTools@^0.1.0:RectangleROI spinedx lesion"
#: SOP Class UID of Comprehensive 3D SR Storage.
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@dataclass(frozen=True)
class SRReference:
    """The identifiers of an SR document, as a Predecessor Documents Sequence item names them (PS3.3 C.17.2.3).

    Attributes:
        study_instance_uid: its study.
        series_instance_uid: its series.
        sop_instance_uid: the document.
        sop_class_uid: its SOP class (Comprehensive 3D SR for spinedx's).
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str = COMPREHENSIVE_3D_SR

    def to_dict(self) -> dict[str, str]:
        """JSON form (``prediction.json``)."""
        return {"study_instance_uid": self.study_instance_uid, "series_instance_uid": self.series_instance_uid,
                "sop_instance_uid": self.sop_instance_uid, "sop_class_uid": self.sop_class_uid}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SRReference:
        """From :meth:`to_dict`'s form."""
        return cls(str(d["study_instance_uid"]), str(d["series_instance_uid"]), str(d["sop_instance_uid"]),
                   str(d.get("sop_class_uid") or COMPREHENSIVE_3D_SR))

    @classmethod
    def of(cls, ds: Any) -> SRReference:
        """The reference of an SR dataset."""
        return cls(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID))

    def dataset(self) -> Dataset:
        """The four UIDs as a dataset (highdicom's ``previous_versions`` item)."""
        ds = Dataset()
        ds.StudyInstanceUID = self.study_instance_uid
        ds.SeriesInstanceUID = self.series_instance_uid
        ds.SOPInstanceUID = self.sop_instance_uid
        ds.SOPClassUID = self.sop_class_uid
        return ds


def _percent(p: float) -> float:
    return float(p) * 100.0


def _source(pb: PlaneBox) -> SourceImageForRegion:
    frames = None if pb.plane.frame is None else [pb.plane.frame]
    return SourceImageForRegion(pb.plane.sop_class_uid, pb.plane.sop_instance_uid, referenced_frame_numbers=frames)


def _comments(group: MeasurementsAndQualitativeEvaluations, lines: Sequence[str]) -> None:
    """Append TEXT "Comment" items (TID 1501 row 12, qualitative evaluations in text form) to a group."""
    for line in lines:
        group[0].ContentSequence.append(TextContentItem(
            name=codes.COMMENT, value=line[:1024], relationship_type=RelationshipTypeValues.CONTAINS))


def _evaluations(content: ResultContent) -> list[QualitativeEvaluation]:
    d = content.decision
    out = [QualitativeEvaluation(codes.CLASSIFICATION, codes.DECISION_CODES[d.decision])]
    for reason in d.refer_reasons:
        code = codes.REASON_CODES.get(reason) or CodedConcept(reason.upper()[:16], codes.PRIVATE_SCHEME,
                                                               reason.replace("_", " ")[:64])
        out.append(QualitativeEvaluation(codes.REFER_REASON, code))
    return out


def build_sr(
    content: ResultContent,
    boxes: Sequence[PlaneBox],
    evidence: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    device_uid: str,
    predecessor: SRReference | None = None,
) -> Comprehensive3DSR:
    """The TID 1500 report of one prediction.

    Args:
        content: what to say.
        boxes: the lesion box on each referenced T2 image, in ``content.slice_index`` order.
        evidence: reference datasets of the source images; the first holds the patient/study identifiers
            (:func:`spinedx.interop.identity.identity_of`) and is the only source of copied attributes.
        series_instance_uid: the SR's new series.
        sop_instance_uid: the SR's instance UID.
        series_number: SeriesNumber of the new series.
        device_uid: UID of the observing device (spinedx).
        predecessor: the earlier spinedx SR of this case that this one supersedes (Predecessor Documents Sequence,
            PS3.3 C.17.2).

    Returns:
        The SR dataset (highdicom ``Comprehensive3DSR``), not yet written.
    """
    if len(boxes) != len(content.slice_index):
        raise ValueError("one box per lesion slice is needed")
    a = content.algorithm
    d = content.decision
    algo = AlgorithmIdentification(name=a.name, version=a.version,
                                   parameters=a.parameters(content.threshold, content.aggregation))
    observer = ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_uid, name="spinedx", manufacturer_name=MANUFACTURER, model_name=a.description[:64]),
    )
    finding = codes.DECISION_CODES[d.decision]
    site = [FindingSite(anatomic_location=codes.VERTEBRA)]
    regions = [CoordinatesForMeasurement(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=pb.polyline,
                                         source_image=_source(pb)) for pb in boxes]
    slices = ", ".join(str(k + 1) for k in content.slice_index)  # numbered from 1, as viewers show them
    groups: list[Any] = []
    for i, pb in enumerate(boxes):
        # The probability is inferred from the box on every lesion slice; this group's own slice comes first, the
        # one region a viewer draws for the group (OHIF v3 draws the first).
        own_first = [regions[i], *regions[:i], *regions[i + 1:]]
        values = [Measurement(name=codes.PROBABILITY, value=_percent(content.probability), unit=codes.PERCENT,
                              referenced_coordinates=own_first)]
        if d.probability_uncalibrated is not None:
            values.append(Measurement(name=codes.UNCALIBRATED, value=_percent(d.probability_uncalibrated),
                                      unit=codes.PERCENT))
        values.append(Measurement(name=codes.FOLD_SD, value=_percent(_std(list(content.per_model))),
                                  unit=codes.PERCENT))
        group = MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(
                uid=hd.UID(), identifier=f"{LESION_GROUP}, T2 slice {pb.slice_index + 1} (lesion slices {slices})"),
            finding_type=finding, finding_sites=site, algorithm_id=algo, measurements=values,
            qualitative_evaluations=_evaluations(content))
        _comments(group, [d.statement(), d.provenance()])
        groups.append(group)
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    sr = Comprehensive3DSR(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # a research result, never the definitive means of communicating the finding
        is_verified=False,
        series_description="spinedx AI result (research use only)",
        manufacturer_model_name="spinedx",
        software_versions=a.version,
        previous_versions=None if predecessor is None else [predecessor.dataset()],
    )
    sr.CodingSchemeIdentificationSequence = [codes.private_scheme_item()]
    return sr


def _std(values: Sequence[float]) -> float:
    """Population standard deviation (ddof 0, as ``prediction.json``'s spread)."""
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5
