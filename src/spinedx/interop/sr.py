"""The prediction as a Comprehensive 3D SR measurement report (DICOM PS3.16 TID 1500), written with highdicom.

Content tree (codes and their choice in :mod:`spinedx.interop.codes`)::

    Imaging Measurement Report (TID 1500)
      Observer: device "spinedx" (TID 1004), procedure reported: Imaging procedure
      Imaging Measurements
        Measurement Group (TID 1411, volumetric ROI): the lesion
          Tracking identifier/UID; Finding type: Vertebral fracture (99SPINEDX); Finding site: Vertebra
          Algorithm identification (TID 4019): name, version, model sha256, threshold, "research use only"
          Image Region: the lesion box (SCOORD POLYLINE, closed) on each T2 lesion image
          Probability of cancer = patient probability, unit 1 (unrounded: DS plus FD FloatingPointValue)
          Probability of cancer (Standard Deviation / Minimum / Maximum): spread over the fold models
          Classification = Malignant | Benign (SNOMED CT)
        Measurement Group (TID 1410, planar ROI), one per lesion slice
          Image Region: the box on that T2 image; Probability of cancer of that slice

The patient probability is the paper's rule (Yeh et al. 2022: the highest slice probability of each patient,
here per fold model, then the mean over the fold models); the call applies the run's threshold to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageRegion,
    Measurement,
    MeasurementReport,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForRegion,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from spinedx.interop import codes
from spinedx.interop.content import ResultContent
from spinedx.interop.geometry import PlaneBox

#: Manufacturer written into results (General Equipment module).
MANUFACTURER = "spinedx (research software)"


def _region(pb: PlaneBox) -> ImageRegion:
    frames = None if pb.plane.frame is None else [pb.plane.frame]
    src = SourceImageForRegion(pb.plane.sop_class_uid, pb.plane.sop_instance_uid, referenced_frame_numbers=frames)
    return ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=pb.polyline, source_image=src)


def _probability(value: float, derivation: Any = None) -> Measurement:
    # The group's algorithm identification covers its measurements (TID 1419), so it is not repeated here.
    return Measurement(name=codes.PROBABILITY, value=float(value), unit=codes.NO_UNITS, derivation=derivation)


def build_sr(
    content: ResultContent,
    boxes: Sequence[PlaneBox],
    evidence: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    device_uid: str,
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

    Returns:
        The SR dataset (highdicom ``Comprehensive3DSR``), not yet written.
    """
    if len(boxes) != len(content.slice_index):
        raise ValueError("one box per lesion slice is needed")
    a = content.algorithm
    algo = AlgorithmIdentification(name=a.name, version=a.version,
                                   parameters=a.parameters(content.threshold, content.aggregation))
    observer = ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_uid, name="spinedx", manufacturer_name=MANUFACTURER, model_name=a.description[:64]),
    )
    finding_site = FindingSite(anatomic_location=codes.VERTEBRA)
    per_model = list(content.per_model)
    lesion_uid = hd.UID()
    groups: list[Any] = [VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=lesion_uid, identifier=f"lesion box on T2 slices {', '.join(map(str, content.slice_index))}"),
        referenced_regions=[_region(pb) for pb in boxes],
        finding_type=codes.VERTEBRAL_FRACTURE,
        finding_sites=[finding_site],
        algorithm_id=algo,
        measurements=[
            _probability(content.probability),
            _probability(_std(per_model), codes.STD),
            _probability(min(per_model), codes.MINIMUM),
            _probability(max(per_model), codes.MAXIMUM),
        ],
        qualitative_evaluations=[QualitativeEvaluation(codes.CLASSIFICATION, codes.CALL_CODES[content.call])],
    )]
    for pb, p in zip(boxes, content.slice_probability, strict=True):
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"lesion box on T2 slice {pb.slice_index}"),
            referenced_region=_region(pb),
            finding_type=codes.VERTEBRAL_FRACTURE,
            finding_sites=[finding_site],
            algorithm_id=algo,
            measurements=[_probability(p)],
        ))
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
    )
    sr.CodingSchemeIdentificationSequence = [codes.private_scheme_item()]
    return sr


def _std(values: Sequence[float]) -> float:
    """Population standard deviation (ddof 0, as ``prediction.json``'s spread)."""
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5
