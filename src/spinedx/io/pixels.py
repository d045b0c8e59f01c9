"""DICOM pixel data through pydicom's public API: decoding, length checks, rescale and PhotometricInterpretation.

* Every transfer syntax is decoded by pydicom (``pydicom.pixels.pixel_array``): the uncompressed ones (PS3.5 A.1,
  A.2, A.3 big endian, A.5 deflated) by its native decoder, the compressed ones (JPEG baseline/lossless, JPEG-LS,
  JPEG 2000, RLE) through the pylibjpeg plugins. The array is pydicom's (dtype, shape, unused high bits masked or
  sign-extended, PS3.5 8.1.1); a slice's pixel bytes are read from the file when it is decoded and let go after.
* The length of uncompressed pixel data must be at least what the header describes
  (``pydicom.pixels.utils.get_expected_length``: Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated/8,
  plus one padding byte when odd, PS3.5 7.1.1): a shorter value is a truncated file and is refused naming the file. A
  longer one holds bytes the header does not describe: the described frames are read and the excess is ignored, as
  pydicom (``allow_excess_frames=False``), GDCM and DICOM viewers do (pydicom's own test file ``MR_small_padded.dcm``
  carries 128 such bytes); the caller is told (``excess``) and warns once per series with the counts.
* RescaleSlope/RescaleIntercept (PS3.3 C.11.1) are applied per slice with ``pydicom.pixels.apply_rescale`` (in
  float64, as pydicom does, then stored as float32), with the slice's own values (a frame's from the functional
  groups of an enhanced file).
* PhotometricInterpretation (0028,0004, PS3.3 C.7.6.3.1.2) must be MONOCHROME1 or MONOCHROME2. In a
  MONOCHROME1 image the minimum value is displayed white; spinedx turns it into the MONOCHROME2 convention
  (minimum black) after rescale with ``v' = (max + min) - v``, where max and min are the largest and smallest
  rescaled voxel of the whole series: the same values, mirrored within their range, so a MONOCHROME1 series
  gives the voxels (up to that affine map) and the z-scored patches of its MONOCHROME2 twin.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.discovery import DEFLATED, where_of
from spinedx.io.geometry import Slice2D

# Transfer syntaxes whose PixelData is not encapsulated (PS3.5 A.1, A.2, A.3, A.5): its length is fixed by the header.
UNCOMPRESSED_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", DEFLATED})
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def _length_problem(actual: int, expected: int) -> str | None:
    """The refusal of pixel data shorter than the header describes (None when long enough)."""
    if actual < expected:
        return (f"truncated pixel data: the file holds {actual} of the {expected} bytes that Rows x Columns x "
                "NumberOfFrames x BitsAllocated/8 need (an incomplete copy or transfer); copy or export the file "
                "again")
    return None


def _check_length(path: Path, ds: Any, where: str | None, excess: list[tuple[str, int, int]] | None) -> None:
    """Refuse uncompressed pixel data shorter than described; note a longer one in ``excess`` (beyond the one
    padding byte of an odd length, PS3.5 8.1.1) as ``(file, bytes, bytes described)``."""
    from pydicom.pixels.utils import get_expected_length

    try:
        expected = get_expected_length(ds, unit="bytes")
    except Exception:  # noqa: BLE001 -- unconvertible or missing elements: pydicom's decoder says what is wrong
        return
    data = ds.get("PixelData")  # a deferred value is read from the file here
    if not isinstance(data, bytes):
        return
    problem = _length_problem(len(data), expected)
    if problem:
        raise ImageReadError(problem, where=where_of(path, where))
    if excess is not None and len(data) > expected + expected % 2:
        excess.append((str(path), len(data), expected))


def decode(path: Path, ds: Any, where: str | None, excess: list[tuple[str, int, int]] | None = None) -> np.ndarray:
    """The stored pixel values of one dataset (all frames) as pydicom decodes them, refusing truncated or
    undecodable data.

    Uncompressed pixel data longer than the header describes gives the described frames and is noted in ``excess``.
    The dataset's PixelData value (read from the file on first access when it was deferred) is let go afterwards:
    the caller copies the array into the volume, and a series' pixel bytes are never all held at once.
    """
    from pydicom.pixels import pixel_array
    from pydicom.uid import UID

    ts = str(getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID") or "")
    if ts in UNCOMPRESSED_SYNTAXES:
        _check_length(path, ds, where, excess)
    # pydicom would return whole excess frames as more frames (allow_excess_frames) and warn itself: spinedx reads
    # the described frames and warns once per series (its caller). An image without SamplesPerPixel is read as one
    # sample per pixel, as the reader's header checks take it (spinedx.io.dicom); pydicom would refuse it.
    options: dict[str, Any] = {"allow_excess_frames": False}
    if "SamplesPerPixel" not in ds:
        options["samples_per_pixel"] = 1
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The pixel data is \d+ bytes long")
            arr = pixel_array(ds, **options)
    except Exception as exc:  # noqa: BLE001 -- missing decoder plugin, corrupt stream, invalid pixel description
        ts_name = UID(ts).name if ts else "(none)"
        text = " ".join(str(exc).split())
        if ts in UNCOMPRESSED_SYNTAXES:
            hint = "the header's pixel description (Rows, Columns, Bits*, PixelRepresentation) is invalid; " \
                   "re-export the series"
        elif any(w in text.lower() for w in ("plugin", "decoder", "no pixel data handler", "not available",
                                              "missing required dependencies")):
            hint = ("install the pydicom decoders (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, "
                    "pylibjpeg-rle) or re-export uncompressed")
        else:
            hint = "the compressed data is corrupt or truncated; copy or export the file again"
        raise ImageReadError(f"cannot decode pixel data (transfer syntax {ts_name}): {text[:300]}. {hint}",
                             where=where_of(path, where)) from None
    finally:
        if "PixelData" in ds:
            # The bytes pydicom read from the file stay in the dataset otherwise: the decoded array, copied into the
            # volume by the caller, is all that is needed, and a long series would hold its pixel data twice.
            del ds.PixelData
    return np.asarray(arr)


@lru_cache(maxsize=64)
def _rescale_module(slope: float, intercept: float) -> Any:
    """A Modality LUT module holding only ``slope`` and ``intercept`` (what :func:`pydicom.pixels.apply_rescale`
    reads), so a frame of an enhanced file, whose values come from its functional groups, is rescaled the same way."""
    from pydicom import Dataset

    ds = Dataset()
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    return ds


def rescaled(px: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``px * slope + intercept`` as pydicom computes it (``apply_rescale``, float64)."""
    from pydicom.pixels import apply_rescale

    return apply_rescale(px, _rescale_module(float(slope), float(intercept)))


def finite_rescale(dtype: np.dtype, slope: float, intercept: float) -> bool:
    """Whether ``int * slope + intercept``, stored as float32, is finite for every integer of ``dtype``."""
    if dtype.kind not in "biu":
        return False
    info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
    bound = abs(float(slope)) * max(abs(int(info.min)), int(info.max)) + abs(float(intercept))
    return bound < 3.0e38  # float32 max is 3.4e38; false for inf and NaN too


def stack_pixels(slices: Sequence[Slice2D], where: str | None) -> tuple[np.ndarray, bool]:
    """Decode, rescale and stack the sorted slices into a float32 volume (nz, rows, cols).

    Each slice's ``extra`` holds ``slope``, ``intercept`` and ``photometric``. Returns the volume and whether
    every voxel is known to be finite (integer data whose rescale cannot overflow), which spares the caller a
    pass over the volume.
    """
    vol = np.empty((len(slices), slices[0].rows, slices[0].cols), dtype=np.float32)
    finite = True
    for k, s in enumerate(slices):
        px = s.pixels()
        if px.shape != (s.rows, s.cols):
            raise ImageReadError(f"decoded pixel array has shape {px.shape}, expected ({s.rows}, {s.cols})",
                                 where=where_of(s.label, where))
        slope, intercept = s.extra["slope"], s.extra["intercept"]
        if slope != 1.0 or intercept != 0.0:
            vol[k] = rescaled(px, slope, intercept)
            finite = finite and finite_rescale(px.dtype, slope, intercept)
        else:
            vol[k] = px
            finite = finite and px.dtype.kind in "biu"
    if slices[0].extra["photometric"] == "MONOCHROME1":
        invert_monochrome1(vol, finite)
    return vol, finite


def invert_monochrome1(vol: np.ndarray, finite: bool) -> None:
    """In place: ``v' = (max + min) - v`` over the series, so minimum means black (PS3.3 C.7.6.3.1.2).

    Non-finite voxels are left for the finiteness check to refuse.
    """
    if not vol.size:
        return
    if finite:
        lo, hi = float(vol.min()), float(vol.max())
    else:
        ok = vol[np.isfinite(vol)]
        if not ok.size:
            return
        lo, hi = float(ok.min()), float(ok.max())
    np.subtract(np.float32(hi + lo), vol, out=vol)
