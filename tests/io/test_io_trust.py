"""Issue 8 on the reader: photometric interpretation, messages that name the file and tag, rounded positions,
big-endian and deflated transfer syntaxes."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicomfixtures import write_series
from pydicom.filewriter import dcmwrite
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from spinedx.errors import ImageReadError
from spinedx.io import Image, ImageReadWarning, read_image
from spinedx.preprocess import ExtractConfig, extract_patches


def _vol(nz: int = 5, ny: int = 40, nx: int = 36, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:ny, 0:nx]
    rng = np.random.default_rng(seed)
    base = 800 + 600 * np.exp(-((yy - ny / 2) ** 2 + (xx - nx / 2) ** 2) / 60.0)
    return np.stack([base + 40 * k + rng.normal(0, 30, (ny, nx)) for k in range(nz)]).round().astype(np.int16)


def _err(path, **kw) -> str:
    with pytest.raises(ImageReadError) as exc:
        read_image(path, **kw)
    return exc.value.one_line()


def _edit(files, fn) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        fn(ds)
        ds.save_as(f)


# -- PhotometricInterpretation ----------------------------------------------------------------------------
def test_monochrome1_is_inverted_and_gives_the_monochrome2_patches(tmp_path):
    """A MONOCHROME1 series (minimum shown white) stores max - v; read, it gives the MONOCHROME2 patches."""
    vol = _vol()
    write_series(tmp_path / "m2", vol)
    files = write_series(tmp_path / "m1", vol)
    stored_max = int(vol.max()) + 100
    _edit(files, lambda ds: (setattr(ds, "PhotometricInterpretation", "MONOCHROME1"),
                             setattr(ds, "PixelData", (stored_max - ds.pixel_array).astype(np.int16).tobytes())))
    m2, m1 = read_image(tmp_path / "m2"), read_image(tmp_path / "m1")
    assert m1.meta["PhotometricInterpretation"] == "MONOCHROME1"
    # exactly (max + min) - stored, over the whole series, after rescale
    stored = np.stack([pydicom.dcmread(f).pixel_array for f in files]).astype(np.float32)
    np.testing.assert_array_equal(m1.array, stored.max() + stored.min() - stored)
    cfg = ExtractConfig(register=False)
    p2 = extract_patches(m2, m2, [1, 2, 3], (8, 10, 28, 30), cfg).x
    p1 = extract_patches(m1, m1, [1, 2, 3], (8, 10, 28, 30), cfg).x
    r = np.corrcoef(p1.ravel(), p2.ravel())[0, 1]
    assert round(float(r), 2) == 1.00
    np.testing.assert_allclose(p1, p2, atol=1e-4)


@pytest.mark.parametrize("value", ["PALETTE COLOR", "YBR_FULL", ""])
def test_other_photometric_interpretations_are_refused_naming_the_tag(tmp_path, value):
    files = write_series(tmp_path / "s", _vol())
    _edit(files[1:2], lambda ds: setattr(ds, "PhotometricInterpretation", value))
    msg = _err(tmp_path / "s")
    assert files[1].name in msg and "PhotometricInterpretation (0028,0004)" in msg
    assert "MONOCHROME1/MONOCHROME2" in msg


def test_mixed_monochrome1_and_2_in_one_series_refused(tmp_path):
    files = write_series(tmp_path / "s", _vol())
    _edit(files[:2], lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"))
    msg = _err(tmp_path / "s")
    assert "PhotometricInterpretation (0028,0004) differs within the series" in msg


# -- messages that name the file and the tag --------------------------------------------------------------
def test_non_numeric_image_position_names_file_and_tag(tmp_path):
    files = write_series(tmp_path / "s", _vol(), origin=(10.0, 0.0, 0.0))
    data = files[2].read_bytes()  # ImagePositionPatient "8\\0\\0", rewritten in place (pydicom refuses to write it)
    assert data.count(b"8\\0\\0") == 1
    files[2].write_bytes(data.replace(b"8\\0\\0", b"a\\0\\0"))
    msg = _err(tmp_path / "s", where="P1 t2")
    assert msg.startswith("P1 t2: ") and files[2].name in msg and "ImagePositionPatient (0020,0032)" in msg
    assert "unexpected" not in msg


@pytest.mark.parametrize("cut", [40, 1000])
def test_truncated_uncompressed_file_says_truncated_pixel_data(tmp_path, cut):
    files = write_series(tmp_path / "s", _vol())  # 40 x 36 int16 = 2880 bytes: read with the header, not deferred
    data = files[3].read_bytes()
    files[3].write_bytes(data[:-cut])
    msg = _err(tmp_path / "s")
    assert files[3].name in msg and "truncated pixel data" in msg and "install" not in msg


def test_pixel_data_longer_than_the_header_says_gives_the_described_rows_with_one_warning(tmp_path):
    """Issue 18: the excess is ignored as pydicom, GDCM and viewers do (it was refused); one warning per series."""
    vol = _vol()
    files = write_series(tmp_path / "s", vol)
    _edit(files, lambda ds: setattr(ds, "Rows", 39))  # the data holds 40 rows
    with pytest.warns(ImageReadWarning) as rec:
        img = read_image(tmp_path / "s", expect_sagittal=False)
    assert len(rec) == 1  # once for the series, not once per file
    msg = str(rec[0].message)
    assert "in 5 of 5 file(s)" in msg and "2880 bytes" in msg and "= 2808" in msg and "excess ignored" in msg
    assert img.meta["warnings"] == [msg.split(": ", 1)[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the excess too
        ref = np.stack([pydicom.dcmread(f).pixel_array for f in files]).astype(np.float32)
    assert ref.shape == (5, 39, 36)
    np.testing.assert_array_equal(img.array, ref)  # the series is on the canonical grid as written
    np.testing.assert_array_equal(img.array, vol[:, :39, :])


def test_symlink_loop_is_named(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    msg = _err(tmp_path / "a", where="P1 t1")
    assert "symbolic link loop" in msg and "no such file" not in msg
    files = write_series(tmp_path / "s", _vol())
    files[0].unlink()
    files[0].symlink_to(files[0])  # a slice of the series is a link to itself
    msg = _err(tmp_path / "s")
    assert files[0].name in msg and "symbolic link loop" in msg


def test_rescale_on_some_files_only_refused(tmp_path):
    files = write_series(tmp_path / "s", _vol(), rescale=(2.0, -100.0))
    _edit(files[2:3], lambda ds: (delattr(ds, "RescaleSlope"), delattr(ds, "RescaleIntercept")))
    assert "RescaleSlope/RescaleIntercept (0028,1053/1052) are in" in _err(tmp_path / "s")
    files = write_series(tmp_path / "t", _vol(), rescale=(2.0, -100.0))
    _edit(files[2:3], lambda ds: delattr(ds, "RescaleIntercept"))
    msg = _err(tmp_path / "t")
    assert files[2].name in msg and "RescaleIntercept (0028,1052) is missing" in msg


# -- positions rounded to 0.1 mm ---------------------------------------------------------------------------
def _oblique_rounded(folder, missing: int | None = None) -> tuple[list, np.ndarray]:
    """An oblique sagittal stack (20 deg about S-I, 8 deg about A-P) whose positions are written to 0.1 mm."""
    a, b = np.deg2rad(20.0), np.deg2rad(8.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rot = rz @ ry
    row, col = rot @ np.array([0.0, 1.0, 0.0]), rot @ np.array([0.0, 0.0, -1.0])
    normal = np.cross(row, col)
    origin = np.array([-13.37, -101.234, 57.891])
    ks = [k for k in range(15) if k != missing]
    positions = [np.round(origin + k * 4.4 * normal, 1) for k in range(15)]
    vol = _vol(15, 24, 20)
    files = write_series(folder, vol[ks], row_dir=tuple(row), col_dir=tuple(col), spacing=(0.9, 0.9, 4.4),
                         positions=[positions[k] for k in ks], shuffle=True)
    return files, vol[ks]


def test_oblique_series_with_positions_rounded_to_tenth_mm_is_read_like_simpleitk(tmp_path):
    files, _ = _oblique_rounded(tmp_path / "obl")
    written = [str(v) for f in files for v in pydicom.dcmread(f).ImagePositionPatient]
    assert all(len(v.split(".")[1]) == 1 for v in written if "." in v)
    img = read_image(tmp_path / "obl")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "obl")))
    ref = Image.from_sitk(sitk.DICOMOrient(reader.Execute(), "PIR"))
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=0.15)  # both from 0.1 mm positions
    np.testing.assert_allclose(img.meta["position_rounding_mm"], [0.05, 0.05, 0.05])
    assert img.meta["shear_deg"] == 0.0  # rounding, not a gantry tilt
    assert img.meta["slice_spacing_mm"] == pytest.approx(4.4, abs=0.1)


def test_missing_slice_still_refused_with_rounded_positions(tmp_path):
    _oblique_rounded(tmp_path / "gap", missing=6)
    msg = _err(tmp_path / "gap")
    assert "slice spacing is not uniform" in msg and "missing slice" in msg


# -- transfer syntaxes against pydicom ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [(40, 36), (300, 256)])  # in the header read, and deferred (> 64 KiB)
def test_big_endian_series_equals_pydicom(tmp_path, size):
    vol = np.random.default_rng(1).integers(-500, 3000, (4, *size)).astype(np.int16)
    files = write_series(tmp_path / "be", vol, rescale=(0.5, -10.0))
    for f in files:
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = arr.astype(">i2").tobytes()
        ds["PixelData"].VR = "OW"
        ds.preamble = b"\0" * 128
        dcmwrite(f, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    ref = []
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
        ref.append(ds.pixel_array.astype(np.float32) * np.float32(0.5) + np.float32(-10.0))
    np.testing.assert_array_equal(read_image(tmp_path / "be").array, np.stack(ref))
    data = files[1].read_bytes()
    files[1].write_bytes(data[:-100])
    assert "truncated pixel data" in _err(tmp_path / "be")


def test_deflated_series_equals_pydicom(tmp_path):
    vol = np.random.default_rng(2).integers(0, 4000, (4, 300, 256)).astype(np.int16)
    files = write_series(tmp_path / "dfl", vol)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)
    ref = np.stack([pydicom.dcmread(f).pixel_array for f in files]).astype(np.float32)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(read_image(tmp_path / "dfl").array, ref)
