"""The reader is pydicom's public API: its rescale is pydicom's ``apply_rescale``, its pixels pydicom's ``pixel_array``.

Before, spinedx rescaled in float32 (``int * float32(slope) + float32(intercept)``), which differs from pydicom's
float64 ``apply_rescale`` by a rounding step wherever the slope or intercept is not exact in float32; the peer
corpus only agreed because its rescales are exact. These tests use a slope and intercept that are not.
"""

from __future__ import annotations

import numpy as np
import pydicom
from dicomfixtures import write_multiframe, write_series
from pydicom.pixels import apply_rescale

from spinedx.io import read_image
from spinedx.io.discovery import DEFER_BYTES
from spinedx.io.pixels import decode

SLOPE, INTERCEPT = 0.3, -7.1  # neither is exact in float32


def _values(nz: int = 4, ny: int = 40, nx: int = 36) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 3000, (nz, ny, nx)).astype(float)


def test_rescale_is_pydicoms_apply_rescale(tmp_path):
    write_series(tmp_path / "s", _values(), rescale=(SLOPE, INTERCEPT), shuffle=True)
    img = read_image(tmp_path / "s", expect_sagittal=False)
    datasets = [pydicom.dcmread(f) for f in img.meta["files"]]  # in the image's slice order
    expected = np.stack([apply_rescale(ds.pixel_array, ds).astype(np.float32) for ds in datasets])
    np.testing.assert_array_equal(img.array, expected)
    # the former float32 formula gives other voxels for these values: the test tells the two apart
    px = np.stack([ds.pixel_array for ds in datasets]).astype(np.float32)
    assert not np.array_equal(px * np.float32(SLOPE) + np.float32(INTERCEPT), expected)


def test_enhanced_frames_are_rescaled_as_pydicom_rescales(tmp_path):
    path = write_multiframe(tmp_path / "mf" / "enh.dcm", _values(nz=5), rescale=(SLOPE, INTERCEPT))
    ds = pydicom.dcmread(path)
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    module = pydicom.Dataset()  # the frame's Modality LUT module, from the shared functional group
    module.RescaleSlope, module.RescaleIntercept = pvt.RescaleSlope, pvt.RescaleIntercept
    frames = apply_rescale(ds.pixel_array, module).astype(np.float32)
    img = read_image(path, expect_sagittal=False)
    np.testing.assert_array_equal(img.array, frames[::-1])  # write_multiframe stores the slices reversed


def test_decode_gives_pixel_array_and_lets_go_of_the_bytes(tmp_path):
    files = write_series(tmp_path / "s", _values(nz=3, ny=256, nx=192))  # 96 KiB per slice: deferred
    ds = pydicom.dcmread(files[0], defer_size=DEFER_BYTES)
    assert ds.get_item(0x7FE00010, keep_deferred=True).value is None  # left in the file by the header pass
    arr = decode(files[0], ds, None)
    ref = pydicom.dcmread(files[0]).pixel_array
    assert arr.dtype == ref.dtype
    np.testing.assert_array_equal(arr, ref)
    assert "PixelData" not in ds  # the bytes read for decoding are not kept in the dataset (memory of long series)


def test_an_image_without_samples_per_pixel_is_read_as_one_sample(tmp_path):
    """pydicom's decoder needs SamplesPerPixel; spinedx read such files as one sample per pixel and still does."""
    files = write_series(tmp_path / "s", _values())
    ref = read_image(tmp_path / "s", expect_sagittal=False).array
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.SamplesPerPixel
        ds.save_as(f)
    np.testing.assert_array_equal(read_image(tmp_path / "s", expect_sagittal=False).array, ref)
