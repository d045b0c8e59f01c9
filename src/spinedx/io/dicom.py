"""Reading DICOM MR series into :class:`spinedx.io.Image` with correct geometry.

What this module does, and why (the standard is DICOM PS3.3; section numbers below):

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
  median)``. The 0.02 mm absolute part absorbs the rounding of the decimal-string (DS)
  positions (often written to 0.01 mm or coarser); the 1 % part keeps stacks whose slices sit
  within a hundredth of a slice of where they should be. A missing slice (a step of 2x) or
  two interleaved stacks are far outside it and are refused.
* Gantry tilt / sheared stacks: when the step vector between consecutive positions is not
  parallel to ``n`` (a CT gantry tilt, or an MR stack whose positions were shifted in-plane),
  the affine's third column is the actual mean step vector ``(P_last - P_first) / (n - 1)``
  instead of ``n * spacing``. Each voxel then maps to its true position (the affine is
  sheared, not orthonormal). This is recorded as ``meta['shear_deg']``. A stack whose steps
  deviate less than 0.1 deg from ``n`` is treated as unsheared (that much is DS rounding).
  Stacks whose step is more than 30 deg off the normal are refused (not one stack).
* Localisers (ImageType (0008,0008) containing ``LOCALIZER``) and series whose slices have
  different orientations (three-plane scouts, multi-planar series) are refused, as are two
  slices at the same position (multi-echo or repeated acquisitions sharing one UID).
* Uncompressed little-endian monochrome pixel data (PS3.5 A.1, A.2) is read straight from the
  file into the array pydicom's ``pixel_array`` would give (see :func:`_native_pixels`); anything
  else is decoded by pydicom: compressed transfer syntaxes (JPEG baseline/lossless, JPEG-LS,
  JPEG 2000, RLE) go through the pylibjpeg plugins (and pyjpegls/Pillow where present).
  RescaleSlope/RescaleIntercept (C.11.1) are applied per slice because vendors may scale every
  slice differently.
* Enhanced (multi-frame) MR files are read too: the per-frame and shared functional groups
  (C.7.6.16) give each frame's position, orientation, pixel spacing and rescale.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.image import Image

# Files we never treat as part of a series.
_SKIP_NAMES = {"DICOMDIR", "LOCKFILE", "VERSION", "Thumbs.db"}
_SKIP_SUFFIXES = {".txt", ".md", ".json", ".csv", ".xml", ".html", ".pdf", ".jpg", ".png", ".nii", ".gz", ".zip"}

# Tolerances (see module docstring).
_ORIENT_TOL = 2e-3  # max |difference| of direction cosines between slices of one stack (~0.1 deg)
_DUP_TOL_MM = 0.01  # two slices closer than this along the normal are "the same position"
_STEP_ABS_TOL_MM = 0.02
_STEP_REL_TOL = 0.01
_LINE_ABS_TOL_MM = 0.05  # max distance of a slice position from the fitted straight line
_SHEAR_IGNORE_DEG = 0.1
_SHEAR_MAX_DEG = 30.0
_SAGITTAL_MIN = 0.7


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder (see :func:`list_dicom_series`).

    Attributes:
        uid: SeriesInstanceUID.
        description: SeriesDescription ('' when absent).
        n_files: number of files of this series in the folder.
        n_images: number of image frames (0 for non-image objects such as SR or KO).
        orientation: 'sagittal', 'coronal', 'axial', 'oblique', 'mixed' (slices differ) or ''
            (no orientation, e.g. non-image objects), from the normal of ImageOrientationPatient.
        modality: Modality (0008,0060).
        series_number: SeriesNumber or None.
        image_type: ImageType values joined with backslashes.
        files: the files, in folder order.
    """

    uid: str
    description: str
    n_files: int
    n_images: int
    orientation: str
    modality: str = ""
    series_number: int | None = None
    image_type: str = ""
    files: tuple[Path, ...] = field(default=(), repr=False)

    def summary(self) -> str:
        """One line: UID, description, orientation and number of images."""
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.uid}{desc} ({self.orientation or 'no image'}, {self.n_images} image(s))"


@dataclass
class _Slice:
    """One 2-D image (a classic file or one frame of a multi-frame file)."""

    path: Path
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray  # 6 direction cosines (row, column)
    pixel_spacing: tuple[float, float]  # (row spacing = between rows, column spacing)
    rows: int
    cols: int
    slope: float
    intercept: float
    image_type: str
    pixels: Callable[[], np.ndarray]

    @property
    def label(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


def _where(path: Path | str, where: str | None) -> str:
    return f"{where}: {path}" if where else str(path)


def orientation_name(normal: np.ndarray) -> str:
    """Name the plane of a slice normal (LPS): 'sagittal' when mostly left-right, etc."""
    n = np.abs(np.asarray(normal, dtype=float))
    axis = int(np.argmax(n))
    if n[axis] < _SAGITTAL_MIN:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _candidate_files(folder: Path) -> list[Path]:
    """All files under ``folder`` (recursively) that may be DICOM, in sorted order."""
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name in _SKIP_NAMES:
            continue
        if p.suffix.lower() in _SKIP_SUFFIXES:
            continue
        out.append(p)
    return out


# Elements longer than this (in practice PixelData) are not loaded by the first read of a file: their
# offset is kept and _native_pixels reads them straight into an array when the sorted slice is stacked.
# Holding every file's pixel bytes until the series is sorted, and then reading them back cold, costs
# more than the second open; pydicom itself reads a deferred element on first access (PixelData of
# compressed syntaxes, for instance).
_DEFER_BYTES = 64 * 1024
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _dcmread(path: Path, where: str | None, *, header_only: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if header_only:
            return pydicom.dcmread(path, stop_before_pixels=True)
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        if ds.file_meta.get("TransferSyntaxUID") == _DEFLATED:
            # Offsets of a deflated dataset refer to the inflated stream, not the file: read it all now.
            ds = pydicom.dcmread(path)
        return ds
    except InvalidDicomError:
        raise ImageReadError(
            "not a DICOM file (no 'DICM' preamble); remove it from the series folder or point the manifest at "
            "the right file", where=_where(path, where)) from None
    except Exception as exc:  # noqa: BLE001 -- truncated/corrupt files raise many different errors
        raise ImageReadError(f"unreadable DICOM file ({type(exc).__name__}: {exc}); re-export the series",
                             where=_where(path, where)) from None


# Small elements that usually hold the same bytes in every file of a series (IPP, which differs, is not
# here), and the functional group sequences, looked up for every classic file only to find them absent.
_REPEATED_TAGS = {
    "SeriesInstanceUID": 0x0020000E, "ImageType": 0x00080008, "ImageOrientationPatient": 0x00200037,
    "PixelSpacing": 0x00280030, "RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052,
    "NumberOfFrames": 0x00280008, "SamplesPerPixel": 0x00280002, "PhotometricInterpretation": 0x00280004,
    "Rows": 0x00280010, "Columns": 0x00280011, "BitsAllocated": 0x00280100, "BitsStored": 0x00280101,
    "PixelRepresentation": 0x00280103, "SharedFunctionalGroupsSequence": 0x52009229,
    "PerFrameFunctionalGroupsSequence": 0x52009230,
}
# VRs whose conversion depends only on the bytes (not on the Specific Character Set); None = implicit VR.
_PLAIN_VRS = frozenset({None, "US", "SS", "UL", "SL", "IS", "DS", "CS", "UI"})
# Tags for ``in`` tests: a keyword costs a dictionary look-up inside pydicom on every test.
_CONTAINS_TAGS = {"PixelData": 0x7FE00010, "FloatPixelData": 0x7FE00008, "DoubleFloatPixelData": 0x7FE00009,
                  "Rows": 0x00280010, "Columns": 0x00280011}
_MISSING = object()
_PLAIN_DS = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a subset of PS3.5 6.2 DS, fullmatch after strip


class _Header:
    """A dataset whose repeated elements are converted once per series, not once per file.

    pydicom converts an element's raw bytes to a value on first access, and that conversion costs
    more than reading the file. The elements in ``_REPEATED_TAGS`` are nearly always byte-identical
    across a series' files, so their converted values are shared through ``cache`` (keyed by tag,
    VR, byte order and bytes: the same input gives the same value). Everything else, and any
    element pydicom has already converted, goes to the dataset unchanged.
    """

    __slots__ = ("_cache", "ds")

    def __init__(self, ds: Any, cache: dict[tuple[Any, ...], Any]) -> None:
        self.ds = ds
        self._cache = cache

    def _key(self, keyword: str) -> tuple[Any, ...] | None:
        """The cache key of a repeated element still in its raw form, ``()`` when absent, else None."""
        tag = _REPEATED_TAGS.get(keyword)
        if tag is None:
            return None
        raw = self.ds.get_item(tag)
        if raw is None:
            return ()
        if not raw.is_raw or raw.VR not in _PLAIN_VRS:
            return None  # already converted, or a VR whose text decoding depends on the dataset
        return (tag, raw.VR, raw.is_implicit_VR, raw.is_little_endian, raw.value)

    def get(self, keyword: str, default: Any = None) -> Any:
        key = self._key(keyword)
        if not key:
            return default if key == () else self.ds.get(keyword, default)
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = self._cache[key] = self.ds.get(keyword, _MISSING)
        return default if value is _MISSING else value

    def derive(self, keyword: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(self.get(keyword))``, computed once per distinct raw value (``fn`` must be pure)."""
        key = self._key(keyword)
        if not key:
            return fn(None if key == () else self.ds.get(keyword))
        key = ("derived", fn, *key)
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = self._cache[key] = fn(self.get(keyword))
        return value

    def pixel_source(self) -> Any:
        """The PixelData bytes, or its raw element when the value was left in the file (see ``_DEFER_BYTES``).

        Raw bytes are what pydicom's OB/OW conversion returns, so its conversion machinery is skipped.
        """
        raw = self.ds.get_item(0x7FE00010, keep_deferred=True)
        if raw is not None and raw.is_raw and raw.VR in (None, "OB", "OW"):
            if isinstance(raw.value, bytes):
                return raw.value
            if raw.value is None and raw.length != 0xFFFFFFFF:
                return raw
        return self.ds.get("PixelData")

    def position(self) -> Any:
        """ImagePositionPatient as floats, parsed from its raw bytes; ``_MISSING`` to ask the dataset instead.

        Only plain decimal strings (which pydicom converts with ``float`` and accepts without a warning)
        are parsed here; anything else goes through pydicom, so its values, warnings and errors stay.
        """
        raw = self.ds.get_item(0x00200032)
        if raw is None or not raw.is_raw or raw.VR not in (None, "DS") or not isinstance(raw.value, bytes):
            return _MISSING
        from pydicom import config

        if config.use_DS_numpy or config.use_DS_decimal:
            return _MISSING
        items = raw.value.decode("iso8859").strip().rstrip(" \x00").split("\\")
        if len(items) < 2 or not all(len(x) <= 16 and _PLAIN_DS.fullmatch(x) for x in items):
            return _MISSING
        return np.asarray([float(x) for x in items], dtype=np.float64)

    def scratch(self, nbytes: int) -> np.ndarray:
        """A byte buffer shared by the series' slices: a slice's pixels are copied out before the next read."""
        key = ("scratch", nbytes)
        buf = self._cache.get(key)
        if buf is None:
            buf = self._cache[key] = np.empty(nbytes, dtype=np.uint8)
        return buf

    def __contains__(self, name: str) -> bool:
        return _CONTAINS_TAGS.get(name, name) in self.ds

    def __getattr__(self, name: str) -> Any:
        if name in _REPEATED_TAGS:
            value = self.get(name, _MISSING)
            if value is not _MISSING:
                return value
        return getattr(self.ds, name)


def _scan(folder: Path, where: str | None, *, header_only: bool) -> dict[str, list[tuple[Path, Any]]]:
    """Read every file of ``folder`` and group the datasets by SeriesInstanceUID."""
    if not folder.exists():
        raise ImageReadError("folder does not exist; check the path in the manifest", where=_where(folder, where))
    if not folder.is_dir():
        raise ImageReadError("not a folder", where=_where(folder, where))
    files = _candidate_files(folder)
    if not files:
        raise ImageReadError("folder holds no DICOM files; check the path in the manifest",
                             where=_where(folder, where))
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    cache: dict[tuple[Any, ...], Any] = {}
    for f in files:
        ds = _dcmread(f, where, header_only=header_only)
        uid = str(_Header(ds, cache).get("SeriesInstanceUID", "") or "")
        if not uid:
            raise ImageReadError("DICOM file has no SeriesInstanceUID; re-export the series",
                                 where=_where(f, where))
        groups[uid].append((f, ds))
    return dict(groups)


def _n_frames(ds: Any) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _has_pixels(ds: Any, header_only: bool) -> bool:
    if header_only:
        # stop_before_pixels drops PixelData; Rows/Columns are in every image IOD.
        return "Rows" in ds and "Columns" in ds
    return any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _normal_of(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _info(uid: str, items: list[tuple[Path, Any]], header_only: bool) -> SeriesInfo:
    ds0 = items[0][1]
    image_items = [(p, ds) for p, ds in items if _has_pixels(ds, header_only)]
    n_images = sum(_n_frames(ds) for _, ds in image_items)
    orients = set()
    for _, ds in image_items:
        iop = _frame_orientation(ds, 0)
        if iop is not None:
            orients.add(orientation_name(_normal_of(iop)))
    orientation = "" if not orients else orients.pop() if len(orients) == 1 else "mixed"
    try:
        series_number = int(ds0.get("SeriesNumber")) if ds0.get("SeriesNumber") is not None else None
    except (TypeError, ValueError):
        series_number = None
    image_type = "\\".join(str(v) for v in (ds0.get("ImageType") or []))
    return SeriesInfo(
        uid=uid, description=str(ds0.get("SeriesDescription", "") or ""), n_files=len(items), n_images=n_images,
        orientation=orientation, modality=str(ds0.get("Modality", "") or ""), series_number=series_number,
        image_type=image_type, files=tuple(p for p, _ in items),
    )


def list_dicom_series(folder: str | Path, *, where: str | None = None) -> list[SeriesInfo]:
    """List the series in a DICOM folder (searched recursively), reading headers only.

    Args:
        folder: the folder.
        where: prefix for error messages (e.g. ``"patient P001 t2"``).

    Returns:
        One :class:`SeriesInfo` per SeriesInstanceUID, sorted by SeriesNumber then UID.

    Raises:
        ImageReadError: the folder is missing or empty, or a file is not readable DICOM.
    """
    groups = _scan(Path(folder), where, header_only=True)
    infos = [_info(uid, items, True) for uid, items in groups.items()]
    return sorted(infos, key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.uid))


# -- per-frame attributes (classic and enhanced multi-frame) --------------------------------------------
def _fg(ds: Any, frame: int, seq: str, attr: str) -> Any:
    """An attribute from the per-frame (else shared) functional group ``seq`` (PS3.3 C.7.6.16)."""
    for groups_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(groups_name)
        if not groups:
            continue
        item = groups[frame] if groups_name.startswith("PerFrame") and frame < len(groups) else groups[0]
        sub = item.get(seq)
        if sub and attr in sub[0]:
            return sub[0].get(attr)
    return None


def _derived(ds: Any, keyword: str, fn: Callable[[Any], Any]) -> Any:
    """``fn(ds.get(keyword))``, computed once per series for the repeated elements of a :class:`_Header`."""
    return ds.derive(keyword, fn) if isinstance(ds, _Header) else fn(ds.get(keyword))


def _floats(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    arr = np.asarray([float(x) for x in v], dtype=np.float64)
    arr.flags.writeable = False  # shared by the slices of a series
    return arr


def _spacing(v: Any) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


def _joined(v: Any) -> str:
    return "\\".join(str(x) for x in (v or []))


def _frame_orientation(ds: Any, frame: int) -> np.ndarray | None:
    arr = _derived(ds, "ImageOrientationPatient", _floats)
    if arr is None:
        arr = _floats(_fg(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"))
    return arr


def _frame_position(ds: Any, frame: int) -> np.ndarray | None:
    v = _fg(ds, frame, "PlanePositionSequence", "ImagePositionPatient") if _n_frames(ds) > 1 else None
    if v is None:
        if isinstance(ds, _Header):
            pos = ds.position()
            if pos is not _MISSING:
                return pos
        v = ds.get("ImagePositionPatient")
    if v is None:
        v = _fg(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    return None if v is None else np.asarray([float(x) for x in v], dtype=np.float64)


def _frame_spacing(ds: Any, frame: int) -> tuple[float, float] | None:
    sp = _derived(ds, "PixelSpacing", _spacing)
    if sp is None:
        sp = _spacing(_fg(ds, frame, "PixelMeasuresSequence", "PixelSpacing"))
    return sp


def _frame_rescale(ds: Any, frame: int) -> tuple[float, float]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None:
        slope = _fg(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _fg(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    return (1.0 if slope is None else float(slope)), (0.0 if intercept is None else float(intercept))


# Uncompressed little-endian transfer syntaxes (PS3.5 A.1, A.2): the pixel data is the array itself.
_NATIVE_LE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _read_deferred(path: Path, raw: Any, expected: int, dtype: str, count: int,
                   out: np.ndarray | None = None) -> np.ndarray | None:
    """Read a deferred native PixelData value from its file into an array (None: length mismatch).

    The value pydicom would read is ``min(declared length, bytes left in the file)`` long; it must be the
    expected length (or one padding byte more), as in :func:`_native_pixels`. ``out``: a byte buffer
    of ``expected`` bytes to read into (the result is a view of it) instead of a new array.
    """
    padded = expected + expected % 2
    with open(path, "rb", buffering=0) as fh:
        actual = min(raw.length, max(os.fstat(fh.fileno()).st_size - raw.value_tell, 0))
        if actual not in (expected, padded):
            return None
        fh.seek(raw.value_tell)
        arr = np.empty(count, dtype=dtype) if out is None else out.view(dtype)
        view, done = arr.view(np.uint8).data, 0
        while done < expected:
            n = fh.readinto(view[done:])
            if not n:
                return None
            done += n
    return arr


def _native_pixels(ds: Any, path: Path | None = None) -> np.ndarray | None:
    """Pixel data of an uncompressed little-endian monochrome dataset, read straight from the buffer.

    Gives the same array as pydicom's ``pixel_array`` (same dtype, shape, and masking or sign
    extension of the unused high bits when BitsStored < BitsAllocated, PS3.5 8.1.1) without its
    per-call bookkeeping, which costs several times the file read for a 512x512 slice. Anything
    else (compressed or big-endian syntaxes, bit-packed or float data, lengths that do not match
    the header) returns None so that pydicom decodes it with its own checks and messages.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") not in _NATIVE_LE_SYNTAXES:
        return None
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    data = ds.pixel_source() if isinstance(ds, _Header) else ds.get("PixelData")
    deferred = not isinstance(data, bytes) and getattr(data, "is_raw", False) and path is not None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    bits, stored, signed = ds.get("BitsAllocated"), ds.get("BitsStored"), ds.get("PixelRepresentation")
    frames = ds.get("NumberOfFrames", 1)
    if not (isinstance(data, bytes) or deferred) or ds.get("PhotometricInterpretation") not in (
            "MONOCHROME1", "MONOCHROME2"):
        return None
    if not all(isinstance(v, int) for v in (rows, cols, bits, stored, signed, frames)):
        return None
    if bits not in (8, 16, 32) or not 1 <= stored <= bits or signed not in (0, 1) or ds.get("SamplesPerPixel", 1) != 1:
        return None
    if not (0 < rows <= 0xFFFF and 0 < cols <= 0xFFFF and frames >= 1):
        return None
    count = rows * cols * frames
    expected = count * (bits // 8)
    dtype = f"<{'ui'[signed]}{bits // 8}"
    if deferred:
        assert path is not None
        # One frame is copied into the volume before the next is read: reuse one buffer (kept in the CPU
        # caches) for a series' single-frame files.
        out = ds.scratch(expected) if isinstance(ds, _Header) and frames == 1 else None
        read = _read_deferred(path, data, expected, dtype, count, out)
        if read is None:
            return None
        arr = read
    elif len(data) not in (expected, expected + expected % 2):
        return None
    else:
        arr = np.frombuffer(data, dtype=dtype, count=count)
    arr = arr.reshape((rows, cols) if frames == 1 else (frames, rows, cols))
    if stored < bits:
        # The unused high bits may hold anything (PS3.5 8.1.1): pydicom shifts them out (masking unsigned
        # values, sign-extending signed ones). Usually they are already clear, so check before copying.
        shift = bits - stored
        if signed:
            lo, hi = -(1 << (stored - 1)), (1 << (stored - 1)) - 1
            if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                arr = np.right_shift(np.left_shift(arr, shift), shift)
        elif arr.size and int(arr.max()) >> stored:
            arr = np.bitwise_and(arr, (1 << stored) - 1)
    return arr


def _decode(path: Path, ds: Any, where: str | None) -> np.ndarray:
    arr = _native_pixels(ds, path)
    if arr is not None:
        return arr
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 -- missing decoder plugin, corrupt stream, ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", str(ts))
        raise ImageReadError(
            f"cannot decode pixel data (transfer syntax {ts_name}): {exc}. Install the pydicom decoders "
            "(pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle) or re-export uncompressed",
            where=_where(path, where)) from None
    return np.asarray(arr)


def _slices_of(path: Path, ds: Any, where: str | None) -> list[_Slice]:
    """The 2-D images of one dataset with their geometry (pixels decoded lazily)."""
    if not _has_pixels(ds, header_only=False):
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown"))
        raise ImageReadError(
            f"DICOM file has no pixel data (not an image: SOP class {sop}); remove it from the series folder",
            where=_where(path, where))
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ImageReadError(f"colour image ({ds.get('PhotometricInterpretation')}); an MR magnitude image "
                             "(one sample per pixel) is needed", where=_where(path, where))
    n_frames = _n_frames(ds)
    image_type = _derived(ds, "ImageType", _joined)
    cache: dict[str, np.ndarray] = {}

    def frame_pixels(k: int) -> Callable[[], np.ndarray]:
        def get() -> np.ndarray:
            if n_frames == 1:  # not kept: the caller copies it into the volume and drops it
                return _decode(path, ds, where)
            if "a" not in cache:  # all frames are decoded at once
                cache["a"] = _decode(path, ds, where)
            return cache["a"][k]
        return get

    out = []
    for k in range(n_frames):
        iop, ipp, sp = _frame_orientation(ds, k), _frame_position(ds, k), _frame_spacing(ds, k)
        label = path if n_frames == 1 else f"{path} (frame {k + 1})"
        missing = [n for n, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp),
                                  ("PixelSpacing", sp)) if v is None]
        if missing:
            raise ImageReadError(f"image lacks {', '.join(missing)}: cannot place it in space (a secondary "
                                 "capture or screenshot?); use the original MR series", where=_where(label, where))
        assert iop is not None and ipp is not None and sp is not None
        if iop.shape != (6,) or ipp.shape != (3,) or not np.all(np.isfinite(iop)) or not np.all(np.isfinite(ipp)):
            raise ImageReadError("malformed ImageOrientationPatient/ImagePositionPatient",
                                 where=_where(label, where))
        slope, intercept = _frame_rescale(ds, k)
        out.append(_Slice(path, None if n_frames == 1 else k, ipp, iop, sp, int(ds.Rows), int(ds.Columns),
                          slope, intercept, image_type, frame_pixels(k)))
    return out


def _series_meta(ds: Any) -> dict[str, Any]:
    def num(name: str) -> float | None:
        v = ds.get(name)
        if v is None or v == "":
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    return {
        "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "")),
        "SeriesDescription": str(ds.get("SeriesDescription", "") or ""),
        "StudyInstanceUID": str(ds.get("StudyInstanceUID", "") or ""),
        "PatientID": str(ds.get("PatientID", "") or ""),
        "Modality": str(ds.get("Modality", "") or ""),
        "RepetitionTime": num("RepetitionTime"),
        "EchoTime": num("EchoTime"),
        "MagneticFieldStrength": num("MagneticFieldStrength"),
        "SliceThickness": num("SliceThickness"),
        "ProtocolName": str(ds.get("ProtocolName", "") or ""),
        "Manufacturer": str(ds.get("Manufacturer", "") or ""),
    }


def _select_series(groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, folder: Path,
                   where: str | None) -> str:
    if series_uid is not None:
        if series_uid in groups:
            return series_uid
        listing = "; ".join(_info(u, it, False).summary() for u, it in groups.items())
        raise ImageReadError(f"series {series_uid} not found in the folder; it holds: {listing}. "
                             "Fix t1_series_uid/t2_series_uid in the manifest", where=_where(folder, where))
    image_uids = [u for u, items in groups.items() if any(_has_pixels(ds, False) for _, ds in items)]
    if len(image_uids) == 1:
        return image_uids[0]
    if not image_uids:  # only non-image objects: name one of them
        path, ds = next(iter(groups.values()))[0]
        _slices_of(path, ds, where)  # raises "no pixel data" naming the file
    listing = "; ".join(_info(u, groups[u], False).summary() for u in sorted(image_uids))
    raise ImageReadError(f"folder holds {len(image_uids)} image series: {listing}. Set t1_series_uid/t2_series_uid "
                         "in the manifest (or series_uid=) to choose one", where=_where(folder, where))


def _stack(slices: list[_Slice], folder: Path, where: str | None) -> tuple[list[_Slice], np.ndarray, dict[str, Any]]:
    """Check the slices form one regular stack, sort them and build the affine."""
    w = _where(folder, where)
    for s in slices:
        if "LOCALIZER" in s.image_type.upper().split("\\"):
            raise ImageReadError(f"localiser (scout) image: ImageType {s.image_type}; point the manifest at the "
                                 f"diagnostic sagittal series, not the localiser ({s.label})", where=w)
    ref = slices[0]
    # Every slice against the first, all at once; the first offending slice is reported.
    bad_orient = np.max(np.abs(np.array([s.orientation for s in slices]) - ref.orientation), axis=1) > _ORIENT_TOL
    bad_matrix = np.array([(s.rows, s.cols) != (ref.rows, ref.cols) for s in slices]) | ~np.all(
        np.isclose(np.array([s.pixel_spacing for s in slices]), ref.pixel_spacing, rtol=1e-3, atol=1e-4), axis=1)
    bad = np.nonzero((bad_orient | bad_matrix)[1:])[0] + 1
    if bad.size:
        s = slices[int(bad[0])]
        if bad_orient[bad[0]]:
            raise ImageReadError(
                "slices have different orientations (a localiser/scout or multi-planar series): "
                f"{ref.label} vs {s.label}; choose a series with one stack", where=w)
        raise ImageReadError(f"slices differ in matrix or pixel spacing: {ref.label} {ref.rows}x{ref.cols} "
                             f"{ref.pixel_spacing} vs {s.label} {s.rows}x{s.cols} {s.pixel_spacing}", where=w)
    row, col = ref.orientation[:3], ref.orientation[3:]
    normal = np.cross(row, col)
    if not (abs(np.linalg.norm(row) - 1) < 0.01 and abs(np.linalg.norm(col) - 1) < 0.01
            and abs(np.dot(row, col)) < 0.01):
        raise ImageReadError(f"ImageOrientationPatient is not two orthogonal unit vectors: {ref.orientation}", where=w)
    normal /= np.linalg.norm(normal)
    d = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(d, kind="stable")
    slices = [slices[i] for i in order]
    d = d[order]
    n = len(slices)
    if n >= 2:
        gaps = np.diff(d)
        dup = np.nonzero(gaps < _DUP_TOL_MM)[0]
        if dup.size:
            i = int(dup[0])
            raise ImageReadError(
                f"{dup.size} pair(s) of slices share a position along the normal, e.g. "
                f"{slices[i].label} and {slices[i + 1].label} at {d[i]:.3f} mm: the series holds several "
                "acquisitions (echoes, time points, repeats) under one SeriesInstanceUID; split it and choose one",
                where=w)
        med = float(np.median(gaps))
        tol = max(_STEP_ABS_TOL_MM, _STEP_REL_TOL * med)
        bad = np.nonzero(np.abs(gaps - med) > tol)[0]
        if bad.size:
            i = int(bad[0])
            raise ImageReadError(
                f"slice spacing is not uniform: step {gaps[i]:.3f} mm between {slices[i].label} and "
                f"{slices[i + 1].label}, median {med:.3f} mm (a missing slice or two stacks in one series); "
                "re-export the complete series", where=w)
        step_vec = (slices[-1].position - slices[0].position) / (n - 1)
        spacing_z = float(np.linalg.norm(step_vec))
        cosang = float(np.clip(np.dot(step_vec, normal) / spacing_z, -1.0, 1.0))
        shear = math.degrees(math.acos(cosang))
        if shear > _SHEAR_MAX_DEG:
            raise ImageReadError(f"slice positions advance {shear:.1f} deg away from the slice normal: not one "
                                 "stack of parallel slices", where=w)
        fitted = slices[0].position[None, :] + np.arange(n)[:, None] * step_vec[None, :]
        resid = np.linalg.norm(np.array([s.position for s in slices]) - fitted, axis=1)
        if float(resid.max()) > max(_LINE_ABS_TOL_MM, _STEP_REL_TOL * spacing_z):
            k = int(np.argmax(resid))
            raise ImageReadError(f"slice positions do not lie on a straight line ({slices[k].label} is "
                                 f"{resid[k]:.2f} mm off); the series mixes stacks", where=w)
        zcol = step_vec if shear > _SHEAR_IGNORE_DEG else normal * med
    else:
        shear, med = 0.0, float(ref.pixel_spacing[0])
        zcol = normal * med
    affine = np.eye(4)
    affine[:3, 0] = row * ref.pixel_spacing[1]  # x = column index j advances along the row direction
    affine[:3, 1] = col * ref.pixel_spacing[0]  # y = row index i advances along the column direction
    affine[:3, 2] = zcol
    affine[:3, 3] = slices[0].position
    geo = {"shear_deg": round(shear, 4) if shear > _SHEAR_IGNORE_DEG else 0.0, "slice_spacing_mm": med}
    return slices, affine, geo


def read_dicom_series(folder: str | Path, series_uid: str | None = None, *, where: str | None = None) -> Image:
    """Read one DICOM series (a folder, searched recursively) into an :class:`Image`.

    The order, spacing and geometry rules are in the module docstring (PS3.3 C.7.6.2.1.1).

    Args:
        folder: folder holding the series' files (other series may be present too).
        series_uid: SeriesInstanceUID to read; needed when the folder holds several image series.
        where: prefix for error messages (e.g. ``"patient P001 t2"``).

    Returns:
        The image (float32 voxels after RescaleSlope/Intercept) with ``meta`` holding
        SeriesInstanceUID, SeriesDescription, RepetitionTime, EchoTime, PatientID, the sorted
        ``files`` and ``shear_deg``.

    Raises:
        ImageReadError: unreadable/non-image files, several series and no ``series_uid``,
            localiser, mixed orientations, duplicate positions, irregular spacing.
    """
    return _read_series(Path(folder), series_uid, where)[0]


def _read_series(folder: Path, series_uid: str | None, where: str | None) -> tuple[Image, bool]:
    """:func:`read_dicom_series`, and whether every voxel is known to be finite (see :func:`_read_groups`)."""
    return _read_groups(_scan(folder, where, header_only=False), series_uid, folder, where)


def read_dicom_file(path: str | Path, series_uid: str | None = None, *, where: str | None = None) -> Image:
    """Read a DICOM file: a multi-frame (enhanced) file alone, a single-frame one with its series.

    A single-frame file stands for the whole series it belongs to (the files of its folder with
    the same SeriesInstanceUID), since one slice is not a volume.
    """
    return _read_file(Path(path), series_uid, where)[0]


def _read_file(path: Path, series_uid: str | None, where: str | None) -> tuple[Image, bool]:
    """:func:`read_dicom_file`, and whether every voxel is known to be finite (see :func:`_read_groups`)."""
    ds = _dcmread(path, where, header_only=False)
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if series_uid is not None and uid != series_uid:
        raise ImageReadError(f"file belongs to series {uid or '(none)'}, not {series_uid}",
                             where=_where(path, where))
    if _n_frames(ds) > 1:
        return _read_groups({uid: [(path, ds)]}, None, path, where)
    return _read_series(path.parent, uid or None, where)


def _finite_rescale(dtype: np.dtype, slope: float, intercept: float) -> bool:
    """Whether ``int * float32(slope) + float32(intercept)`` is finite for every integer of ``dtype``."""
    if dtype.kind not in "biu":
        return False
    info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
    bound = abs(float(np.float32(slope))) * max(abs(int(info.min)), int(info.max)) + abs(float(np.float32(intercept)))
    return bound < 3.0e38  # float32 max is 3.4e38; false for inf and NaN too


def _read_groups(groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, folder: Path,
                 where: str | None) -> tuple[Image, bool]:
    """Select, check, sort and stack one series; also says whether every voxel is known to be finite.

    Integer pixel data gives finite float32 voxels unless the rescale overflows; knowing that here
    spares :func:`spinedx.io.read.check_image` a pass over the volume.
    """
    uid = _select_series(groups, series_uid, folder, where)
    items = groups[uid]
    slices: list[_Slice] = []
    cache: dict[tuple[Any, ...], Any] = {}
    for path, ds in items:
        slices.extend(_slices_of(path, _Header(ds, cache), where))
    slices, affine, geo = _stack(slices, folder, where)
    vol = np.empty((len(slices), slices[0].rows, slices[0].cols), dtype=np.float32)
    finite = True
    for k, s in enumerate(slices):
        px = s.pixels()
        if px.shape != (s.rows, s.cols):
            raise ImageReadError(f"decoded pixel array has shape {px.shape}, expected ({s.rows}, {s.cols})",
                                 where=_where(s.label, where))
        if s.slope != 1.0 or s.intercept != 0.0:
            vol[k] = px.astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)
            finite = finite and _finite_rescale(px.dtype, s.slope, s.intercept)
        else:
            vol[k] = px
            finite = finite and px.dtype.kind in "biu"
    meta = _series_meta(items[0][1])
    meta.update(geo)
    meta["format"] = "dicom"
    meta["files"] = [s.label for s in slices]
    return Image(vol, affine, source=str(folder), meta=meta), finite
