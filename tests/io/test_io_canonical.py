"""One canonical image orientation: every format, every stored orientation, the same array and patches.

The canonical grid (spinedx.io.geometry): columns anterior->posterior, rows head->feet, slices from the
patient's left to right, i.e. SimpleITK's ``DICOMOrient(image, "PIR")`` and nibabel's axis codes
``("P", "I", "R")``, which serve as independent references here.
"""

from __future__ import annotations

import itertools
import subprocess

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicomfixtures import write_image_series, write_series

from spinedx.io import CANONICAL_DIRECTIONS, Image, read_image, to_canonical
from spinedx.io.geometry import canonical_axes, reorient
from spinedx.preprocess import ExtractConfig, extract_patches

LUMBAR = ("sct_tutorial_data_t2_lumbar", "t2_lumbar.nii.gz")
LUMBAR_BOX = (138, 132, 174, 168)  # a lumbar vertebral body on slice 27 of the canonical grid


def _sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


@pytest.mark.slow
def test_dicom_its_dcm2niix_nifti_and_an_nrrd_give_the_same_array_and_patches(real_data, tmp_path):
    canonical = read_image(real_data.joinpath(*LUMBAR))
    # Store the anatomy the way many scanners do: rows feet->head, slices right->left, columns anterior->posterior.
    arr, aff = reorient(canonical.array, canonical.affine, (0, 1, 2), (False, True, True))
    write_image_series(tmp_path / "dcm", Image(arr, aff), repetition_time=3000, echo_time=100)
    run = subprocess.run(["dcm2niix", "-z", "y", "-f", "conv", "-o", str(tmp_path), str(tmp_path / "dcm")],
                         capture_output=True, text=True, check=True)
    assert "Convert 38 DICOM" in run.stdout
    nrrd = tmp_path / "conv.nrrd"
    sitk.WriteImage(_sitk_series(tmp_path / "dcm"), str(nrrd))

    dicom = read_image(tmp_path / "dcm")
    nifti = read_image(tmp_path / "conv.nii.gz")
    nrrd_img = read_image(nrrd)
    assert nib.aff2axcodes(nib.load(tmp_path / "conv.nii.gz").affine) != ("P", "I", "R")  # not stored canonical
    for img in (dicom, nifti, nrrd_img):
        np.testing.assert_array_equal(img.array, canonical.array)
        np.testing.assert_allclose(img.affine, canonical.affine, atol=1e-3)
    # The same manifest box and slices give the same patches from each format.
    cfg = ExtractConfig(register=False)
    ref = extract_patches(canonical, canonical, [26, 27, 28], LUMBAR_BOX, cfg).x
    for img in (dicom, nifti, nrrd_img):
        np.testing.assert_array_equal(extract_patches(img, img, [26, 27, 28], LUMBAR_BOX, cfg).x, ref)
    # and mixing formats within a case changes nothing either
    np.testing.assert_allclose(extract_patches(nifti, dicom, [26, 27, 28], LUMBAR_BOX, cfg).x, ref, atol=1e-4)


@pytest.mark.parametrize("row_dir,col_dir", [
    ((0, 1, 0), (0, 0, -1)), ((0, -1, 0), (0, 0, -1)), ((0, 1, 0), (0, 0, 1)), ((0, -1, 0), (0, 0, 1)),
    ((0, 0, -1), (0, 1, 0)), ((0, 0, 1), (0, -1, 0)), ((0, 0, -1), (0, -1, 0)), ((0, 0, 1), (0, 1, 0)),
])
def test_every_sagittal_storage_reads_to_the_same_grid(tmp_path, row_dir, col_dir):
    """The eight ways to store a sagittal stack (row/column along A-P or S-I, either sign, either normal)."""
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 3000, (5, 6, 7)).astype(np.int16)
    write_series(tmp_path / "s", vol, spacing=(0.7, 0.8, 3.0), origin=(4.0, -30.0, 20.0), row_dir=row_dir,
                 col_dir=col_dir, shuffle=True)
    img = read_image(tmp_path / "s")
    ref = Image.from_sitk(sitk.DICOMOrient(_sitk_series(tmp_path / "s"), "PIR"))
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)
    np.testing.assert_allclose(img.direction, CANONICAL_DIRECTIONS.T, atol=1e-9)
    assert len(img.meta["files"]) == img.n_slices


@pytest.mark.parametrize("seed", range(6))
def test_oblique_and_sheared_volumes_keep_every_voxel_in_place(seed):
    """Closest permutation/flip only: the affine stays exact (oblique, sheared), each value keeps its point."""
    rng = np.random.default_rng(seed)
    # a sagittal-ish stack rotated up to 25 deg, with a gantry-tilt shear of the slice axis
    perm = list(itertools.permutations(range(3)))[seed % 6]
    base = np.eye(3)[:, list(perm)] * rng.choice([-1.0, 1.0], 3)
    rot = _rotation(rng.normal(size=3), rng.uniform(-25, 25))
    cols = rot @ base * np.array([0.7, 0.9, 3.5])
    cols[:, 2] += 0.4 * cols[:, 0]  # shear
    affine = np.eye(4)
    affine[:3, :3] = cols
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    arr = rng.normal(size=(4, 5, 6)).astype(np.float32)
    img = to_canonical(Image(arr, affine))
    src, flipped = canonical_axes(affine)
    assert img.meta["reorientation"] == {"source_axes_xyz": list(src), "flipped_xyz": list(flipped),
                                         "source_shape_zyx": [4, 5, 6]}
    # every voxel: its value sits at the same LPS point before and after
    k, i, j = np.meshgrid(*(np.arange(n) for n in arr.shape), indexing="ij")
    old_xyz = np.stack([j.ravel(), i.ravel(), k.ravel()], axis=1).astype(float)
    pts = Image(arr, affine).index_to_physical(old_xyz)
    new_xyz = np.rint(img.physical_to_index(pts)).astype(int)
    np.testing.assert_allclose(img.physical_to_index(pts), new_xyz, atol=1e-6)
    np.testing.assert_array_equal(img.array[new_xyz[:, 2], new_xyz[:, 1], new_xyz[:, 0]], arr.ravel())
    # each canonical axis points within 90 deg of its target, the slice axis is the most left-right one
    dirs = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    assert all(dirs[:, t] @ CANONICAL_DIRECTIONS[t] > 0 for t in range(3))
    assert np.argmax(np.abs(dirs[0])) == 2


def test_canonical_image_is_not_copied():
    arr = np.zeros((3, 4, 5), np.float32)
    aff = np.eye(4)
    aff[:3, :3] = CANONICAL_DIRECTIONS.T
    img = Image(arr, aff)
    out = to_canonical(img)
    assert out.array is arr and out.meta["reorientation"]["flipped_xyz"] == [False, False, False]
