"""The readers on the real spine MRI samples in ../shared/data/real (see each PROVENANCE.md)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicomfixtures import write_image_series

from spinedx.errors import ImageReadError
from spinedx.io import Image, read_image

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# spinedx's canonical grid in nibabel's axis codes (file axes 0, 1, 2 = index x, y, z): towards posterior,
# inferior, right.
CANONICAL_AXCODES = ("P", "I", "R")


def _nibabel_canonical(nii) -> tuple[np.ndarray, np.ndarray]:
    """Voxels [k, i, j] and LPS affine of a NIfTI on the canonical grid, by nibabel's own orientation tools."""
    data = np.asarray(nii.dataobj)
    transform = nib.orientations.ornt_transform(nib.io_orientation(nii.affine),
                                                nib.orientations.axcodes2ornt(CANONICAL_AXCODES))
    out = nib.orientations.apply_orientation(data, transform)
    affine = RAS_TO_LPS @ nii.affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return out.transpose(2, 1, 0), affine


def test_t2_lumbar_nifti(real_data):
    path = real_data / "sct_tutorial_data_t2_lumbar" / "t2_lumbar.nii.gz"
    img = read_image(path)
    nii = nib.load(path)
    data = np.asarray(nii.dataobj)
    assert data.shape == (38, 257, 201) and nib.aff2axcodes(nii.affine) == ("R", "A", "S")
    # 38 sagittal slices (file axis 0, already left->right) of 201 rows (file axis 2, flipped to head->feet)
    # x 257 columns (file axis 1, flipped to anterior->posterior)
    assert img.shape == (38, 201, 257)
    arr, aff = _nibabel_canonical(nii)
    np.testing.assert_array_equal(img.array, arr)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(img.array[20], data[20][::-1, ::-1].T)
    assert img.meta["reorientation"] == {"source_axes_xyz": [1, 2, 0], "flipped_xyz": [True, True, False],
                                         "source_shape_zyx": [201, 257, 38]}
    # the SCT landmark voxel (27, 76, 187) in file indices lands on the same point in both readers
    ras = nii.affine @ np.array([27, 76, 187, 1.0])
    ijk = img.physical_to_index((RAS_TO_LPS @ ras)[None, :3])[0]
    np.testing.assert_allclose(ijk, [256 - 76, 200 - 187, 27], atol=1e-6)
    assert img.array[27, 200 - 187, 256 - 76] == data[27, 76, 187]
    np.testing.assert_allclose(img.direction, np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]]), atol=1e-3)
    # same geometry as SimpleITK's NIfTI reader, reoriented by its DICOMOrient filter
    ref = Image.from_sitk(sitk.DICOMOrient(sitk.ReadImage(str(path)), "PIR"))
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)


def test_tptbox_sform_only(real_data):
    path = real_data / "tptbox_sample_mri" / "sub-mri_label-6_T2w.nii.gz"
    nii = nib.load(path)
    assert int(nii.header["qform_code"]) == 0 and int(nii.header["sform_code"]) == 2
    img = read_image(path, where="patient T")
    assert img.meta["affine_from"] == "sform"
    # P I R: already the canonical grid, nothing permuted or flipped
    assert img.shape == (67, 52, 68)
    assert img.meta["reorientation"]["source_axes_xyz"] == [0, 1, 2]
    assert not any(img.meta["reorientation"]["flipped_xyz"])
    np.testing.assert_allclose(img.affine, RAS_TO_LPS @ nii.get_sform(), atol=1e-5)
    np.testing.assert_allclose(img.spacing, [1.5, 1.5, 1.5], atol=1e-4)
    data = np.asarray(nii.dataobj)
    np.testing.assert_array_equal(img.array[30], data[:, :, 30].T)


def test_nifti_without_qform_and_sform_refused(real_data, tmp_path):
    nii = nib.load(real_data / "tptbox_sample_mri" / "sub-mri_label-6_T2w.nii.gz")
    bare = nib.Nifti1Image(np.asarray(nii.dataobj), None)
    bare.set_qform(None, code=0)
    bare.set_sform(None, code=0)
    nib.save(bare, tmp_path / "bare.nii.gz")
    assert int(nib.load(tmp_path / "bare.nii.gz").header["qform_code"]) == 0
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "bare.nii.gz", where="P1 t2")
    msg = exc.value.one_line()
    assert "bare.nii.gz" in msg and "neither a qform nor an sform" in msg and "dcm2niix" in msg


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
    canon = Image.from_sitk(sitk.DICOMOrient(ref, "PIR"))
    np.testing.assert_array_equal(img.array, canon.array)
    np.testing.assert_allclose(img.affine, canon.affine, atol=1e-6)
    arr = sitk.GetArrayFromImage(ref)  # (z, y, x) = (12, 471, 144)
    # slices = file axis 0 reversed (it runs towards the left), rows = file axis 2 reversed (towards the head)
    np.testing.assert_array_equal(img.array, arr.transpose(2, 0, 1)[::-1, ::-1, :].astype(np.float32))
    # With the true orientation written into the header (axis 0 A->P, axis 1 S->I, axis 2
    # R->L), the same voxels are read as 12 sagittal slices of 471 x 144, slices reversed to run left->right.
    fixed = sitk.Image(ref)
    fixed.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))
    sitk.WriteImage(fixed, str(tmp_path / "fixed.mha"))
    img2 = read_image(tmp_path / "fixed.mha")
    assert img2.shape == (12, 471, 144)
    np.testing.assert_array_equal(img2.array, arr[::-1].astype(np.float32))
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
