"""DICOM series reading: ordering, geometry, several series, tilt, compression."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicomfixtures import write_multiframe, write_non_image, write_series
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from spinedx.errors import ImageReadError
from spinedx.io import Image, list_dicom_series, read_image


def _volume(nz: int = 5, ny: int = 6, nx: int = 7, seed: int = 0) -> np.ndarray:
    """Distinct integer voxels so any misordering shows."""
    rng = np.random.default_rng(seed)
    return rng.permutation(nz * ny * nx).reshape(nz, ny, nx).astype(np.int16)


def _sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_sagittal_order_follows_normal_not_instance_number_or_file_order(tmp_path):
    vol = _volume()
    files = write_series(tmp_path / "s", vol, spacing=(0.5, 0.6, 4.0), origin=(10.0, -20.0, 30.0), shuffle=True,
                         instance_numbers="reversed")
    img = read_image(tmp_path / "s")
    np.testing.assert_array_equal(img.array, vol)
    assert img.array.dtype == np.float32
    assert img.meta["files"] == [str(f) for f in files]
    # spacing from positions (the fixture writes a wrong SliceThickness of 8 mm)
    np.testing.assert_allclose(img.spacing, [0.5, 0.6, 4.0])
    assert img.meta["SliceThickness"] == 8.0
    expected = np.array([[0, 0, -4.0, 10.0], [0.5, 0, 0, -20.0], [0, -0.6, 0, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(img.affine, expected, atol=1e-9)
    assert img.meta["shear_deg"] == 0.0


def test_order_geometry_and_voxels_match_simpleitk(tmp_path):
    vol = _volume(6, 8, 9, seed=1)
    # rows anterior->posterior and columns feet->head: the normal points to the patient's left (+x)
    write_series(tmp_path / "s", vol, spacing=(0.7, 0.8, 3.3), origin=(-5.0, 40.0, -60.0), row_dir=(0, 1, 0),
                 col_dir=(0, 0, 1), shuffle=True, seed=3)
    ours = read_image(tmp_path / "s")
    ref = _sitk_series(tmp_path / "s")
    # SimpleITK's series reader in the file's order: same voxels before reorientation
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), vol)
    # DICOMOrient(..., "PIR") puts index axes towards posterior, inferior, right: spinedx's canonical grid
    canon = Image.from_sitk(sitk.DICOMOrient(ref, "PIR"))
    np.testing.assert_array_equal(ours.array, canon.array)
    np.testing.assert_allclose(ours.affine, canon.affine, atol=1e-6)
    np.testing.assert_array_equal(ours.array, vol[::-1, ::-1, :])  # rows and slices flipped
    assert ours.meta["reorientation"] == {"source_axes_xyz": [0, 1, 2], "flipped_xyz": [False, True, True],
                                          "source_shape_zyx": [6, 8, 9]}
    assert ours.slice_normal[0] == pytest.approx(-1.0)


def test_two_series_in_one_folder(tmp_path):
    t1, t2 = _volume(4, 5, 6, seed=2), _volume(5, 6, 7, seed=3)
    write_series(tmp_path / "mixed", t1, series_uid="1.2.3.1", series_description="SAG T1", prefix="A", shuffle=True)
    write_series(tmp_path / "mixed", t2, series_uid="1.2.3.2", series_description="SAG T2", prefix="B",
                 series_number=2)
    infos = list_dicom_series(tmp_path / "mixed")
    assert [(s.uid, s.description, s.n_files, s.orientation) for s in infos] == [
        ("1.2.3.1", "SAG T1", 4, "sagittal"), ("1.2.3.2", "SAG T2", 5, "sagittal")]
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "mixed", where="patient P7 t2")
    msg = str(exc.value)
    assert msg.startswith("patient P7 t2: ")
    for part in ("1.2.3.1", "1.2.3.2", "SAG T1", "SAG T2", "t1_series_uid"):
        assert part in msg
    np.testing.assert_array_equal(read_image(tmp_path / "mixed", "1.2.3.1").array, t1)
    img2 = read_image(tmp_path / "mixed", "1.2.3.2")
    np.testing.assert_array_equal(img2.array, t2)
    assert img2.meta["SeriesDescription"] == "SAG T2" and img2.meta["SeriesInstanceUID"] == "1.2.3.2"
    with pytest.raises(ImageReadError, match="series 9.9.9 not found.*1.2.3.1"):
        read_image(tmp_path / "mixed", "9.9.9")


def test_non_image_object_beside_the_series_is_ignored_when_unambiguous(tmp_path):
    vol = _volume()
    write_series(tmp_path / "s", vol)
    write_non_image(tmp_path / "s" / "SR0001.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "s").array, vol)


def test_gantry_tilt_builds_sheared_affine(tmp_path):
    vol = np.zeros((5, 12, 10), dtype=np.int16)
    vol[2, 4, 3] = 1000  # marker at (j=3, i=4, k=2)
    row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row, col)
    tilt = np.deg2rad(6.0)
    slice_dir = np.cos(tilt) * normal + np.sin(tilt) * col  # positions drift along the columns
    origin, sp = np.array([12.0, -30.0, 45.0]), (0.8, 0.9, 4.0)
    files = write_series(tmp_path / "tilt", vol, spacing=sp, origin=origin, row_dir=row, col_dir=col,
                         slice_dir=slice_dir, shuffle=True)
    img = read_image(tmp_path / "tilt")
    np.testing.assert_array_equal(img.array, vol)
    assert img.meta["shear_deg"] == pytest.approx(6.0, abs=0.01)
    ipp2 = np.array([float(v) for v in pydicom.dcmread(files[2]).ImagePositionPatient])
    expected = ipp2 + 3 * sp[0] * row + 4 * sp[1] * col
    np.testing.assert_allclose(img.index_to_physical([3, 4, 2])[0], expected, atol=1e-4)
    np.testing.assert_allclose(img.physical_to_index(expected)[0], [3, 4, 2], atol=1e-6)
    # the sheared geometry survives the trip to SimpleITK (used by resampling downstream)
    np.testing.assert_allclose(img.to_sitk().TransformIndexToPhysicalPoint((3, 4, 2)), expected, atol=1e-4)
    # the slice planes are still sagittal
    assert img.meta["slice_spacing_mm"] == pytest.approx(4.0 * np.cos(tilt), abs=1e-3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_lossless_compressed_round_trip(tmp_path, syntax):
    vol = (_volume(3, 32, 32, seed=5) % 3000).astype(np.int16)
    files = write_series(tmp_path / "c", vol, transfer_syntax=syntax, rescale=(0.5, -100.0))
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    img = read_image(tmp_path / "c")
    np.testing.assert_allclose(img.array, vol, atol=1e-4)  # stored (v + 100) / 0.5, rescaled back


def test_jpeg_baseline_decoded(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    vol = np.stack([(yy * 3 + xx * 4 + 10 * k) for k in range(3)]).astype(np.int16)
    files = write_series(tmp_path / "j", vol, transfer_syntax=JPEGBaseline8Bit)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    img = read_image(tmp_path / "j")
    assert np.abs(img.array - vol).mean() < 2.0  # lossy


def test_single_dcm_file_reads_its_series(tmp_path):
    vol = _volume()
    files = write_series(tmp_path / "s", vol)
    write_series(tmp_path / "s", _volume(seed=9), prefix="OTHER", series_description="other")
    img = read_image(files[3])
    np.testing.assert_array_equal(img.array, vol)


def test_rescale_applied_per_slice(tmp_path):
    vol = np.stack([np.full((4, 4), 10 * (k + 1)) for k in range(3)])
    files = write_series(tmp_path / "r", vol, rescale=(1.0, 0.0))
    ds = pydicom.dcmread(files[1])  # slice 1 stored 20; give it its own slope
    ds.RescaleSlope, ds.RescaleIntercept = "2.5", "-1"
    ds.save_as(files[1])
    img = read_image(tmp_path / "r")
    np.testing.assert_allclose(img.array[:, 0, 0], [10.0, 49.0, 30.0])


def test_enhanced_multiframe_file(tmp_path):
    vol = _volume(5, 6, 7, seed=4) * 2 + 10  # exactly representable with slope 2, intercept 10
    path = write_multiframe(tmp_path / "mf" / "enhanced.dcm", vol, spacing=(0.5, 0.6, 3.0), origin=(1.0, 2.0, 3.0),
                            frame_order=[3, 0, 4, 1, 2], rescale=(2.0, 10.0))
    for target in (path, tmp_path / "mf"):  # the file itself, or its folder
        img = read_image(target)
        np.testing.assert_allclose(img.array, vol, atol=1e-4)
        np.testing.assert_allclose(img.spacing, [0.5, 0.6, 3.0])
        np.testing.assert_allclose(img.origin, [1.0, 2.0, 3.0])
        assert img.meta["files"][0].endswith("enhanced.dcm (frame 2)")
