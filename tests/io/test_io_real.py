"""The readers on the real spine MRI samples in ../shared/data/real (see each PROVENANCE.md)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicomfixtures import write_image_series

from spinedx.io import Image, read_image

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _expected_lps(nii_affine: np.ndarray, s: int, a: int, b: int) -> np.ndarray:
    """nibabel's RAS affine -> LPS, columns reordered to (x=a, y=b, z=s)."""
    lps = RAS_TO_LPS @ nii_affine
    out = np.eye(4)
    out[:3, :3] = lps[:3, [a, b, s]]
    out[:3, 3] = lps[:3, 3]
    return out


def test_t2_lumbar_nifti(real_data):
    path = real_data / "sct_tutorial_data_t2_lumbar" / "t2_lumbar.nii.gz"
    img = read_image(path)
    nii = nib.load(path)
    data = np.asarray(nii.dataobj)
    assert data.shape == (38, 257, 201)
    # first file axis is left-right: 38 sagittal slices of 201 rows (S-I) x 257 columns (A-P)
    assert img.shape == (38, 201, 257)
    np.testing.assert_allclose(img.affine, _expected_lps(nii.affine, 0, 1, 2), atol=1e-5)
    np.testing.assert_array_equal(img.array[20], data[20].T)
    # the SCT landmark voxel (27, 76, 187) in file indices lands on the same point in both readers
    ras = nii.affine @ np.array([27, 76, 187, 1.0])
    np.testing.assert_allclose(img.index_to_physical([76, 187, 27])[0], (RAS_TO_LPS @ ras)[:3], atol=1e-5)
    assert abs(img.slice_normal[0]) == pytest.approx(1.0)
    # same geometry as SimpleITK's NIfTI reader
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(ref.TransformIndexToPhysicalPoint((27, 76, 187)),
                               img.index_to_physical([76, 187, 27])[0], atol=1e-4)


def test_tptbox_sform_only(real_data):
    path = real_data / "tptbox_sample_mri" / "sub-mri_label-6_T2w.nii.gz"
    nii = nib.load(path)
    assert int(nii.header["qform_code"]) == 0 and int(nii.header["sform_code"]) == 2
    img = read_image(path, where="patient T")
    assert img.meta["affine_from"] == "sform"
    # P I R: third file axis is left-right, so no permutation: x = file axis 0, y = axis 1
    assert img.shape == (67, 52, 68)
    np.testing.assert_allclose(img.affine, _expected_lps(nii.get_sform(), 2, 0, 1), atol=1e-5)
    np.testing.assert_allclose(img.spacing, [1.5, 1.5, 1.5], atol=1e-4)
    data = np.asarray(nii.dataobj)
    np.testing.assert_array_equal(img.array[30], data[:, :, 30].T)


def test_sct_cervical_t2_and_t1(real_data):
    t2 = read_image(real_data / "sct_testing_data_cervical" / "t2" / "t2.nii.gz")
    assert t2.shape == (52, 55, 60)  # P S R: 52 sagittal planes
    t1 = read_image(real_data / "sct_testing_data_cervical" / "t1" / "t1w.nii.gz")
    assert t1.shape == (42, 77, 76)  # R A S: 42 sagittal planes
    for img in (t1, t2):
        assert abs(img.slice_normal[0]) == pytest.approx(1.0)
        assert img.array.dtype == np.float32 and np.isfinite(img.array).all()


def test_itkmontage_nhdr_follows_its_header(real_data, tmp_path):
    path = real_data / "itkmontage_DzZ_T1_lumbar" / "DzZ_T1_orig.nhdr"
    ref = sitk.ReadImage(str(path))
    img = read_image(path)
    # The header has identity directions, so file axis 0 (144 voxels) claims to be left-right
    # and becomes the slice axis; spinedx follows the header (PROVENANCE: the header is wrong).
    assert img.shape == (144, 12, 471)
    arr = sitk.GetArrayFromImage(ref)  # (z, y, x) = (12, 471, 144)
    np.testing.assert_array_equal(img.array, arr.transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_allclose(img.index_to_physical([3, 5, 7])[0], ref.TransformIndexToPhysicalPoint((7, 3, 5)))
    # With the true orientation written into the header (axis 0 A->P, axis 1 S->I, axis 2
    # R->L), the same voxels are read as 12 sagittal slices of 471 x 144.
    fixed = sitk.Image(ref)
    fixed.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))
    sitk.WriteImage(fixed, str(tmp_path / "fixed.mha"))
    img2 = read_image(tmp_path / "fixed.mha")
    assert img2.shape == (12, 471, 144)
    np.testing.assert_array_equal(img2.array, arr.astype(np.float32))
    np.testing.assert_allclose(img2.spacing, [0.684, 0.684, 4.4], atol=1e-3)


def test_dicom_written_from_real_nifti_round_trips(real_data, tmp_path):
    nifti = read_image(real_data / "sct_tutorial_data_t2_lumbar" / "t2_lumbar.nii.gz")
    files = write_image_series(tmp_path / "dcm", nifti, shuffle=True, series_description="t2 lumbar")
    assert len(files) == 38
    img = read_image(tmp_path / "dcm")
    np.testing.assert_array_equal(img.array, nifti.array)
    np.testing.assert_allclose(img.affine, nifti.affine, atol=1e-4)  # DS strings keep 6 decimals
    # SimpleITK's series reader agrees on voxels, order and geometry
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "dcm")))
    ref = Image.from_sitk(reader.Execute())
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    assert [str(f) for f in reader.GetFileNames()] == img.meta["files"]
