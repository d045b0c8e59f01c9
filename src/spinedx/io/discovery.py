"""Finding DICOM series: scanning folders, reading headers once, grouping by series, listing series.

A folder is searched recursively; every file that may be DICOM is parsed once by pydicom with its large
elements (PixelData) left in the file (see :data:`DEFER_BYTES`), and the datasets are grouped by
SeriesInstanceUID (0020,000E). :class:`Header` wraps a dataset so that elements repeated in every file
of a series are converted once per series; the per-frame accessors below read the image plane
attributes of classic and enhanced multi-frame files (DICOM PS3.3 C.7.6.2, C.7.6.16).
"""

from __future__ import annotations

import errno
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.geometry import ds_decimals, normal_of, orientation_name

# Files we never treat as part of a series.
_SKIP_NAMES = {"DICOMDIR", "LOCKFILE", "VERSION", "Thumbs.db"}
_SKIP_SUFFIXES = {".txt", ".md", ".json", ".csv", ".xml", ".html", ".pdf", ".jpg", ".png", ".nii", ".gz", ".zip"}

# Elements longer than this (in practice PixelData) are not loaded by the first read of a file: their
# offset is kept and spinedx.io.pixels reads them straight into an array when the sorted slice is stacked.
# Holding every file's pixel bytes until the series is sorted, and then reading them back cold, costs
# more than the second open; pydicom itself reads a deferred element on first access (PixelData of
# compressed syntaxes, for instance).
DEFER_BYTES = 64 * 1024
DEFLATED = "1.2.840.10008.1.2.1.99"


class ImageReadWarning(UserWarning):
    """An image was read, but something about it matters (pixel data longer than its header describes)."""


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


def where_of(path: Path | str, where: str | None) -> str:
    """``"where: path"`` for error messages."""
    return f"{where}: {path}" if where else str(path)


def link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed ('a symbolic link loop', 'a broken symbolic link to X'), or None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link points back to itself through other links); fix the link"
        return f"a broken symbolic link (to {os.readlink(path)}, which does not exist); fix the link"
    return None


def _candidate_files(folder: Path, where: str | None) -> list[Path]:
    """All files under ``folder`` (recursively) that may be DICOM, in sorted order."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.name.startswith(".") or p.name in _SKIP_NAMES or p.suffix.lower() in _SKIP_SUFFIXES:
            continue
        if not p.is_file():
            problem = link_problem(p)
            if problem:  # a slice the series may need: say so rather than read the series without it
                raise ImageReadError(problem, where=where_of(p, where))
            continue
        out.append(p)
    return out


def dcmread(path: Path, where: str | None, *, header_only: bool) -> Any:
    """Parse one DICOM file (large elements deferred); unreadable files raise :class:`ImageReadError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if header_only:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        else:
            ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
            if ds.file_meta.get("TransferSyntaxUID") == DEFLATED:
                # Offsets of a deflated dataset refer to the inflated stream, not the file: read it all now.
                ds = pydicom.dcmread(path)
        cut = _truncated_element(ds, path)
    except InvalidDicomError:
        raise ImageReadError(
            "not a DICOM file (no 'DICM' preamble); remove it from the series folder or point the manifest at "
            "the right file", where=where_of(path, where)) from None
    except Exception as exc:  # noqa: BLE001 -- truncated/corrupt files raise many different errors
        raise ImageReadError(f"unreadable DICOM file ({type(exc).__name__}: {exc}); re-export the series",
                             where=where_of(path, where)) from None
    if cut is not None and not (header_only and cut[0] == 0x7FE00010):
        tag, have, want = cut
        what = ("truncated pixel data: the file holds " if tag == 0x7FE00010 else
                f"truncated file: it ends inside element ({tag >> 16:04X},{tag & 0xFFFF:04X}), which holds ")
        raise ImageReadError(f"{what}{have} of its {want} bytes (an incomplete copy or transfer); copy or export "
                             "the file again", where=where_of(path, where))
    return ds


def _truncated_element(ds: Any, path: Path) -> tuple[int, int, int] | None:
    """``(tag, bytes present, bytes declared)`` when the file ends inside its last element, else None.

    pydicom reads what is left of a value cut by the end of the file without a word (a truncated
    SeriesInstanceUID would make a file its own series); only the last element can be cut.
    """
    # Elements are stored in the order they were read, so the last key is the element the file ended in
    # (max() over the tags would cost a hundred Python-level tag comparisons per file).
    tag = next(reversed(ds.keys()), None)
    if tag is None:
        return None
    last = ds.get_item(tag, keep_deferred=True)  # a deferred PixelData stays in the file
    if last is None or not getattr(last, "is_raw", False) or last.length == 0xFFFFFFFF:
        return None
    if last.value is None:  # deferred: its bytes are still in the file
        have = max(os.path.getsize(path) - last.value_tell, 0)
    else:
        have = len(last.value)
    return (int(last.tag), have, int(last.length)) if have < last.length else None


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
MISSING = object()
_PLAIN_DS = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a subset of PS3.5 6.2 DS, fullmatch after strip


class Header:
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
        value = self._cache.get(key, MISSING)
        if value is MISSING:
            value = self._cache[key] = self.ds.get(keyword, MISSING)
        return default if value is MISSING else value

    def derive(self, keyword: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(self.get(keyword))``, computed once per distinct raw value (``fn`` must be pure)."""
        key = self._key(keyword)
        if not key:
            return fn(None if key == () else self.ds.get(keyword))
        key = ("derived", fn, *key)
        value = self._cache.get(key, MISSING)
        if value is MISSING:
            value = self._cache[key] = fn(self.get(keyword))
        return value

    def pixel_source(self) -> Any:
        """The PixelData bytes, or its raw element when the value was left in the file (see ``DEFER_BYTES``).

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
        """ImagePositionPatient as ``(floats, decimals)`` parsed from its raw bytes; ``MISSING`` to ask pydicom.

        Only plain decimal strings (which pydicom converts with ``float`` and accepts without a warning)
        are parsed here; anything else goes through pydicom, so its values, warnings and errors stay.
        """
        raw = self.ds.get_item(0x00200032)
        if raw is None or not raw.is_raw or raw.VR not in (None, "DS") or not isinstance(raw.value, bytes):
            return MISSING
        from pydicom import config

        if config.use_DS_numpy or config.use_DS_decimal:
            return MISSING
        items = raw.value.decode("iso8859").strip().rstrip(" \x00").split("\\")
        if len(items) < 2 or not all(len(x) <= 16 and _PLAIN_DS.fullmatch(x) for x in items):
            return MISSING
        return np.asarray([float(x) for x in items], dtype=np.float64), [ds_decimals(x) for x in items]

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
            value = self.get(name, MISSING)
            if value is not MISSING:
                return value
        return getattr(self.ds, name)


def scan(folder: Path, where: str | None, *, header_only: bool) -> dict[str, list[tuple[Path, Any]]]:
    """Read every file of ``folder`` and group the datasets by SeriesInstanceUID."""
    problem = link_problem(folder)
    if problem:
        raise ImageReadError(problem, where=where_of(folder, where))
    if not folder.exists():
        raise ImageReadError("folder does not exist; check the path in the manifest", where=where_of(folder, where))
    if not folder.is_dir():
        raise ImageReadError("not a folder", where=where_of(folder, where))
    files = _candidate_files(folder, where)
    if not files:
        raise ImageReadError("folder holds no DICOM files; check the path in the manifest",
                             where=where_of(folder, where))
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    cache: dict[tuple[Any, ...], Any] = {}
    for f in files:
        ds = dcmread(f, where, header_only=header_only)
        try:
            uid = str(Header(ds, cache).get("SeriesInstanceUID", "") or "")
        except Exception:  # noqa: BLE001 -- a corrupt value: treated as absent, refused below
            uid = ""
        if not uid:
            raise ImageReadError("DICOM file has no SeriesInstanceUID (0020,000E); re-export the series",
                                 where=where_of(f, where))
        groups[uid].append((f, ds))
    return dict(groups)


def n_frames(ds: Any) -> int:
    """NumberOfFrames (1 when absent or unreadable)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def has_pixels(ds: Any, header_only: bool) -> bool:
    """Whether the dataset is an image (has pixel data; Rows and Columns for headers read without pixels)."""
    if header_only:
        # stop_before_pixels drops PixelData; Rows/Columns are in every image IOD.
        return "Rows" in ds and "Columns" in ds
    return any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _info(uid: str, items: list[tuple[Path, Any]], header_only: bool) -> SeriesInfo:
    ds0 = items[0][1]
    image_items = [(p, ds) for p, ds in items if has_pixels(ds, header_only)]
    n_images = sum(n_frames(ds) for _, ds in image_items)
    orients = set()
    for _, ds in image_items:
        try:
            iop = frame_orientation(ds, 0)
        except (TypeError, ValueError, IndexError):
            iop = None
        if iop is not None and iop.shape == (6,):
            orients.add(orientation_name(normal_of(iop)))
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
    groups = scan(Path(folder), where, header_only=True)
    infos = [_info(uid, items, True) for uid, items in groups.items()]
    return sorted(infos, key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.uid))


def select_series(groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, folder: Path,
                  where: str | None) -> str:
    """The UID to read: ``series_uid`` when given, else the folder's only image series."""
    if series_uid is not None:
        if series_uid in groups:
            return series_uid
        listing = "; ".join(_info(u, it, False).summary() for u, it in groups.items())
        raise ImageReadError(f"series {series_uid} not found in the folder; it holds: {listing}. "
                             "Fix t1_series_uid/t2_series_uid in the manifest", where=where_of(folder, where))
    image_uids = [u for u, items in groups.items() if any(has_pixels(ds, False) for _, ds in items)]
    if len(image_uids) == 1:
        return image_uids[0]
    if not image_uids:  # only non-image objects: name one of them
        path, ds = next(iter(groups.values()))[0]
        raise ImageReadError(no_pixels_message(ds), where=where_of(path, where))
    listing = "; ".join(_info(u, groups[u], False).summary() for u in sorted(image_uids))
    raise ImageReadError(f"folder holds {len(image_uids)} image series: {listing}. Set t1_series_uid/t2_series_uid "
                         "in the manifest (or series_uid=) to choose one", where=where_of(folder, where))


def no_pixels_message(ds: Any) -> str:
    """The refusal of a DICOM object without pixel data (a report, a presentation state, ...)."""
    sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown"))
    modality = str(ds.get("Modality", "") or "").strip()
    what = f"Modality {modality}, " if modality else ""
    return (f"not an image series ({what}SOP class {sop}: the DICOM file has no pixel data); point the manifest at "
            "the sagittal T1W/T2W MR series, or remove the file from the series folder")


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


def derived(ds: Any, keyword: str, fn: Callable[[Any], Any]) -> Any:
    """``fn(ds.get(keyword))``, computed once per series for the repeated elements of a :class:`Header`."""
    return ds.derive(keyword, fn) if isinstance(ds, Header) else fn(ds.get(keyword))


def _floats(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    arr = np.asarray([float(x) for x in v], dtype=np.float64)
    arr.flags.writeable = False  # shared by the slices of a series
    return arr


def _spacing(v: Any) -> tuple[float, float] | None:
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or len(v) != 2:
        raise ValueError(f"expected 2 values, got {v!r}")
    return float(v[0]), float(v[1])


def joined(v: Any) -> str:
    """Multi-valued text joined with backslashes, as written in the file."""
    if isinstance(v, str):
        return v
    return "\\".join(str(x) for x in (v or []))


def frame_orientation(ds: Any, frame: int) -> np.ndarray | None:
    """ImageOrientationPatient of a frame (classic, else from the functional groups)."""
    arr = derived(ds, "ImageOrientationPatient", _floats)
    if arr is None:
        arr = _floats(_fg(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"))
    return arr


def frame_position(ds: Any, frame: int) -> tuple[np.ndarray, list[int | None]] | None:
    """ImagePositionPatient of a frame and the decimals written in each value."""
    v = _fg(ds, frame, "PlanePositionSequence", "ImagePositionPatient") if n_frames(ds) > 1 else None
    if v is None:
        if isinstance(ds, Header):
            pos = ds.position()
            if pos is not MISSING:
                return pos
        v = ds.get("ImagePositionPatient")
    if v is None:
        v = _fg(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    if v is None:
        return None
    values = [v] if isinstance(v, (str, bytes, float, int)) else list(v)
    return (np.asarray([float(x) for x in values], dtype=np.float64),
            [ds_decimals(str(x)) for x in values])


def frame_spacing(ds: Any, frame: int) -> tuple[float, float] | None:
    """PixelSpacing (between rows, between columns) of a frame."""
    sp = derived(ds, "PixelSpacing", _spacing)
    if sp is None:
        sp = _spacing(_fg(ds, frame, "PixelMeasuresSequence", "PixelSpacing"))
    return sp


def frame_rescale(ds: Any, frame: int) -> tuple[Any, Any]:
    """(RescaleSlope, RescaleIntercept) of a frame as written (PS3.3 C.11.1), None for an absent element."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        slope = _fg(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _fg(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    return slope, intercept
