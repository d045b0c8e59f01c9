"""One series described by the header attributes that decide whether it is the sagittal T1W or T2W series.

:class:`SeriesHeader` is built from one header per series by one code path, :meth:`SeriesHeader.from_dataset`: a
pydicom ``Dataset`` (a file read with ``stop_before_pixels=True``), or a DICOM JSON object (PS3.18 F.2, what
QIDO-RS and WADO-RS ``/metadata`` return) turned into one by pydicom's ``Dataset.from_json``. Nothing here imports
torch or SimpleITK (pydicom only when a header is built), so a DICOMweb client can use it cheaply.

Attributes (PS3.3 sections): SeriesInstanceUID, SeriesNumber, SeriesDescription, Modality (C.7.3.1);
ImageOrientationPatient (C.7.6.2); ImageType (C.7.6.1); EchoTime, RepetitionTime, InversionTime,
ScanningSequence, SequenceVariant, ScanOptions (C.8.3.1 MR Image); ContrastBolusAgent (C.7.6.4).
Enhanced MR (multi-frame) files keep TE/TR and the orientation in functional groups (C.7.6.16, C.8.13.5): the
shared groups are read when the top-level attributes are absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# DICOM tags (group, element as 8 hex digits, the key of DICOM JSON) of the attributes read here.
TAGS: dict[str, str] = {
    "PatientID": "00100020",
    "StudyInstanceUID": "0020000D",
    "StudyDate": "00080020",
    "StudyDescription": "00081030",
    "SeriesInstanceUID": "0020000E",
    "SeriesNumber": "00200011",
    "SeriesDescription": "0008103E",
    "ProtocolName": "00181030",
    "Modality": "00080060",
    "ImageType": "00080008",
    "ImageOrientationPatient": "00200037",
    "EchoTime": "00180081",
    "RepetitionTime": "00180080",
    "InversionTime": "00180082",
    "ScanningSequence": "00180020",
    "SequenceVariant": "00180021",
    "ScanOptions": "00180022",
    "ContrastBolusAgent": "00180010",
    "FrameOfReferenceUID": "00200052",
    "Manufacturer": "00080070",
    "NumberOfFrames": "00280008",
    "NumberOfSeriesRelatedInstances": "00201209",
    "SOPClassUID": "00080016",
}
#: The DICOM JSON keys :meth:`SeriesHeader.from_json` converts: these attributes and the enhanced MR shared
#: functional groups (where TE/TR/IOP live in multi-frame objects, C.7.6.16).
_JSON_TAGS = frozenset(TAGS.values()) | {"52009229"}
# -- what counts as an MR image (one rule for spinedx index and the reader, spinedx.io) ----------------------------
#: SOP classes of MR images (PS3.4 B.5): MR, Enhanced MR, Enhanced MR Color (refused later as colour), Legacy
#: Converted Enhanced MR.
MR_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1",
                                  "1.2.840.10008.5.1.4.1.1.4.3", "1.2.840.10008.5.1.4.1.1.4.4"})
#: Modalities (0008,0060) of objects that are not images (PS3.3 C.7.3.1.1.1): segmentations, reports, presentation
#: states, key objects, registrations, RT structures/plans/doses/records, fiducials, documents, waveforms, models.
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "FID",
                                  "RWV", "DOC", "AU", "ECG", "HD", "EPS", "RESP", "PLAN", "M3D", "SMR"})
_MODALITY_CODE = re.compile(r"[A-Z0-9_]{1,16}")  # a CS value (PS3.5 6.2)
#: The modality a modality-specific SOP class stands for (PS3.4 B.5), used when Modality is absent. Secondary
#: Capture and other modality-neutral classes are not here: without a Modality they are taken as MR.
_SOP_CLASS_MODALITY = {
    "1.2.840.10008.5.1.4.1.1.1": "CR", "1.2.840.10008.5.1.4.1.1.1.1": "DX", "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.2": "CT", "1.2.840.10008.5.1.4.1.1.2.1": "CT", "1.2.840.10008.5.1.4.1.1.2.2": "CT",
    "1.2.840.10008.5.1.4.1.1.3.1": "US", "1.2.840.10008.5.1.4.1.1.6.1": "US", "1.2.840.10008.5.1.4.1.1.6.2": "US",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA", "1.2.840.10008.5.1.4.1.1.12.2": "RF", "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.128": "PT", "1.2.840.10008.5.1.4.1.1.130": "PT", "1.2.840.10008.5.1.4.1.1.128.1": "PT",
    "1.2.840.10008.5.1.4.1.1.481.1": "RTIMAGE", "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.66.1": "REG", "1.2.840.10008.5.1.4.1.1.88.59": "KO",
    **{uid: "MR" for uid in MR_IMAGE_SOP_CLASSES},
}


def sop_class_modality(sop_class_uid: str | None) -> str:
    """The modality a SOP class stands for ('' for modality-neutral classes such as Secondary Capture)."""
    sop = (sop_class_uid or "").strip()
    if sop in _SOP_CLASS_MODALITY:
        return _SOP_CLASS_MODALITY[sop]
    if sop.startswith("1.2.840.10008.5.1.4.1.1.88."):
        return "SR"
    if sop.startswith("1.2.840.10008.5.1.4.1.1.11."):
        return "PR"
    return ""


def allowed_modalities(values: Iterable[str] | None) -> tuple[str, ...]:
    """The modalities accepted besides MR (``--allow-modality``), upper-cased, sorted and checked.

    Raises:
        ValueError: a value that is not a modality code, or the modality of a non-image object (a segmentation
            or a report cannot be read as an MR image whatever is allowed).
    """
    out = set()
    for v in values or ():
        code = str(v).strip().upper()
        if not _MODALITY_CODE.fullmatch(code):
            raise ValueError(f"'{v}' is not a DICOM modality code (such as CT or OT)")
        if code in NON_IMAGE_MODALITIES:
            raise ValueError(f"{code} objects are not images, so they cannot stand for a T1W/T2W series; "
                             "allow image modalities only (such as CT)")
        out.add(code)
    out.discard("MR")
    return tuple(sorted(out))


def allow_modality_option(values: Iterable[str] | None) -> tuple[str, ...]:
    """``--allow-modality`` values checked for a command: :func:`allowed_modalities`, refusing with one line.

    Raises:
        SpinedxError: a value that is not an image modality code (named ``--allow-modality``).
    """
    from spinedx.errors import SpinedxError

    try:
        return allowed_modalities(values)
    except ValueError as exc:
        raise SpinedxError(str(exc), where="--allow-modality") from None


def modality_problem(modality: str | None, sop_class_uid: str | None = None,
                     allow: Iterable[str] = ()) -> str | None:
    """Why a series is not an MR image series spinedx may read, or None when it is (or is allowed).

    The rule (shared by :func:`spinedx.studyindex.select_t1_t2_series` and :func:`spinedx.io.read_image`): Modality
    (0008,0060) ``MR`` is accepted; a non-image modality (:data:`NON_IMAGE_MODALITIES`) is refused as "not an image
    series"; any other modality (CT, US, OT, ...) as "not an MR image series" unless it is in ``allow``. Without a
    Modality a modality-specific SOP class stands for its modality (CT Image Storage for CT, MR Image Storage for
    MR); a modality-neutral one (Secondary Capture) or none is taken as MR, since nothing says otherwise.

    Args:
        modality: Modality as written ('' or None when absent).
        sop_class_uid: SOPClassUID ('' or None when absent).
        allow: modalities accepted besides MR (see :func:`allowed_modalities`).

    Returns:
        ``"not an MR image series (Modality CT)"`` or ``"not an image series (Modality SEG)"`` (and the like), or None.
    """
    given = (modality or "").strip().upper()
    m = given or sop_class_modality(sop_class_uid)
    if not m or m == "MR":
        return None
    what = f"Modality {m}" if given else f"no Modality; SOP class {sop_class_name(str(sop_class_uid).strip())}"
    if m in NON_IMAGE_MODALITIES:
        return f"not an image series ({what})"
    return None if m in {a.strip().upper() for a in allow} else f"not an MR image series ({what})"


def sop_class_name(uid: str) -> str:
    """The SOP class's name when pydicom knows it (``CT Image Storage``), else the UID."""
    try:
        from pydicom.uid import UID

        name = UID(uid).name
    except Exception:  # noqa: BLE001 -- an odd value is shown as written
        return uid
    return str(name) if name and name != uid else uid


@dataclass(frozen=True)
class SeriesHeader:
    """What one series' header says about it (values absent from the header are None / empty).

    Attributes:
        series_uid: SeriesInstanceUID.
        series_number: SeriesNumber.
        description: SeriesDescription (ProtocolName when the description is empty).
        modality: Modality (``MR`` for the series spinedx reads).
        orientation: ImageOrientationPatient, six direction cosines (row, column), or None.
        echo_time: EchoTime (ms).
        repetition_time: RepetitionTime (ms).
        inversion_time: InversionTime (ms).
        scanning_sequence: ScanningSequence values (``SE``, ``IR``, ``GR``, ``EP``, ``RM``).
        sequence_variant: SequenceVariant values (``SK``, ``MTC``, ``SS``, ``TRSS``, ``SP``, ``MP``, ``OSP``, ``NONE``).
        scan_options: ScanOptions values (``FS`` fat saturation, ``SFS``, ``PFF``, ...).
        image_type: ImageType values (``ORIGINAL``/``DERIVED``, ``PRIMARY``/``SECONDARY``, ...).
        contrast_agent: ContrastBolusAgent ('' when none was recorded).
        n_instances: number of instances (files) of the series.
        n_frames: number of image frames (sum of NumberOfFrames; equals ``n_instances`` for single-frame files).
        frame_of_reference_uid: FrameOfReferenceUID.
        manufacturer: Manufacturer.
        study_uid: StudyInstanceUID.
        patient_id: PatientID.
        study_date: StudyDate.
        sop_class_uid: SOPClassUID of the (first) instance.
        files: the files of the series (empty for a header from DICOMweb).
    """

    series_uid: str
    series_number: int | None = None
    description: str = ""
    modality: str = ""
    orientation: tuple[float, ...] | None = None
    echo_time: float | None = None
    repetition_time: float | None = None
    inversion_time: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    image_type: tuple[str, ...] = ()
    contrast_agent: str = ""
    n_instances: int = 0
    n_frames: int = 0
    frame_of_reference_uid: str = ""
    manufacturer: str = ""
    study_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    sop_class_uid: str = ""
    files: tuple[str, ...] = field(default=(), repr=False, compare=False)

    # -- constructors ------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, ds: Any, *, n_instances: int = 1, n_frames: int | None = None,
                     files: tuple[str, ...] = ()) -> SeriesHeader:
        """Build from one pydicom ``Dataset`` of the series (pixel data not needed).

        Args:
            ds: a dataset read with ``pydicom.dcmread(path, stop_before_pixels=True)``.
            n_instances: number of instances of the series (the caller counts the files).
            n_frames: number of frames in the series; None: ``n_instances`` times this file's NumberOfFrames.
            files: the series' file paths.
        """
        def get(name: str) -> Any:
            return ds.get(name, None)

        shared = _first_item(get("SharedFunctionalGroupsSequence"))
        iop = get("ImageOrientationPatient")
        if iop is None and shared is not None:
            iop = _nested(shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        te = get("EchoTime")
        if te is None and shared is not None:
            te = _nested(shared, "MREchoSequence", "EffectiveEchoTime")
        tr = get("RepetitionTime")
        if tr is None and shared is not None:
            tr = _nested(shared, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
        ti = get("InversionTime")
        if ti is None and shared is not None:
            ti = _nested(shared, "MRModifierSequence", "InversionTimes")
        frames = _to_int(get("NumberOfFrames")) or 1
        return cls(
            series_uid=str(get("SeriesInstanceUID") or ""),
            series_number=_to_int(get("SeriesNumber")),
            description=_text(get("SeriesDescription")) or _text(get("ProtocolName")),
            modality=_text(get("Modality")).upper(),
            orientation=_floats(iop, 6),
            echo_time=_to_float(te),
            repetition_time=_to_float(tr),
            inversion_time=_to_float(ti),
            scanning_sequence=_codes(get("ScanningSequence")),
            sequence_variant=_codes(get("SequenceVariant")),
            scan_options=_codes(get("ScanOptions")),
            image_type=_codes(get("ImageType")),
            contrast_agent=_text(get("ContrastBolusAgent")),
            n_instances=int(n_instances),
            n_frames=int(n_frames if n_frames is not None else n_instances * frames),
            frame_of_reference_uid=str(get("FrameOfReferenceUID") or ""),
            manufacturer=_text(get("Manufacturer")),
            study_uid=str(get("StudyInstanceUID") or ""),
            patient_id=_text(get("PatientID")),
            study_date=_text(get("StudyDate")),
            sop_class_uid=str(get("SOPClassUID") or ""),
            files=tuple(str(f) for f in files),
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, n_instances: int | None = None) -> SeriesHeader:
        """Build from a DICOM JSON object (PS3.18 F.2): one QIDO-RS result or one WADO-RS metadata instance.

        The object is turned into a pydicom ``Dataset`` (``Dataset.from_json``) and read by :meth:`from_dataset`, so a
        file and its DICOM JSON give the same header by construction. Only the attributes read here are converted; an
        element without ``vr`` takes the data dictionary's, and one whose value does not fit its VR is treated as
        absent, as an unreadable value in a file is. A QIDO-RS series result carries NumberOfSeriesRelatedInstances
        (0020,1209), used when ``n_instances`` is None; instance metadata adds TE/TR/IOP. Absent attributes stay
        None, and :func:`spinedx.studyindex.select_t1_t2_series` says so.

        Args:
            obj: the JSON object (already parsed; keys are 8-digit hex tags such as ``"0020000E"``).
            n_instances: number of instances when the caller knows it.
        """
        ds = dataset_from_json(obj)
        n = n_instances if n_instances is not None else _to_int(ds.get("NumberOfSeriesRelatedInstances", None)) or 0
        return cls.from_dataset(ds, n_instances=n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (used in ``index.json``)."""
        d = asdict(self)
        d.pop("files")
        d["orientation"] = list(self.orientation) if self.orientation is not None else None
        for k in ("scanning_sequence", "sequence_variant", "scan_options", "image_type"):
            d[k] = list(d[k])
        return d


def dataset_from_json(obj: Mapping[str, Any]) -> Any:
    """The attributes of :data:`TAGS` (and the enhanced MR shared functional groups) of a DICOM JSON object as a
    pydicom ``Dataset`` (``Dataset.from_json``, element by element: one that pydicom cannot convert is left out; a
    missing ``vr`` is the data dictionary's). Keys may be upper- or lower-case hex."""
    from pydicom import Dataset
    from pydicom.datadict import dictionary_VR

    ds = Dataset()
    for key, element in obj.items():
        tag = str(key).upper()
        if tag not in _JSON_TAGS or not isinstance(element, Mapping):
            continue
        if "vr" not in element:  # required by PS3.18 F.2.3 but left out by some servers: the dictionary's VR
            element = {**element, "vr": dictionary_VR(tag)}
        try:
            ds.update(Dataset.from_json({tag: element}))
        except Exception:  # noqa: BLE001 -- a value that does not fit its VR: absent, as an unreadable one in a file
            continue
    return ds


# -- value helpers (pydicom values) --------------------------------------------
def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        v = "\\".join(str(x) for x in v)
    return str(v).strip()


def _codes(v: Any) -> tuple[str, ...]:
    """A multi-valued code string as upper-case values (``"SE\\IR"`` and ``["SE", "IR"]`` alike)."""
    if v is None:
        return ()
    if isinstance(v, str):
        items = v.split("\\")
    elif isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        items = [str(x) for x in v]
    else:
        items = [str(v)]
    return tuple(s.strip().upper() for s in items if str(s).strip())


def _to_float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        if not len(v):
            return None
        v = v[0]
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _to_int(v: Any) -> int | None:
    f = _to_float(v)
    return None if f is None else int(f)


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.split("\\")
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _first_item(seq: Any) -> Any:
    try:
        return seq[0] if seq is not None and len(seq) else None
    except (TypeError, IndexError):
        return None


def _nested(item: Any, seq_name: str, attr: str) -> Any:
    inner = _first_item(item.get(seq_name, None))
    return None if inner is None else inner.get(attr, None)
