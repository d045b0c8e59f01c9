"""Write small DICOM MR series with explicit geometry, for tests (pydicom only).

Independent of spinedx's reader on purpose, so the reader is tested against a second
implementation of the standard (PS3.3 C.7.6.2 Image Plane Module).

Geometry arguments follow spinedx's conventions: ``array[k, i, j]`` is slice ``k``, row ``i``,
column ``j``; voxel ``(j, i, k)`` lies at
``origin + j * sx * row_dir + i * sy * col_dir + k * sz * slice_dir`` (LPS mm), where
``slice_dir`` defaults to the normal ``row_dir x col_dir``. Pass another ``slice_dir`` for a
gantry tilt / sheared stack. The default orientation is sagittal: rows run anterior to
posterior (+y), columns head to feet (-z).

Typical use::

    from dicomfixtures import write_series, write_image_series
    files = write_series(tmp_path / "t2", vol, spacing=(0.5, 0.5, 4.0), origin=(-20, -100, 50))
    files = write_image_series(tmp_path / "t1", spinedx_image, series_uid="1.2.3")
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, MRImageStorage, generate_uid

SAGITTAL_ROW = (0.0, 1.0, 0.0)
SAGITTAL_COL = (0.0, 0.0, -1.0)


def _ds_number(x: float) -> str:
    """A decimal string (DS, at most 16 characters) for ``x``."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s[:16]


def write_series(
    folder: str | Path,
    array: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    row_dir: Sequence[float] = SAGITTAL_ROW,
    col_dir: Sequence[float] = SAGITTAL_COL,
    slice_dir: Sequence[float] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    series_description: str = "T2 SAG",
    series_number: int = 1,
    patient_id: str = "TEST001",
    modality: str = "MR",
    transfer_syntax: str | None = None,
    shuffle: bool = False,
    instance_numbers: Sequence[int] | str | None = "reversed",
    positions: Sequence[Sequence[float]] | None = None,
    orientations: Sequence[Sequence[float]] | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    rescale: tuple[float, float] | None = None,
    repetition_time: float = 3200.0,
    echo_time: float = 90.0,
    slice_thickness: float | None = None,
    prefix: str = "IM",
    seed: int = 0,
) -> list[Path]:
    """Write ``array`` (nz, ny, nx) as one DICOM MR series, one file per slice.

    Args:
        folder: output folder (created).
        array: integer-valued voxels; stored as int16 (or uint16 if values exceed int16).
            With ``rescale=(slope, intercept)`` the stored values are ``(array - intercept) / slope``.
        spacing: (sx, sy, sz) mm: column step, row step, slice step.
        origin: LPS position of voxel (0, 0, 0).
        row_dir, col_dir: ImageOrientationPatient direction cosines.
        slice_dir: direction of the slice step (default: the normal ``row_dir x col_dir``).
        series_uid: SeriesInstanceUID (a new one by default).
        study_uid: StudyInstanceUID (a new one by default).
        frame_uid: FrameOfReferenceUID (a new one by default).
        series_description, series_number, patient_id, modality: header values.
        transfer_syntax: a pydicom UID string; compressed syntaxes are encoded with
            ``Dataset.compress`` (RLE, JPEG-LS lossless, JPEG 2000 lossless: openjpeg needs
            images of at least about 32x32), JPEG baseline through Pillow (values 0..255).
        shuffle: write the files in a random order (file names carry no order either).
        instance_numbers: "reversed" (default: misleading, descending along the normal),
            "forward", or an explicit list; None leaves InstanceNumber out.
        positions: override every slice's ImagePositionPatient (e.g. duplicates).
        orientations: override every slice's ImageOrientationPatient (6 values each).
        image_type: ImageType values (use ("ORIGINAL", "PRIMARY", "LOCALIZER") for a scout).
        rescale: (RescaleSlope, RescaleIntercept) to write.
        repetition_time, echo_time: TR/TE in ms.
        slice_thickness: SliceThickness to write (default: a wrong value, 2 x sz, so a reader that
            trusts it is caught).
        prefix: file name prefix.
        seed: seed of the shuffle and of the file names.

    Returns:
        The written files, in slice order k = 0..nz-1.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"array must be (nz, ny, nx), got {arr.shape}")
    nz, ny, nx = arr.shape
    sx, sy, sz = (float(v) for v in spacing)
    row = np.asarray(row_dir, dtype=float)
    col = np.asarray(col_dir, dtype=float)
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    sdir = np.cross(row, col) if slice_dir is None else np.asarray(slice_dir, dtype=float)
    sdir = sdir / np.linalg.norm(sdir)
    org = np.asarray(origin, dtype=float)

    stored = arr.astype(np.float64)
    if rescale is not None:
        stored = (stored - rescale[1]) / rescale[0]
    stored = np.rint(stored)
    dtype = np.int16 if stored.min() >= -32768 and stored.max() <= 32767 else np.uint16
    stored = stored.astype(dtype)

    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    rng = random.Random(seed)
    if isinstance(instance_numbers, str):
        inst = list(range(nz, 0, -1)) if instance_numbers == "reversed" else list(range(1, nz + 1))
    else:
        inst = None if instance_numbers is None else list(instance_numbers)

    order = list(range(nz))
    if shuffle:
        rng.shuffle(order)
    paths: list[Path | None] = [None] * nz
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        sop_uid = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = f"{prefix}{rng.randrange(16**8):08x}.dcm" if shuffle else f"{prefix}{n:04d}.dcm"
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientName = "Test^Phantom"
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.ImageType = list(image_type)
        ds.RepetitionTime = _ds_number(repetition_time)
        ds.EchoTime = _ds_number(echo_time)
        if inst is not None:
            ds.InstanceNumber = inst[k]
        ipp = org + k * sz * sdir if positions is None else np.asarray(positions[k], dtype=float)
        iop = np.concatenate([row, col]) if orientations is None else np.asarray(orientations[k], dtype=float)
        ds.ImagePositionPatient = [_ds_number(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds_number(v) for v in iop]
        ds.PixelSpacing = [_ds_number(sy), _ds_number(sx)]  # (row spacing, column spacing)
        ds.SliceThickness = _ds_number(2 * sz if slice_thickness is None else slice_thickness)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if dtype == np.int16 else 0
        if rescale is not None:
            ds.RescaleSlope = _ds_number(rescale[0])
            ds.RescaleIntercept = _ds_number(rescale[1])
        if transfer_syntax == JPEGBaseline8Bit:
            _encode_jpeg_baseline(ds, stored[k])
        else:
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            if transfer_syntax is not None and transfer_syntax != ExplicitVRLittleEndian:
                ds.compress(transfer_syntax)
        ds.save_as(path, enforce_file_format=True)
        paths[k] = path
    return [p for p in paths if p is not None]


def _encode_jpeg_baseline(ds: Dataset, plane: np.ndarray) -> None:
    """Lossy 8-bit JPEG baseline (process 1) via Pillow; pydicom has no encoder for it."""
    import io

    from PIL import Image as PILImage

    if plane.min() < 0 or plane.max() > 255:
        raise ValueError("JPEG baseline needs values in 0..255")
    buf = io.BytesIO()
    PILImage.fromarray(plane.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=95)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"


def write_image_series(folder: str | Path, image: object, **kwargs: object) -> list[Path]:
    """Write a :class:`spinedx.io.Image` (orthonormal in-plane axes) as a DICOM series.

    The row/column directions, spacing, origin and slice step come from ``image.affine``
    (a sheared z axis is written as a tilted stack).
    """
    aff = np.asarray(image.affine)  # type: ignore[attr-defined]
    sp = np.linalg.norm(aff[:3, :3], axis=0)
    return write_series(
        folder, np.asarray(image.array), spacing=tuple(sp), origin=tuple(aff[:3, 3]),  # type: ignore[attr-defined]
        row_dir=tuple(aff[:3, 0] / sp[0]), col_dir=tuple(aff[:3, 1] / sp[1]), slice_dir=tuple(aff[:3, 2] / sp[2]),
        **kwargs,  # type: ignore[arg-type]
    )


def write_non_image(path: str | Path, series_uid: str | None = None) -> Path:
    """Write a DICOM file without pixel data (a Basic Text SR stub) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientID = "TEST001"
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_positions(files: Sequence[Path]) -> np.ndarray:
    """ImagePositionPatient of each file, (n, 3)."""
    return np.array([[float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient]
                     for f in files])


def write_multiframe(
    path: str | Path,
    array: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    row_dir: Sequence[float] = SAGITTAL_ROW,
    col_dir: Sequence[float] = SAGITTAL_COL,
    frame_order: Sequence[int] | None = None,
    series_uid: str | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
) -> Path:
    """Write ``array`` (nz, ny, nx) as one Enhanced MR (multi-frame) file.

    Geometry sits in the functional groups (PS3.3 C.7.6.16): orientation, pixel spacing and
    rescale in the shared group, each frame's position in its per-frame group. ``frame_order``
    lists which slice each stored frame holds (default: reversed, so the file order misleads).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    nz, ny, nx = arr.shape
    sx, sy, sz = (float(v) for v in spacing)
    row, col = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row, col)
    order = list(range(nz))[::-1] if frame_order is None else list(frame_order)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientID = "TEST001"
    ds.SeriesDescription = "enhanced sag"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    po, pm, pvt = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = [_ds_number(v) for v in np.concatenate([row, col])]
    pm.PixelSpacing = [_ds_number(sy), _ds_number(sx)]
    pm.SliceThickness = _ds_number(sz)
    pvt.RescaleSlope, pvt.RescaleIntercept = _ds_number(rescale[0]), _ds_number(rescale[1])
    pvt.RescaleType = "US"
    shared.PlaneOrientationSequence = [po]
    shared.PixelMeasuresSequence = [pm]
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in order:
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [_ds_number(v) for v in np.asarray(origin, float) + k * sz * normal]
        item.PlanePositionSequence = [pp]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    stored = np.rint((arr.astype(np.float64) - rescale[1]) / rescale[0]).astype(np.int16)
    ds.PixelData = np.ascontiguousarray(stored[order]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
