"""Extraction from real spine MRI (../shared/data/real): the SCT T2 lumbar NIfTI and the DzZ T1/T2 pair."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch

from spinedx.io import Image, read_image
from spinedx.preprocess import ExtractConfig, extract_patches
from spinedx.preprocess.mapping import crop_grid, sample_plane

LUMBAR_BOX = (138, 132, 174, 168)  # a lumbar vertebral body on slice 27, canonical grid (docs/img/canonical_grid.png)

# fastcleverseg arrays: axis 0 superior->inferior, 1 anterior->posterior, 2 sagittal planes (1 mm).
# A RAS affine saying so (any consistent choice works): on the canonical grid the slices are axis 2, the rows
# (head->feet) axis 0 and the columns (anterior->posterior) axis 1, so a slice is m["I"][:, :, k] as stored.
DZZ_AFFINE = np.array([[0.0, 0.0, 1.0, -25.0], [0.0, -1.0, 0.0, 175.0], [-1.0, 0.0, 0.0, 175.0], [0, 0, 0, 1.0]])
T2_VERTEBRA = 1  # instance id of the middle vertebral body in 11.mat (T2); the same body is id 1 in 10.mat
SLICE = 20


def _zscored(x: np.ndarray) -> None:
    assert np.isfinite(x).all()
    np.testing.assert_allclose(x.mean(axis=(2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(2, 3)), 1.0, atol=1e-3)


def _torch_resize(plane: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    t = torch.from_numpy(np.ascontiguousarray(plane[y0:y1, x0:x1], dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_t2_lumbar_as_t1_and_t2(real_data):
    t2 = read_image(real_data / "sct_tutorial_data_t2_lumbar" / "t2_lumbar.nii.gz")
    cp = extract_patches(t2, t2, [26, 27, 28], LUMBAR_BOX, ExtractConfig(register=False), patient_id="sct")
    assert cp.x.shape == (3, 6, 64, 64) and cp.x.dtype == np.float32
    _zscored(cp.x)
    # Same image as T1 and T2, no registration: the T1 channels are the T2 channels.
    np.testing.assert_allclose(cp.x[:, :3], cp.x[:, 3:], atol=1e-5)
    # Independent re-derivation of T2 s (square box bigger than 64 px: torch never clamps).
    box = (80, 70, 150, 140)
    cp = extract_patches(t2, t2, [27], box, ExtractConfig(register=False), patient_id="sct")
    ref = _torch_resize(t2.array[27], box)
    np.testing.assert_allclose(cp.x[0, 4], (ref - ref.mean()) / ref.std(), atol=1e-4)


def test_t2_lumbar_shifted_copy_registration_recovers_shift(real_data):
    t2 = read_image(real_data / "sct_tutorial_data_t2_lumbar" / "t2_lumbar.nii.gz")
    shift = np.array([0.0, 3.0, -2.0])
    aff = t2.affine.copy()
    aff[:3, 3] += shift  # the header says the same voxels lie 3 mm posterior, 2 mm lower: anatomy moved by shift
    t1 = Image(t2.array.copy(), aff)
    cp = extract_patches(t1, t2, [26, 27, 28], LUMBAR_BOX, ExtractConfig(), patient_id="sct")
    _zscored(cp.x)
    rec = cp.registration
    assert rec.accepted, rec.reason
    assert np.linalg.norm(np.asarray(rec.translation_mm) - shift) < 1.0
    # After registration the T1 channels are the T2 channels again (same voxels).
    assert np.corrcoef(cp.x[1, 1].ravel(), cp.x[1, 4].ravel())[0, 1] > 0.95


@pytest.fixture(scope="module")
def dzz_pair(tmp_path_factory, real_data):
    """T1 (10.mat) and T2 (11.mat) as NIfTI; T1 cropped (another matrix) with its origin kept consistent."""
    folder = real_data / "fastcleverseg_VB1_DzZ_T1_T2"
    m1 = scipy.io.loadmat(folder / "10.mat")
    m2 = scipy.io.loadmat(folder / "11.mat")
    tmp = tmp_path_factory.mktemp("dzz")
    nib.save(nib.Nifti1Image(m2["I"], DZZ_AFFINE), tmp / "t2.nii.gz")
    nib.save(nib.Nifti1Image(m2["GT"], DZZ_AFFINE), tmp / "t2_mask.nii.gz")
    crop_aff = DZZ_AFFINE.copy()
    crop_aff[:3, 3] = DZZ_AFFINE[:3, :3] @ [10.0, 5.0, 0.0] + DZZ_AFFINE[:3, 3]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(m1["I"][10:, 5:, :]), crop_aff), tmp / "t1.nii.gz")
    # Box of the chosen vertebral body on the chosen slice, from the raw arrays (x = axis 1, y = axis 0).
    a0, a1 = np.nonzero(m2["GT"][:, :, SLICE] == T2_VERTEBRA)
    box = (int(a1.min()), int(a0.min()), int(a1.max()) + 1, int(a0.max()) + 1)
    return tmp, box, m1, m2


def test_dzz_pair_patches_show_the_chosen_vertebra(dzz_pair):
    tmp, box, m1, m2 = dzz_pair
    t1 = read_image(tmp / "t1.nii.gz")
    t2 = read_image(tmp / "t2.nii.gz")
    assert t1.shape != t2.shape
    slices = [SLICE - 1, SLICE, SLICE + 1]
    cp = extract_patches(t1, t2, slices, box, ExtractConfig(register=False), patient_id="DzZ", label=0)
    assert cp.x.shape == (3, 6, 64, 64)
    _zscored(cp.x)

    # The vertebral-body mask, resampled through the same crop: it covers the patch centre and most of it.
    mask = read_image(tmp / "t2_mask.nii.gz")
    mask.array = (mask.array == T2_VERTEBRA).astype(np.float32)
    grid = crop_grid(t2, box, 64)
    mpatch = sample_plane(mask, SLICE, grid) > 0.5
    assert mpatch[24:40, 24:40].all()
    assert mpatch.mean() > 0.5
    # No other vertebral body is in the patch centre either.
    others = read_image(tmp / "t2_mask.nii.gz")
    others.array = ((others.array > 0) & (others.array != T2_VERTEBRA)).astype(np.float32)
    assert not (sample_plane(others, SLICE, grid) > 0.5)[16:48, 16:48].any()

    # T2 s and T1 s agree with an independent torch resize of the raw arrays over a square box around the body.
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    sx0, sy0 = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
    sq = (sx0, sy0, sx0 + side, sy0 + side)
    sq_patch = extract_patches(t1, t2, [SLICE], sq, ExtractConfig(register=False), patient_id="DzZ").x[0]
    ref2 = _torch_resize(m2["I"][:, :, SLICE].astype(np.float32), sq)
    ref1 = _torch_resize(m1["I"][:, :, SLICE].astype(np.float32), sq)
    assert np.corrcoef(sq_patch[4].ravel(), ref2.ravel())[0, 1] > 0.99
    assert np.corrcoef(sq_patch[1].ravel(), ref1.ravel())[0, 1] > 0.99
    # Vertebral body vs the rest differs in both contrasts: the mask explains the patch.
    for c in (1, 4):
        assert abs(cp.x[1, c][mpatch].mean() - cp.x[1, c][~mpatch].mean()) > 0.3


def test_dzz_pair_with_registration(dzz_pair):
    tmp, box, _, _ = dzz_pair
    t1 = read_image(tmp / "t1.nii.gz")
    t2 = read_image(tmp / "t2.nii.gz")
    cp = extract_patches(t1, t2, [SLICE], box, ExtractConfig(), patient_id="DzZ")
    _zscored(cp.x)
    rec = cp.registration
    assert rec.performed and rec.metric_before is not None and rec.metric_after is not None
    # Same subject, same position: whatever the optimiser found stays small or is rejected.
    if rec.accepted:
        assert np.linalg.norm(rec.translation_mm) < 3.0
