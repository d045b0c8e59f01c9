"""DICOM pixel data: decoding, the native fast path, rescale and PhotometricInterpretation.

* Uncompressed little-endian monochrome pixel data (PS3.5 A.1, A.2) is read straight from the file
  into the array pydicom's ``pixel_array`` would give (:func:`native_pixels`); anything else is decoded
  by pydicom: big-endian (A.3) and deflated (A.5) data, and the compressed transfer syntaxes (JPEG
  baseline/lossless, JPEG-LS, JPEG 2000, RLE) through the pylibjpeg plugins.
* The length of uncompressed pixel data must be at least ``Rows x Columns x NumberOfFrames x BitsAllocated / 8``
  (plus one padding byte when odd, PS3.5 7.1.1): a shorter value is a truncated file and is refused naming the
  file. A longer one holds bytes the header does not describe: the described frames are read and the excess is
  ignored, as pydicom, GDCM and DICOM viewers do (pydicom's own test file ``MR_small_padded.dcm`` carries 128
  such bytes); the caller is told (``excess``) and warns once per series with the counts.
* RescaleSlope/RescaleIntercept (PS3.3 C.11.1) are applied per slice, in float32.
* PhotometricInterpretation (0028,0004, PS3.3 C.7.6.3.1.2) must be MONOCHROME1 or MONOCHROME2. In a
  MONOCHROME1 image the minimum value is displayed white; spinedx turns it into the MONOCHROME2 convention
  (minimum black) after rescale with ``v' = (max + min) - v``, where max and min are the largest and smallest
  rescaled voxel of the whole series: the same values, mirrored within their range, so a MONOCHROME1 series
  gives the voxels (up to that affine map) and the z-scored patches of its MONOCHROME2 twin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.discovery import DEFLATED, Header, where_of
from spinedx.io.geometry import Slice2D

# Uncompressed little-endian transfer syntaxes (PS3.5 A.1, A.2): the pixel data is the array itself.
NATIVE_LE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
# Transfer syntaxes whose PixelData is not encapsulated: its length is fixed by the header.
UNCOMPRESSED_SYNTAXES = NATIVE_LE_SYNTAXES | {EXPLICIT_BIG_ENDIAN, DEFLATED}
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def _header_ints(ds: Any) -> tuple[int, int, int, int, int, int] | None:
    """(rows, cols, frames, bits allocated, bits stored, pixel representation) when all are plain ints."""
    vals = (ds.get("Rows"), ds.get("Columns"), ds.get("NumberOfFrames", 1), ds.get("BitsAllocated"),
            ds.get("BitsStored"), ds.get("PixelRepresentation"))
    try:
        out = tuple(int(v) for v in vals)
    except (TypeError, ValueError):
        return None
    return out  # type: ignore[return-value]


def expected_length(ds: Any) -> int | None:
    """Bytes of uncompressed pixel data the header describes (without the padding byte), None if unknown."""
    ints = _header_ints(ds)
    if ints is None:
        return None
    rows, cols, frames, bits = ints[:4]
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        return None
    if min(rows, cols, frames, bits, samples) < 1:
        return None
    count = rows * cols * frames * samples
    return (count + 7) // 8 if bits == 1 else count * ((bits + 7) // 8)


def _length_problem(actual: int, expected: int) -> str | None:
    """The refusal of pixel data shorter than the header describes (None when long enough)."""
    if actual < expected:
        return (f"truncated pixel data: the file holds {actual} of the {expected} bytes that Rows x Columns x "
                "NumberOfFrames x BitsAllocated/8 need (an incomplete copy or transfer); copy or export the file "
                "again")
    return None


def _note_excess(excess: list[tuple[str, int, int]] | None, path: Path | None, actual: int, expected: int) -> None:
    """Record pixel data longer than described (beyond the one padding byte of an odd length, PS3.5 8.1.1)."""
    if excess is not None and actual > expected + expected % 2:
        excess.append((str(path), actual, expected))


def _read_deferred(path: Path, raw: Any, expected: int, dtype: str, count: int,
                   out: np.ndarray | None = None, excess: list[tuple[str, int, int]] | None = None) -> np.ndarray:
    """Read a deferred native PixelData value from its file into an array.

    The value pydicom would read is ``min(declared length, bytes left in the file)`` long; it must hold at least
    the expected length, of which the first ``expected`` bytes are read (a longer value is noted in ``excess``).
    ``out``: a byte buffer of ``expected`` bytes to read into (the result is a view of it) instead of a new array.

    Raises:
        ImageReadError: the value is shorter than the header says (truncated file).
    """
    with open(path, "rb", buffering=0) as fh:
        actual = min(raw.length, max(os.fstat(fh.fileno()).st_size - raw.value_tell, 0))
        problem = _length_problem(actual, expected)
        if problem:
            raise ImageReadError(problem, where=str(path))
        _note_excess(excess, path, actual, expected)
        fh.seek(raw.value_tell)
        arr = np.empty(count, dtype=dtype) if out is None else out.view(dtype)
        view, done = arr.view(np.uint8).data, 0
        while done < expected:
            n = fh.readinto(view[done:])
            if not n:
                raise ImageReadError(_length_problem(done, expected) or "truncated pixel data", where=str(path))
            done += n
    return arr


def native_pixels(ds: Any, path: Path | None = None,
                  excess: list[tuple[str, int, int]] | None = None) -> np.ndarray | None:
    """Pixel data of an uncompressed little-endian monochrome dataset, read straight from the buffer.

    Gives the same array as pydicom's ``pixel_array`` (same dtype, shape, and masking or sign
    extension of the unused high bits when BitsStored < BitsAllocated, PS3.5 8.1.1) without its
    per-call bookkeeping, which costs several times the file read for a 512x512 slice. Anything
    else (compressed or big-endian syntaxes, bit-packed or float data) returns None so that pydicom
    decodes it with its own checks and messages.

    Pixel data longer than the header describes gives the described frames (as pydicom with
    ``allow_excess_frames=False``) and is noted in ``excess`` as ``(file, bytes, bytes described)``.

    Raises:
        ImageReadError: the pixel data is shorter than the header describes (truncated; named with the file
            when ``path`` is given, the caller adds it otherwise).
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") not in NATIVE_LE_SYNTAXES:
        return None
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None
    data = ds.pixel_source() if isinstance(ds, Header) else ds.get("PixelData")
    deferred = not isinstance(data, bytes) and getattr(data, "is_raw", False) and path is not None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    bits, stored, signed = ds.get("BitsAllocated"), ds.get("BitsStored"), ds.get("PixelRepresentation")
    frames = ds.get("NumberOfFrames", 1)
    if not (isinstance(data, bytes) or deferred) or ds.get("PhotometricInterpretation") not in MONOCHROME:
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
        out = ds.scratch(expected) if isinstance(ds, Header) and frames == 1 else None
        arr = _read_deferred(path, data, expected, dtype, count, out, excess)
    else:
        problem = _length_problem(len(data), expected)
        if problem:
            raise ImageReadError(problem, where=None if path is None else str(path))
        _note_excess(excess, path, len(data), expected)
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


def decode(path: Path, ds: Any, where: str | None, excess: list[tuple[str, int, int]] | None = None) -> np.ndarray:
    """The stored pixel values of one dataset (all frames), refusing truncated or undecodable data.

    Uncompressed pixel data longer than the header describes gives the described frames and is noted in ``excess``.
    """
    try:
        arr = native_pixels(ds, path, excess)
    except ImageReadError as exc:
        raise ImageReadError(exc.message, where=where_of(path, where)) from None
    except Exception as exc:  # noqa: BLE001 -- a pixel module element pydicom cannot convert
        text = " ".join(str(exc).split())[:200]
        raise ImageReadError(f"the pixel description (Rows, Columns, BitsAllocated, BitsStored, PixelRepresentation, "
                             f"NumberOfFrames) is not valid ({text}); re-export the series",
                             where=where_of(path, where)) from None
    if arr is not None:
        return arr
    ts = str(getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID") or "")
    plain = ds.ds if isinstance(ds, Header) else ds
    if ts in UNCOMPRESSED_SYNTAXES:
        try:
            expected = expected_length(ds)
        except Exception:  # noqa: BLE001 -- unconvertible elements: pydicom's decoder below says what is wrong
            expected = None
        data = plain.get("PixelData")
        if expected is not None and isinstance(data, bytes):
            problem = _length_problem(len(data), expected)
            if problem:
                raise ImageReadError(problem, where=where_of(path, where))
            _note_excess(excess, path, len(data), expected)
    try:
        import warnings

        # pydicom would return whole excess frames as more frames (allow_excess_frames) and warn itself: spinedx
        # reads the described frames and warns once per series (its caller).
        plain.pixel_array_options(allow_excess_frames=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The pixel data is \d+ bytes long")
            arr = plain.pixel_array
    except Exception as exc:  # noqa: BLE001 -- missing decoder plugin, corrupt stream, ...
        from pydicom.uid import UID

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
    return np.asarray(arr)


def finite_rescale(dtype: np.dtype, slope: float, intercept: float) -> bool:
    """Whether ``int * float32(slope) + float32(intercept)`` is finite for every integer of ``dtype``."""
    if dtype.kind not in "biu":
        return False
    info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
    bound = abs(float(np.float32(slope))) * max(abs(int(info.min)), int(info.max)) + abs(float(np.float32(intercept)))
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
            vol[k] = px.astype(np.float32) * np.float32(slope) + np.float32(intercept)
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
