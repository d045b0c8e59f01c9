"""The reader gives what pydicom gives, on the paths that once had hand-made fast paths.

Large PixelData values (> 64 KiB) are left in the file by the first read (pydicom's ``defer_size``)
and decoded by ``pydicom.pixels.pixel_array`` when the sorted slice is stacked, positions in any
valid form are read, and integer voxels skip the finiteness pass. Each is checked here against
pydicom itself on images big enough (256 x 192, 96 KiB per slice) to take the deferred path. (The
former native decoder, header cache and position parser were removed: benchmarks showed them less
than 2x faster than pydicom, docs/io.md "Speed".)
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicomfixtures import write_series
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from spinedx.errors import ImageReadError
from spinedx.io import read_image
from spinedx.io.discovery import DEFER_BYTES
from spinedx.io.pixels import decode


def _big(nz: int = 4, lo: int = -500, hi: int = 3000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (nz, 256, 192)).astype(float)


def _pydicom_stack(files) -> np.ndarray:
    """Slices decoded and rescaled by pydicom alone, in the given (slice) order."""
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        px = ds.pixel_array.astype(np.float32)
        slope, inter = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        out.append(px * np.float32(slope) + np.float32(inter) if (slope, inter) != (1.0, 0.0) else px)
    return np.stack(out)


@pytest.mark.parametrize("lo,hi,rescale", [(-500, 3000, None), (0, 60000, None), (0, 3000, (0.5, -100.0))])
def test_deferred_native_series_equals_pydicom(tmp_path, lo, hi, rescale):
    files = write_series(tmp_path / "s", _big(lo=lo, hi=hi), shuffle=True, rescale=rescale)
    first_read = pydicom.dcmread(files[0], defer_size=DEFER_BYTES)  # as the reader's header pass
    assert first_read.get_item(0x7FE00010, keep_deferred=True).value is None  # the deferred path is taken
    img = read_image(tmp_path / "s", expect_sagittal=False)
    assert img.array.dtype == np.float32 and img.array.flags.c_contiguous
    np.testing.assert_array_equal(img.array, _pydicom_stack(files))


@pytest.mark.parametrize("signed", [False, True])
def test_unused_high_bits_are_shifted_out_as_pydicom_does(tmp_path, signed):
    files = write_series(tmp_path / "s", _big(lo=-500 if signed else 0, hi=2000))
    for f in files:  # 12 bits stored, garbage in the 4 unused bits of some pixels
        ds = pydicom.dcmread(f)
        raw = np.frombuffer(ds.PixelData, "<u2").copy()
        raw[::7] |= 0xF000
        ds.PixelData, ds.BitsStored, ds.HighBit = raw.tobytes(), 12, 11
        ds.save_as(f)
    img = read_image(tmp_path / "s", expect_sagittal=False)
    np.testing.assert_array_equal(img.array, _pydicom_stack(files))
    ds = pydicom.dcmread(files[0])
    direct = decode(files[0], pydicom.dcmread(files[0], defer_size=DEFER_BYTES), None)
    assert direct is not None and direct.dtype == ds.pixel_array.dtype
    np.testing.assert_array_equal(direct, ds.pixel_array)


def test_implicit_vr_and_compressed_series(tmp_path):
    files = write_series(tmp_path / "imp", _big())
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)
    np.testing.assert_array_equal(read_image(tmp_path / "imp", expect_sagittal=False).array, _pydicom_stack(files))
    files = write_series(tmp_path / "rle", _big(nz=3), transfer_syntax=RLELossless)
    np.testing.assert_array_equal(read_image(tmp_path / "rle", expect_sagittal=False).array, _pydicom_stack(files))


def test_truncated_deferred_pixel_data_is_named(tmp_path):
    files = write_series(tmp_path / "s", _big())
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-40])
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "s", expect_sagittal=False)
    msg = exc.value.one_line()
    assert files[2].name in msg and "truncated pixel data" in msg and "install" not in msg


def test_positions_not_in_plain_form_still_read(tmp_path):
    files = write_series(tmp_path / "s", _big(nz=3), spacing=(1.0, 1.0, 3.0))
    for k, f in enumerate(files):  # padded values: pydicom strips them, the direct parser leaves them to it
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [f"{-3.0 * k:.1f} ", " 0.0", "0"]  # along the normal (-1, 0, 0)
        ds.save_as(f)
    img = read_image(tmp_path / "s", expect_sagittal=False)
    np.testing.assert_allclose(img.affine[:3, 3], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(img.affine[:3, 2], [-3.0, 0.0, 0.0])
    np.testing.assert_array_equal(img.array, _pydicom_stack(files))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_rescale_overflow_is_still_refused(tmp_path):
    files = write_series(tmp_path / "s", _big(lo=1000, hi=3000), rescale=(1.0, 0.0))
    ds = pydicom.dcmread(files[1])
    ds.RescaleSlope, ds.RescaleIntercept = "1e36", "0"  # 1000 * 1e36 overflows float32
    ds.save_as(files[1])
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(tmp_path / "s", expect_sagittal=False)
