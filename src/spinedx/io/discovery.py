"""Finding DICOM series: scanning folders, reading headers once, grouping by series, listing series.

A folder is searched recursively; every file that may be DICOM is parsed once by pydicom
(``pydicom.dcmread`` with its large elements, PixelData, left in the file: see :data:`DEFER_BYTES`), and the
datasets are grouped by SeriesInstanceUID (0020,000E). Values are read through pydicom's own conversions
(``Dataset.get``); the per-frame accessors below read the image plane attributes of classic and enhanced
multi-frame files (DICOM PS3.3 C.7.6.2, C.7.6.16).
"""

from __future__ import annotations

import errno
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.geometry import ds_decimals, normal_of, orientation_name

# Files we never treat as part of a series.
_SKIP_NAMES = {"DICOMDIR", "LOCKFILE", "VERSION", "Thumbs.db"}
_SKIP_SUFFIXES = {".txt", ".md", ".json", ".csv", ".xml", ".html", ".pdf", ".jpg", ".png", ".nii", ".gz", ".zip"}

# Elements longer than this (in practice PixelData) are not loaded by the first read of a file (pydicom's
# ``defer_size``): pydicom reads such an element from the file on first access, when spinedx.io.pixels decodes the
# sorted slice, so a series' pixel bytes are never all held at once and a header-only check reads none of them.
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
    for f in files:
        ds = dcmread(f, where, header_only=header_only)
        try:
            uid = str(ds.get("SeriesInstanceUID", "") or "")
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


def select_series_to_read(groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, folder: Path,
                          where: str | None) -> str:
    """The UID of the series the reader reads from a folder's groups: ``series_uid`` when given, else the folder's only
    image series (several image series and no ``series_uid`` are refused, listing them)."""
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


def _floats(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    return np.asarray([float(x) for x in v], dtype=np.float64)


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
    arr = _floats(ds.get("ImageOrientationPatient"))
    if arr is None:
        arr = _floats(_fg(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"))
    return arr


def frame_position(ds: Any, frame: int) -> tuple[np.ndarray, list[int | None]] | None:
    """ImagePositionPatient of a frame and the decimals written in each value."""
    v = _fg(ds, frame, "PlanePositionSequence", "ImagePositionPatient") if n_frames(ds) > 1 else None
    if v is None:
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
    sp = _spacing(ds.get("PixelSpacing"))
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
