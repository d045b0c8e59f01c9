"""Write a synthetic series as MR Image Storage objects (one file per slice) with pydicom.

Modules of the MR Image IOD (DICOM PS3.3 A.4): Patient (C.7.1.1), General Study (C.7.2.1),
General Series (C.7.3.1), Frame of Reference (C.7.4.1), General Equipment (C.7.5.1), General
Image (C.7.6.1), Image Plane (C.7.6.2), Image Pixel (C.7.6.3), MR Image (C.8.3.1), VOI LUT
(C.11.2) and SOP Common (C.12.1). UIDs are name-based UUIDs derived from the cohort seed
(``2.25.<uuid>``, PS3.5 B.2), and all dates are fixed, so the same seed gives the same bytes.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from spinedx.synth.scanner import FOV_MM, RECON, SLICE_MM, SeriesSpec

STUDY_DATE = "20200101"
STUDY_TIME = "090000"
MANUFACTURER = "spinedx synthetic phantom"
MODEL = "spinedx.synth (simulated 1.5 T)"
#: Said in every file (ImageComments) and in the series description: no file may pass for a patient's.
SYNTHETIC_NOTE = "SYNTHETIC PHANTOM - NOT A PATIENT"


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/spinedx/synth")


def uid(*parts: object) -> UID:
    """Deterministic UID from the given parts (same parts, same UID).

    A name-based (version 5) UUID under the ``2.25`` root (PS3.5 B.2): unique without a
    registered root, and reproducible from the cohort seed and the object's identity.
    """
    return UID("2.25." + str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)).int))


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters."""
    txt = f"{value:.6f}".rstrip("0").rstrip(".")
    if txt in ("-0", ""):
        txt = "0"
    return txt[:16]


def write_series(
    folder: str | Path,
    pixels: np.ndarray,
    spec: SeriesSpec,
    positions: list[np.ndarray],
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    patient: dict[str, str],
    seed: int,
) -> list[Path]:
    """Write ``pixels`` (nz, 512, 512) uint16 as one DICOM file per slice (IM0001.dcm, ...).

    Args:
        folder: output folder (created).
        pixels: stored values, slice ``k`` at ``positions[k]``.
        spec: the sequence (TR, TE, matrix, ...).
        positions: ImagePositionPatient of each slice (LPS mm of the first pixel centre).
        row_dir: direction of increasing column index (first ImageOrientationPatient triplet).
        col_dir: direction of increasing row index (second triplet).
        patient: ``id``, ``sex``, ``age`` (pseudonymous).
        seed: cohort seed (UIDs derive from it).

    Returns:
        The written files in slice order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pid = patient["id"]
    study_uid = uid(seed, pid, "study")
    series_uid = uid(seed, pid, spec.name, "series")
    frame_uid = uid(seed, pid, "frame")  # same FoR: both series share the scanner frame
    nz = pixels.shape[0]
    spacing = FOV_MM / RECON
    iop = [_ds(v) for v in (*row_dir, *col_dir)]
    normal = np.cross(row_dir, col_dir)
    files = []
    for k in range(nz):
        sop_uid = uid(seed, pid, spec.name, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = uid("implementation")
        meta.ImplementationVersionName = "SPINEDX_SYNTH"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ImageComments = SYNTHETIC_NOTE
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
        ds.StudyTime = STUDY_TIME
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"09{10 + 10 * spec.series_number:02d}00"
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = MANUFACTURER
        ds.InstitutionName = "spinedx synthetic cohort"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MR SPINE (synthetic)"
        ds.SeriesDescription = f"{spec.description} SYNTHETIC"
        ds.ManufacturerModelName = MODEL
        ds.PatientName = f"SYNTHETIC^{pid}"  # family name SYNTHETIC: every viewer's patient list says so
        ds.PatientID = pid
        ds.PatientBirthDate = ""
        ds.PatientSex = patient.get("sex", "O")
        ds.PatientAge = f"{int(patient.get('age', 0)):03d}Y"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "synthetic phantom, no real patient"
        ds.BodyPartExamined = "SPINE"
        ds.ScanningSequence = spec.sequence
        ds.SequenceVariant = spec.variant
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = _ds(SLICE_MM)
        ds.RepetitionTime = _ds(spec.tr)
        ds.EchoTime = _ds(spec.te)
        ds.NumberOfAverages = "2"
        ds.ImagingFrequency = "63.86"
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = _ds(SLICE_MM)
        ds.EchoTrainLength = str(spec.echo_train)
        ds.PercentSampling = "100"
        ds.PercentPhaseFieldOfView = "100"
        ds.PixelBandwidth = "122"
        ds.ProtocolName = "SPINE SAG"
        ds.ReceiveCoilName = "SPINE ARRAY"
        ds.TransmitCoilName = "BODY"
        ds.AcquisitionMatrix = [spec.matrix[0], 0, 0, spec.matrix[1]]
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.FlipAngle = "90"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = spec.series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        pos = positions[k]
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(np.dot(pos, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "600"
        ds.WindowWidth = "1200"
        ds.PixelData = np.ascontiguousarray(pixels[k], dtype="<u2").tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_mask(path: str | Path, mask: np.ndarray, affine_lps: np.ndarray) -> Path:
    """Write a lesion mask as NIfTI-1 (uint8, gzip) in the geometry of a series.

    Args:
        path: the ``.nii.gz`` file (parent created).
        mask: (nz, rows, cols) 0/1, indexed like the series' ``Image.array[k, i, j]``.
        affine_lps: 4x4 index ``(x=column, y=row, z=slice)`` -> LPS mm of that series (the DICOM
            geometry, PS3.3 C.7.6.2.1.1).

    The file's axes are (column, row, slice) and its qform and sform (code 1, scanner) hold the
    same affine in NIfTI's RAS, so :func:`spinedx.io.read_image` gives back ``mask`` with the
    series' grid and affine. nibabel writes gzip without a time stamp: same mask, same bytes.
    """
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8).transpose(2, 1, 0))
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_lps, dtype=np.float64)
    img = nib.Nifti1Image(data, ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"spinedx synthetic lesion mask"
    nib.save(img, str(path))
    return path
