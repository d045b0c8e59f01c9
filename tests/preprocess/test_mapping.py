"""Geometry-only T2 -> T1 mapping, the square crop and the patch sampling, on in-memory images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinedx.errors import PreprocessError
from spinedx.io.image import Image
from spinedx.preprocess import CHANNEL_NAMES, ExtractConfig, extract_patches
from spinedx.preprocess.mapping import crop_grid, plane_points
from spinedx.preprocess.patches import raw_sample, zscore

from .phantom import SAGITTAL, centered_origin, sample, spine

NO_REG = ExtractConfig(register=False)


def _linear(img: Image, coef=(0.7, -1.3, 2.1), const=50.0) -> Image:
    """Fill ``img`` with an affine function of the physical position (trilinear interpolation is exact on it)."""
    nz, ny, nx = img.shape
    k, i, j = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pts = img.index_to_physical(np.stack([j.ravel(), i.ravel(), k.ravel()], axis=1))
    img.array = (pts @ np.asarray(coef) + const).reshape(img.shape).astype(np.float32)
    return img


def _pair() -> tuple[Image, Image]:
    """T2 448x224-like (anisotropic pixels) and a T1 with another matrix, spacing, FOV and slice positions."""
    sh2, sp2 = (9, 60, 120), (0.5, 1.0, 4.0)
    t2 = Image.from_geometry(np.zeros(sh2), sp2, centered_origin(sh2, sp2), SAGITTAL)
    sh1, sp1 = (8, 70, 64), (1.1, 0.9, 4.4)
    t1 = Image.from_geometry(np.zeros(sh1), sp1, centered_origin(sh1, sp1, SAGITTAL, offset=(1.7, 2.0, -3.0)),
                             SAGITTAL)
    return _linear(t1), _linear(t2, coef=(-0.2, 0.5, 0.9), const=10.0)


def test_channel_names_order():
    assert CHANNEL_NAMES == ("T1 s-1", "T1 s", "T1 s+1", "T2 s-1", "T2 s", "T2 s+1")


def test_crop_is_square_in_mm_with_anisotropic_pixels():
    _, t2 = _pair()
    box = (40, 20, 80, 40)  # 40 x 20 pixels = 20 mm x 20 mm at 0.5 x 1.0 mm
    grid = crop_grid(t2, box, 64)
    assert grid.side_mm == pytest.approx(20.0)
    assert grid.center == (59.5, 29.5)
    # Output pixel centres span the square, half a pixel in from its edges, equally in mm on both axes.
    step_x_mm = (grid.x[0, 1] - grid.x[0, 0]) * 0.5
    step_y_mm = (grid.y[1, 0] - grid.y[0, 0]) * 1.0
    assert step_x_mm == pytest.approx(20.0 / 64) and step_y_mm == pytest.approx(20.0 / 64)
    assert grid.x.min() == pytest.approx(39.5 + 0.5 * 40 / 64)
    assert grid.x.max() == pytest.approx(79.5 - 0.5 * 40 / 64)
    # A wide box: the square takes the longer side, so the whole box is inside.
    grid = crop_grid(t2, (10, 25, 110, 35), 64)
    assert grid.side_mm == pytest.approx(50.0)
    assert grid.y.min() < 25 - 0.5 and grid.y.max() > 35 - 0.5


def test_t1_resampled_through_both_geometries_is_exact_on_linear_images():
    t1, t2 = _pair()
    grid = crop_grid(t2, (40, 20, 80, 40), 16)
    raw, edge = raw_sample(t1, t2, grid, 4, np.eye(4))
    assert edge == []
    for c, k in enumerate((3, 4, 5)):
        pts = plane_points(t2, grid, k)
        np.testing.assert_allclose(raw[c], (pts @ [0.7, -1.3, 2.1] + 50.0).reshape(16, 16), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(raw[3 + c], (pts @ [-0.2, 0.5, 0.9] + 10.0).reshape(16, 16), rtol=1e-5, atol=1e-3)


def test_t2_channels_equal_torch_bilinear_resize_of_the_box():
    """Independent re-derivation: crop the (square) box and resize with torch, align_corners=False.

    The box is larger than 64 pixels so that no output sample falls outside it (torch clamps at the crop's
    edge where the pipeline reads the real neighbouring pixel).
    """
    rng = np.random.default_rng(1)
    t2 = Image.from_geometry(rng.normal(size=(5, 90, 100)), (0.8, 0.8, 4.0), (0, 0, 0), SAGITTAL)
    t1 = Image.from_geometry(rng.normal(size=(5, 90, 100)), (0.8, 0.8, 4.0), (0, 0, 0), SAGITTAL)
    box = (7, 5, 87, 85)
    cp = extract_patches(t1, t2, [2], box, NO_REG, patient_id="p")
    for c, k in enumerate((1, 2, 3)):
        crop = torch.from_numpy(t2.array[k, 5:85, 7:87].astype(np.float32))[None, None]
        ref = torch.nn.functional.interpolate(crop, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        ref = ((ref - ref.mean()) / ref.std(unbiased=False)).numpy()
        np.testing.assert_allclose(cp.x[0, 3 + c], ref, atol=1e-4)
        # Same geometry, no registration: T1 channels come from the same planes.
        crop1 = torch.from_numpy(t1.array[k, 5:85, 7:87].astype(np.float32))[None, None]
        ref1 = torch.nn.functional.interpolate(crop1, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(cp.x[0, c], ((ref1 - ref1.mean()) / ref1.std(unbiased=False)).numpy(), atol=1e-4)


def test_patches_are_zscored_per_channel_one_sample_per_lesion_slice():
    sh2, sp2 = (9, 110, 90), (0.8, 0.8, 4.0)
    t2 = sample(sh2, sp2, centered_origin(sh2, sp2))
    sh1, sp1 = (8, 90, 70), (1.0, 1.1, 4.4)
    t1 = sample(sh1, sp1, centered_origin(sh1, sp1, offset=(1.0, 0, 0)), contrast="t1")
    cp = extract_patches(t1, t2, [3, 4, 5], (25, 35, 65, 75), NO_REG, patient_id="p", label=1)
    assert cp.x.shape == (3, 6, 64, 64) and cp.x.dtype == np.float32
    assert cp.slice_index.tolist() == [3, 4, 5] and cp.slice_index.dtype == np.int64
    np.testing.assert_allclose(cp.x.mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(cp.x.std(axis=(2, 3)), 1.0, atol=1e-4)
    assert cp.label == 1 and not cp.registration.performed
    # Neighbouring slices differ (they are not copies of the lesion slice).
    assert not np.allclose(cp.x[1, 3], cp.x[1, 4]) and not np.allclose(cp.x[1, 0], cp.x[1, 1])
    # The T1 channel shows the T1 anatomy at the T2 plane's physical points (through both geometries).
    grid = crop_grid(t2, (25, 35, 65, 75), 64)
    truth = spine(plane_points(t2, grid, 4), "t1")
    assert np.corrcoef(cp.x[1, 1].ravel(), truth)[0, 1] > 0.95
    # ... and not the T1 of another slice position (a plane 8 mm away).
    assert np.corrcoef(cp.x[1, 1].ravel(), spine(plane_points(t2, grid, 6), "t1"))[0, 1] < 0.9


def test_edge_slice_replicates_and_is_recorded():
    t1, t2 = _pair()
    cp = extract_patches(t1, t2, [0, 8], (40, 20, 80, 40), NO_REG, patient_id="p")
    assert cp.edge == [["s-1"], ["s+1"]]
    np.testing.assert_array_equal(cp.x[0, 3], cp.x[0, 4])  # T2 s-1 := T2 s at the first slice
    np.testing.assert_array_equal(cp.x[1, 5], cp.x[1, 4])  # T2 s+1 := T2 s at the last slice
    np.testing.assert_array_equal(cp.x[0, 0], cp.x[0, 1])
    assert cp.summary()["edge_replicated"] == [{"slice": 0, "replaced": ["s-1"]}, {"slice": 8, "replaced": ["s+1"]}]


def test_zscore_constant_channel_and_patch_mode():
    x = np.random.default_rng(0).normal(5, 3, size=(2, 6, 8, 8))
    x[1, 2] = 7.0
    out, n_const = zscore(x, "channel")
    assert n_const == 1 and np.all(out[1, 2] == 0) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0].std(axis=(1, 2)), 1.0, atol=1e-5)
    out, _ = zscore(x, "patch")
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-5)


def test_config_roundtrip_and_validation():
    cfg = ExtractConfig(register=False, margin=0.1)
    assert ExtractConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ExtractConfig(zscore="global")
    with pytest.raises(ValueError):
        ExtractConfig.from_dict({"patch": 3})


@pytest.mark.parametrize(
    ("slices", "box", "needle"),
    [
        ([4], (100, 20, 130, 40), "outside the T2 image"),
        ([4], (-2, 20, 30, 40), "outside the T2 image"),
        ([4], (40, 40, 80, 30), "empty"),
        ([9], (40, 20, 80, 40), "out of range"),
        ([-1], (40, 20, 80, 40), "out of range"),
    ],
)
def test_bad_annotation_names_patient(slices, box, needle):
    t1, t2 = _pair()
    with pytest.raises(PreprocessError, match=needle) as err:
        extract_patches(t1, t2, slices, box, NO_REG, patient_id="P042")
    assert "P042" in str(err.value) and "\n" not in err.value.one_line()


def test_too_few_slices():
    t1, t2 = _pair()
    t2.array = t2.array[:2]
    with pytest.raises(PreprocessError, match="3 are needed") as err:
        extract_patches(t1, t2, [1], (40, 20, 80, 40), NO_REG, patient_id="P7")
    assert "P7" in str(err.value)


def test_series_that_do_not_overlap():
    t1, t2 = _pair()
    far = t1.affine.copy()
    far[:3, 3] += (0.0, 0.0, 200.0)  # T1 slab 20 cm higher: the box is not in its field of view
    t1 = Image(t1.array, far)
    with pytest.raises(PreprocessError, match="do not overlap") as err:
        extract_patches(t1, t2, [4], (40, 20, 80, 40), NO_REG, patient_id="P9")
    assert "P9" in str(err.value)
    # A T1 slab beside the lesion (sagittal slices too far to the side) is refused too.
    side = t1.affine.copy()
    side[:3, 3] = _pair()[0].affine[:3, 3] + (60.0, 0.0, 0.0)
    with pytest.raises(PreprocessError, match="z \\(slices\\)"):
        extract_patches(Image(t1.array, side), t2, [4], (40, 20, 80, 40), NO_REG, patient_id="P9")


def test_non_finite_voxels_in_crop():
    t1, t2 = _pair()
    t1.array[:, :, :] = np.nan
    with pytest.raises(PreprocessError, match="non-finite") as err:
        extract_patches(t1, t2, [4], (40, 20, 80, 40), NO_REG, patient_id="P3")
    assert "T1 s" in str(err.value)
