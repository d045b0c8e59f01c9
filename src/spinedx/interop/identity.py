"""The source study's identifiers, and nothing else, for objects that join that study.

A derived object must file under the same patient and study in the PACS, so it repeats the Patient module's
identifying attributes and the General Study module's identifiers (PS3.3 C.7.1.1, C.7.2.1). Nothing else is
copied from the source (no age, weight, institution, descriptions), and no identifier is invented: an attribute
the source lacks stays absent or, when the module requires it (Type 2), empty.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from spinedx.errors import SpinedxError

#: Patient module attributes copied (identity, and its de-identification status).
PATIENT_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientIdentityRemoved", "DeidentificationMethod",
)
#: General Study module attributes copied.
STUDY_KEYWORDS: tuple[str, ...] = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
#: Type 2 attributes among them: present (maybe empty) in every result.
TYPE2_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
COPIED_KEYWORDS: tuple[str, ...] = ("SpecificCharacterSet", *PATIENT_KEYWORDS, *STUDY_KEYWORDS)


def identity_of(ds: Any) -> Dataset:
    """A dataset holding only the patient and study identifiers of ``ds`` (and its character set)."""
    out = Dataset()
    for kw in COPIED_KEYWORDS:
        if kw in ds:
            out[kw] = ds[kw]
    for kw in TYPE2_KEYWORDS:
        if kw not in out:
            setattr(out, kw, "")
    return out


def check_same_study(t1: Any, t2: Any, *, where: str | None = None) -> None:
    """Refuse a T1/T2 pair from different patients or studies: one result cannot belong to both.

    Raises:
        SpinedxError: PatientID or StudyInstanceUID differ.
    """
    for kw in ("PatientID", "StudyInstanceUID"):
        a, b = str(t1.get(kw, "") or ""), str(t2.get(kw, "") or "")
        if a != b:
            raise SpinedxError(f"the T1 and T2 series have different {kw} ({a!r} vs {b!r}); a DICOM result "
                               "belongs to one study: choose two series of the same study", where=where)


def reference_dataset(ds: Any, identity: Dataset | None = None) -> Dataset:
    """The UIDs that reference an instance (for SR evidence), with ``identity`` added when given."""
    ref = Dataset()
    if identity is not None:
        ref.update(identity)
    for kw in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        setattr(ref, kw, ds[kw].value)
    return ref
