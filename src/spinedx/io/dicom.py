"""Reading DICOM MR series into :class:`spinedx.io.Image` with correct geometry.

The work is split by role: :mod:`spinedx.io.discovery` finds and groups the files and reads their
headers, :mod:`spinedx.io.geometry` orders and stacks the slices and reorients the volume to the
canonical grid, :mod:`spinedx.io.pixels` decodes, rescales and stacks the pixel data. This module
turns one series into an :class:`Image`. The rules (the standard is DICOM PS3.3; section numbers below):

* Files are grouped by SeriesInstanceUID (0020,000E). A folder may hold several series; the
  caller then names the one to read (the manifest's ``t1_series_uid``/``t2_series_uid``).
* Slices are ordered by their position along the slice normal ``n = r x c``, where ``r`` and
  ``c`` are the row and column direction cosines of ImageOrientationPatient (0020,0037)
  (C.7.6.2.1.1), i.e. ``d_k = ImagePositionPatient_k . n``. This is the order SimpleITK's
  (GDCM's) series reader gives. InstanceNumber is never used: scanners number sagittal
  slices in either direction, and some renumber after reconstruction.
* The slice spacing comes from the positions, not SliceThickness (0018,0050) nor
  SpacingBetweenSlices: thickness is the excitation width, which differs from the step when
  there is a gap or overlap (the paper's 4 mm slices are typically acquired with a gap).
* The steps ``d_{k+1} - d_k`` must be uniform: ``|step - median| <= max(0.02 mm, 1 % of the
  median, rounding)``, where ``rounding`` follows from the decimals actually written in the
  ImagePositionPatient strings (a scanner writing 0.1 mm positions of an oblique stack makes
  steps differ by up to ``4 x 0.05 x sum |n_a|`` mm; see :func:`spinedx.io.geometry.stack_slices`).
  A missing slice (a step of 2x) or two interleaved stacks are far outside it and are refused.
* Gantry tilt / sheared stacks: when the step vector between consecutive positions is not
  parallel to ``n`` (a CT gantry tilt, or an MR stack whose positions were shifted in-plane),
  the affine's third column is the actual mean step vector ``(P_last - P_first) / (n - 1)``
  instead of ``n * spacing``. Each voxel then maps to its true position (the affine is
  sheared, not orthonormal). This is recorded as ``meta['shear_deg']``. A stack whose steps
  deviate less than 0.1 deg (or less than the position rounding can explain) from ``n`` is
  treated as unsheared. Stacks whose step is more than 30 deg off the normal are refused.
* Localisers (ImageType (0008,0008) containing ``LOCALIZER``) and series whose slices have
  different orientations (three-plane scouts, multi-planar series) are refused, as are two
  slices at the same position (multi-echo or repeated acquisitions sharing one UID).
* PhotometricInterpretation must be MONOCHROME1 or MONOCHROME2; MONOCHROME1 is inverted
  (C.7.6.3.1.2, see :mod:`spinedx.io.pixels`). RescaleSlope/RescaleIntercept (C.11.1) are applied
  per slice because vendors may scale every slice differently; a series where some files have a
  rescale and others not, or a file with one of the two, is refused.
* Enhanced (multi-frame) MR files are read too: the per-frame and shared functional groups
  (C.7.6.16) give each frame's position, orientation, pixel spacing and rescale.
* The volume is finally reoriented to the canonical sagittal grid
  (:func:`spinedx.io.geometry.to_canonical`) by :func:`read_dicom_series` and ``read_image``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.discovery import (
    ImageReadWarning,
    SeriesInfo,
    dcmread,
    frame_orientation,
    frame_position,
    frame_rescale,
    frame_spacing,
    has_pixels,
    joined,
    list_dicom_series,
    n_frames,
    no_pixels_message,
    scan,
    select_series_to_read,
    where_of,
)
from spinedx.io.geometry import SAGITTAL_MIN, Slice2D, check_geometry, orientation_name, stack_slices, to_canonical
from spinedx.io.image import Image
from spinedx.io.pixels import MONOCHROME, decode, stack_pixels

__all__ = ["SAGITTAL_MIN", "SeriesCheck", "SeriesInfo", "list_dicom_series", "orientation_name", "read_dicom_file",
           "read_dicom_series"]

# Tag names with their numbers, for messages that say which element is wrong.
_TAGS = {
    "ImagePositionPatient": "ImagePositionPatient (0020,0032)", "ImageOrientationPatient":
    "ImageOrientationPatient (0020,0037)", "PixelSpacing": "PixelSpacing (0028,0030)",
    "Rows": "Rows (0028,0010)", "Columns": "Columns (0028,0011)", "RescaleSlope": "RescaleSlope (0028,1053)",
    "RescaleIntercept": "RescaleIntercept (0028,1052)", "SamplesPerPixel": "SamplesPerPixel (0028,0002)",
    "PhotometricInterpretation": "PhotometricInterpretation (0028,0004)", "ImageType": "ImageType (0008,0008)",
}


def _value(label: str, where: str | None, keyword: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, with a malformed element refused naming the file and the tag instead of a bare ValueError."""
    try:
        return fn()
    except ImageReadError:
        raise
    except (AttributeError, KeyError):
        raise ImageReadError(f"{_TAGS.get(keyword, keyword)} is missing; fix the tag or re-export the series",
                             where=where_of(label, where)) from None
    except Exception as exc:  # noqa: BLE001 -- pydicom and float() raise several types for bad values
        text = " ".join(str(exc).split())[:160]
        raise ImageReadError(f"{_TAGS.get(keyword, keyword)} is not valid ({text}); fix the tag or re-export the "
                             "series", where=where_of(label, where)) from None


def _rescale(label: str, where: str | None, pair: tuple[Any, Any]) -> tuple[float, float] | None:
    slope, intercept = pair
    if slope is None and intercept is None:
        return None
    if slope is None or intercept is None:
        missing = "RescaleSlope (0028,1053)" if slope is None else "RescaleIntercept (0028,1052)"
        raise ImageReadError(f"{missing} is missing while its partner is present (both are needed, PS3.3 C.11.1); "
                             "fix the tag or re-export the series", where=where_of(label, where))
    s = _value(label, where, "RescaleSlope", lambda: float(slope))
    i = _value(label, where, "RescaleIntercept", lambda: float(intercept))
    if not (np.isfinite(s) and np.isfinite(i)):
        raise ImageReadError(f"RescaleSlope/RescaleIntercept {s}/{i} are not finite; re-export the series",
                             where=where_of(label, where))
    return s, i


def _slices_of(path: Path, ds: Any, where: str | None, excess: list[tuple[str, int, int]]) -> list[Slice2D]:
    """The 2-D images of one dataset with their geometry (pixels decoded lazily; pixel data longer than the
    header describes is noted in ``excess`` when decoded)."""
    label0 = str(path)
    if not has_pixels(ds, header_only=False):
        raise ImageReadError(no_pixels_message(ds), where=where_of(path, where))
    samples = _value(label0, where, "SamplesPerPixel", lambda: int(ds.get("SamplesPerPixel", 1) or 1))
    photometric = _value(label0, where, "PhotometricInterpretation",
                         lambda: str(ds.get("PhotometricInterpretation", "") or "").strip())
    if samples != 1:
        raise ImageReadError(f"colour image (SamplesPerPixel {samples}, PhotometricInterpretation {photometric}); "
                             "an MR magnitude image (one sample per pixel) is needed", where=where_of(path, where))
    if photometric not in MONOCHROME:
        raise ImageReadError(
            f"PhotometricInterpretation (0028,0004) is '{photometric or '(missing)'}'; spinedx reads grayscale "
            "MONOCHROME1/MONOCHROME2 images only: export the series as grayscale", where=where_of(path, where))
    frames = n_frames(ds)
    image_type = _value(label0, where, "ImageType", lambda: joined(ds.get("ImageType")))
    rows = _value(label0, where, "Rows", lambda: int(ds.Rows))
    cols = _value(label0, where, "Columns", lambda: int(ds.Columns))
    if rows < 1 or cols < 1:
        raise ImageReadError(f"Rows x Columns is {rows} x {cols}: an empty image; re-export the series",
                             where=where_of(path, where))
    cache: dict[str, np.ndarray] = {}

    def frame_pixels(k: int) -> Callable[[], np.ndarray]:
        def get() -> np.ndarray:
            if frames == 1:  # not kept: the caller copies it into the volume and drops it
                return decode(path, ds, where, excess)
            if "a" not in cache:  # all frames are decoded at once
                cache["a"] = decode(path, ds, where, excess)
            if cache["a"].ndim != 3 or cache["a"].shape[0] != frames:
                raise ImageReadError(f"decoded pixel data has shape {cache['a'].shape}, expected {frames} frames",
                                     where=where_of(path, where))
            return cache["a"][k]
        return get

    out = []
    for k in range(frames):
        label = label0 if frames == 1 else f"{path} (frame {k + 1})"
        iop = _value(label, where, "ImageOrientationPatient", partial(frame_orientation, ds, k))
        ipp = _value(label, where, "ImagePositionPatient", partial(frame_position, ds, k))
        sp = _value(label, where, "PixelSpacing", partial(frame_spacing, ds, k))
        missing = [n for n, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp),
                                  ("PixelSpacing", sp)) if v is None]
        if missing:
            raise ImageReadError(f"image lacks {', '.join(missing)}: cannot place it in space (a secondary "
                                 "capture or screenshot?); use the original MR series", where=where_of(label, where))
        assert iop is not None and ipp is not None and sp is not None
        position, decimals = ipp
        for keyword, arr, n in (("ImageOrientationPatient", iop, 6), ("ImagePositionPatient", position, 3)):
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ImageReadError(f"{_TAGS[keyword]} must be {n} finite numbers, got {arr.tolist()}; fix the "
                                     "tag or re-export the series", where=where_of(label, where))
        rescale = _rescale(label, where, _value(label, where, "RescaleSlope", partial(frame_rescale, ds, k)))
        slope, intercept = rescale if rescale is not None else (1.0, 0.0)
        dec = None if any(d is None for d in decimals) else np.asarray(decimals, dtype=np.int64)
        out.append(Slice2D(path, None if frames == 1 else k, position, iop, sp, rows, cols, dec, frame_pixels(k),
                           {"slope": slope, "intercept": intercept, "has_rescale": rescale is not None,
                            "photometric": photometric, "image_type": image_type}))
    return out


def _text(ds: Any, name: str) -> str:
    try:
        return str(ds.get(name, "") or "").strip()
    except Exception:  # noqa: BLE001 -- an unreadable descriptive element is treated as absent
        return ""


def _series_meta(ds: Any) -> dict[str, Any]:
    def num(name: str) -> float | None:
        try:
            v = ds.get(name)
            return None if v is None or v == "" else float(v)
        except Exception:  # noqa: BLE001 -- an unreadable value is treated as absent
            return None

    return {
        "SeriesInstanceUID": _text(ds, "SeriesInstanceUID"),
        "SeriesDescription": _text(ds, "SeriesDescription"),
        "StudyInstanceUID": _text(ds, "StudyInstanceUID"),
        "FrameOfReferenceUID": _text(ds, "FrameOfReferenceUID"),
        "PatientID": _text(ds, "PatientID"),
        "Modality": _text(ds, "Modality"),
        "RepetitionTime": num("RepetitionTime"),
        "EchoTime": num("EchoTime"),
        "MagneticFieldStrength": num("MagneticFieldStrength"),
        "SliceThickness": num("SliceThickness"),
        "ProtocolName": _text(ds, "ProtocolName"),
        "Manufacturer": _text(ds, "Manufacturer"),
    }


def _check_series(slices: list[Slice2D], folder: Path, where: str | None) -> None:
    """Refuse localisers and series whose files disagree on photometric interpretation or rescale."""
    w = where_of(folder, where)
    for s in slices:
        if "LOCALIZER" in str(s.extra["image_type"]).upper().split("\\"):
            raise ImageReadError(f"localiser (scout) image: ImageType {s.extra['image_type']}; point the manifest "
                                 f"at the diagnostic sagittal series, not the localiser ({s.label})", where=w)
    ref = slices[0]
    for s in slices[1:]:
        if s.extra["photometric"] != ref.extra["photometric"]:
            raise ImageReadError(f"PhotometricInterpretation (0028,0004) differs within the series: "
                                 f"{ref.extra['photometric']} in {ref.label}, {s.extra['photometric']} in {s.label}; "
                                 "re-export the series", where=w)
        if s.extra["has_rescale"] != ref.extra["has_rescale"]:
            have, lack = (ref, s) if ref.extra["has_rescale"] else (s, ref)
            raise ImageReadError(f"RescaleSlope/RescaleIntercept (0028,1053/1052) are in {have.label} but not in "
                                 f"{lack.label}: the intensities of the series are not comparable; re-export the "
                                 "series", where=w)


def read_dicom_series(folder: str | Path, series_uid: str | None = None, *, where: str | None = None,
                      allow_modality: Iterable[str] = ()) -> Image:
    """Read one DICOM series (a folder, searched recursively) into an :class:`Image` on the canonical grid.

    The order, spacing and geometry rules are in the module docstring (PS3.3 C.7.6.2.1.1); the volume
    is reoriented to the canonical sagittal grid (:func:`spinedx.io.geometry.to_canonical`).

    Args:
        folder: folder holding the series' files (other series may be present too).
        series_uid: SeriesInstanceUID to read; needed when the folder holds several image series.
        where: prefix for error messages (e.g. ``"patient P001 t2"``).
        allow_modality: image modalities accepted besides MR (e.g. ``("CT",)``).

    Returns:
        The image (float32 voxels after RescaleSlope/Intercept, MONOCHROME2 convention) with ``meta``
        holding SeriesInstanceUID, SeriesDescription, StudyInstanceUID, FrameOfReferenceUID, PatientID,
        Modality, RepetitionTime, EchoTime, PhotometricInterpretation, the ``files`` in slice order, ``shear_deg``,
        ``reorientation`` and ``warnings``.

    Raises:
        ImageReadError: unreadable/non-image files, several series and no ``series_uid``, another modality than
            MR (unless allowed), localiser, mixed orientations, duplicate positions, irregular spacing, fewer than
            3 slices.
    """
    from spinedx.studyindex.header import allowed_modalities

    return to_canonical(read_path(Path(folder), series_uid, where, allow_modality=allowed_modalities(allow_modality),
                                  expect_sagittal=False, folder_only=True)[0])


def read_dicom_file(path: str | Path, series_uid: str | None = None, *, where: str | None = None,
                    allow_modality: Iterable[str] = ()) -> Image:
    """Read a DICOM file: a multi-frame (enhanced) file alone, a single-frame one with its series.

    A single-frame file stands for the whole series it belongs to (the files of its folder with
    the same SeriesInstanceUID), since one slice is not a volume. The result is on the canonical grid.
    """
    from spinedx.studyindex.header import allowed_modalities

    return to_canonical(read_path(Path(path), series_uid, where, allow_modality=allowed_modalities(allow_modality),
                                  expect_sagittal=False)[0])


@dataclass(frozen=True)
class SeriesCheck:
    """What the headers of a DICOM series say the reader would read (:func:`spinedx.io.check_dicom_series`).

    Attributes:
        series_uid: SeriesInstanceUID.
        modality: Modality ('' when absent).
        n_slices: slices of the stack.
        shape: ``(slices, rows, columns)`` as acquired.
        files: the files in slice order.
        warnings: what the reader accepts with a warning (a modality accepted through ``allow_modality``).
    """

    series_uid: str
    modality: str
    n_slices: int
    shape: tuple[int, int, int]
    files: tuple[str, ...] = field(repr=False)
    warnings: tuple[str, ...] = ()


def _groups_for(path: Path, series_uid: str | None, where: str | None, *, folder_only: bool = False,
                scans: dict[Path, Any] | None = None) -> tuple[dict[str, list[tuple[Path, Any]]], str | None, Path]:
    """The datasets to choose the series from, the UID to choose and the folder to name: a folder's files, a
    multi-frame file alone, or a single-frame file's series in its folder."""
    if folder_only or path.is_dir():
        return _scan(path, where, scans), series_uid, path
    ds = dcmread(path, where, header_only=False)
    uid = _text(ds, "SeriesInstanceUID")
    if series_uid is not None and uid != series_uid:
        raise ImageReadError(f"file belongs to series {uid or '(none)'}, not {series_uid}",
                             where=where_of(path, where))
    if n_frames(ds) > 1:
        return {uid: [(path, ds)]}, None, path
    return _scan(path.parent, where, scans), uid or None, path.parent


def _scan(folder: Path, where: str | None, scans: dict[Path, Any] | None) -> dict[str, list[tuple[Path, Any]]]:
    """:func:`scan` of a folder (headers, pixel data left in the files), once per folder when ``scans`` is given.

    A refusal is kept too (as the exception), so a folder with a damaged file is read once and named each time.
    """
    if scans is None:
        return scan(folder, where, header_only=False)
    key = folder.resolve()
    if key not in scans:
        try:
            scans[key] = scan(folder, None, header_only=False)
        except ImageReadError as exc:
            scans[key] = exc
    got = scans[key]
    if isinstance(got, ImageReadError):  # named again with this caller's prefix
        raise ImageReadError(got.message, where=f"{where}: {got.where}" if where and got.where else got.where or where)
    return got


def read_path(path: Path, series_uid: str | None, where: str | None, *, allow_modality: tuple[str, ...],
              expect_sagittal: bool, folder_only: bool = False) -> tuple[Image, bool]:
    """A DICOM folder or file read as one series in its acquisition order (not yet canonical), and whether every
    voxel is known to be finite. ``allow_modality`` must be normalised (``allowed_modalities``)."""
    groups, uid, folder = _groups_for(path, series_uid, where, folder_only=folder_only)
    return _read_groups(groups, uid, folder, where, allow_modality=allow_modality, expect_sagittal=expect_sagittal)


def check_path(path: Path, series_uid: str | None, where: str | None, *, allow_modality: tuple[str, ...],
               expect_sagittal: bool, scans: dict[Path, Any] | None = None) -> SeriesCheck:
    """:func:`read_path` without the pixel data: every check made from the headers (see
    :func:`spinedx.io.check_dicom_series`)."""
    groups, uid, folder = _groups_for(path, series_uid, where, scans=scans)
    st = _stack(groups, uid, folder, where, allow_modality=allow_modality, expect_sagittal=expect_sagittal)
    s0 = st.slices[0]
    return SeriesCheck(st.uid, st.meta["Modality"], len(st.slices), (len(st.slices), s0.rows, s0.cols),
                       tuple(s.label for s in st.slices), tuple(st.warnings))


def _check_modality(items: list[tuple[Path, Any]], folder: Path, where: str | None,
                    allow: tuple[str, ...]) -> list[str]:
    """Refuse a series that is not MR (every file is checked: one CT file among MR files is refused too).

    Returns:
        The warning for a modality accepted through ``allow`` (empty for MR).
    """
    from spinedx.studyindex.header import modality_problem, sop_class_modality, sop_class_name

    seen: dict[tuple[str, str], Path] = {}
    for path, ds in items:
        seen.setdefault((_text(ds, "Modality").upper(), _text(ds, "SOPClassUID")), path)
    for (given, sop), path in seen.items():
        problem = modality_problem(given, sop, allow)
        if problem is None:
            continue
        modality = given or sop_class_modality(sop)
        if problem.startswith("not an image"):
            ds = next(d for p, d in items if p == path)
            what = f"a {sop_class_name(sop)} object" if sop else "an object without SOP class"
            pixels = "" if has_pixels(ds, header_only=False) else ", no pixel data"
            raise ImageReadError(f"{problem}: {what}{pixels}, not an MR image; point the manifest at the sagittal "
                                 "T1W/T2W MR series (t1_series_uid/t2_series_uid when a folder holds several) "
                                 f"({path.name})", where=where_of(folder, where))
        raise ImageReadError(f"{problem}: spinedx reads MR images; point the manifest at the sagittal T1W/T2W MR "
                             f"series, or pass --allow-modality {modality} (allow_modality=('{modality}',)) to read "
                             f"it anyway ({path.name})", where=where_of(folder, where))
    notes = []
    others = sorted({given or sop_class_modality(sop) for given, sop in seen} - {"", "MR"})
    if others:
        notes.append(f"Modality {', '.join(others)} accepted (--allow-modality): not an MR image")
    if any(not given and not sop_class_modality(sop) for given, sop in seen):
        notes.append("no Modality (0008,0060) and a modality-neutral SOP class: read as MR")
    return notes


@dataclass
class _Stack:
    """A series checked from its headers: the chosen UID, its files, sorted slices, affine and facts."""

    uid: str
    items: list[tuple[Path, Any]]
    slices: list[Slice2D]
    affine: np.ndarray
    meta: dict[str, Any]
    warnings: list[str]
    excess: list[tuple[str, int, int]]


def _stack(groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, folder: Path, where: str | None, *,
           allow_modality: tuple[str, ...], expect_sagittal: bool) -> _Stack:
    """Select the series and make every check its headers allow: modality, image, localiser, photometric and
    rescale agreement, one regular stack, enough slices, the plane. The reader and ``spinedx index`` share it."""
    uid = select_series_to_read(groups, series_uid, folder, where)
    items = groups[uid]
    notes = _check_modality(items, folder, where, allow_modality)
    slices: list[Slice2D] = []
    excess: list[tuple[str, int, int]] = []
    for path, ds in items:
        slices.extend(_slices_of(path, ds, where, excess))
    _check_series(slices, folder, where)
    slices, affine, geo = stack_slices(slices, folder, where)
    check_geometry(len(slices), affine, expect_sagittal=expect_sagittal, where=where_of(folder, where))
    meta = _series_meta(items[0][1])
    meta.update(geo)
    return _Stack(uid, items, slices, affine, meta, notes, excess)


def _read_groups(groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, folder: Path,
                 where: str | None, *, allow_modality: tuple[str, ...] = (),
                 expect_sagittal: bool = False) -> tuple[Image, bool]:
    """Select, check, sort and stack one series; also says whether every voxel is known to be finite.

    Integer pixel data gives finite float32 voxels unless the rescale overflows; knowing that here
    spares :func:`spinedx.io.read.check_image` a pass over the volume.
    """
    st = _stack(groups, series_uid, folder, where, allow_modality=allow_modality, expect_sagittal=expect_sagittal)
    vol, finite = stack_pixels(st.slices, where)
    meta = st.meta
    meta["PhotometricInterpretation"] = st.slices[0].extra["photometric"]
    meta["format"] = "dicom"
    meta["files"] = [s.label for s in st.slices]
    notes = list(st.warnings)
    if st.excess:
        notes.append(excess_message(st.excess, len({s.path for s in st.slices})))
        warnings.warn(f"{where_of(folder, where)}: {notes[-1]}", ImageReadWarning, stacklevel=4)
    meta["warnings"] = notes
    return Image(vol, st.affine, source=str(folder), meta=meta), finite


def excess_message(excess: list[tuple[str, int, int]], n_files: int) -> str:
    """One line for a series whose pixel data is longer than its headers describe (``(file, bytes, described)``)."""
    files = {f for f, _, _ in excess}
    f, actual, expected = excess[0]
    return (f"pixel data longer than the header describes in {len(files)} of {n_files} file(s) (e.g. "
            f"{Path(f).name}: {actual} bytes where Rows x Columns x NumberOfFrames x BitsAllocated/8 = {expected}): "
            "the described frames were read and the excess ignored, as pydicom, GDCM and DICOM viewers do; "
            "check that the image looks right")
