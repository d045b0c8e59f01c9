"""The heatmaps as a Parametric Map: each frame is a stored T2 image pixel for pixel (same grid, position and
orientation, in the T2's frame of reference), the heat lies on the pixels that hold the canonical crop, zero
elsewhere, whatever flips or transposition the reader applied to the stored files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomfixtures import write_multiframe, write_series

from spinedx.interop import dciodvfy, write_dicom_results
from spinedx.interop.sc import heat_on_slice
from spinedx.io import read_image

from .resultcontent import make_content


def _distinct_volume(shape: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape).astype(np.int16) % 30000


def _frames_by_sop(pm: pydicom.Dataset) -> dict[str, int]:
    out = {}
    for f, item in enumerate(pm.PerFrameFunctionalGroupsSequence):
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        out[str(src.ReferencedSOPInstanceUID)] = f
    return out


@pytest.mark.parametrize("row_dir,col_dir,slice_sign", [
    ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 1),  # stored as displayed
    ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), -1),  # rows and slices flipped
    ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0), 1),  # transposed, slices flipped
])
def test_map_frames_are_the_stored_t2_images(tmp_path: Path, row_dir: tuple, col_dir: tuple,
                                             slice_sign: int) -> None:
    vol = _distinct_volume((5, 40, 30))
    normal = np.cross(row_dir, col_dir)
    files = write_series(tmp_path / "t2", vol, spacing=(1.0, 1.0, 4.0), row_dir=row_dir, col_dir=col_dir,
                         slice_dir=tuple(slice_sign * normal), origin=(-8.0, -10.0, 20.0))
    img = read_image(tmp_path / "t2")
    box, slices = (5, 7, 17, 21), (1, 2, 3)
    heat = np.random.default_rng(2).uniform(0.05, 1.0, (3, 16, 16)).astype(np.float32)
    content = replace(make_content(slices, box), heatmaps=heat, patch_size=16)
    res = write_dicom_results(None, img, img, tmp_path / "out", content=content)
    assert res.pmap is not None and dciodvfy(res.pmap).errors == []
    pm = pydicom.dcmread(res.pmap)
    frames = pm.pixel_array  # (n, rows, cols) float32
    assert frames.dtype == np.float32 and frames.shape[0] == len(files) == img.n_slices
    by_sop = _frames_by_sop(pm)
    where = {int(v): np.unravel_index(i, img.array.shape) for i, v in enumerate(img.array.ravel())}
    expected = {k: heat_on_slice(heat[i], img, box, content.margin) for i, k in enumerate(slices)}
    shared = pm.SharedFunctionalGroupsSequence[0]
    for path in files:
        src = pydicom.dcmread(path)
        f = by_sop[str(src.SOPInstanceUID)]
        item = pm.PerFrameFunctionalGroupsSequence[f]
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-4)
        np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                                   [float(v) for v in src.ImageOrientationPatient], atol=1e-6)
        assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == \
            [float(v) for v in src.PixelSpacing]
        assert frames[f].shape == src.pixel_array.shape
        # each stored pixel's value says where it is on the canonical grid (every voxel value is distinct)
        want = np.zeros(src.pixel_array.shape, np.float32)
        for (r, c), v in np.ndenumerate(src.pixel_array):
            k, y, x = where[int(v)]
            want[r, c] = expected[k][y, x] if k in expected else 0.0
        np.testing.assert_array_equal(frames[f], want)
    assert pm.FrameOfReferenceUID == pydicom.dcmread(files[0], stop_before_pixels=True).FrameOfReferenceUID
    assert np.count_nonzero(frames) > 0 and frames.min() >= 0.0 and frames.max() <= 1.0
    # highdicom reads it back as a parametric map
    back = hd.pm.ParametricMap.from_dataset(pm)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"


def test_map_over_an_enhanced_mr_file(tmp_path: Path) -> None:
    """An Enhanced MR source (frames in reverse slice order): one map frame per stored frame, at its position."""
    vol = _distinct_volume((4, 32, 24), seed=3)
    path = write_multiframe(tmp_path / "mf" / "t2.dcm", vol, spacing=(1.0, 1.0, 4.0), origin=(-6.0, -10.0, 20.0))
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(path)
    img = read_image(path)
    content = make_content((1, 2), (4, 6, 14, 20))
    res = write_dicom_results(None, img, img, tmp_path / "out", content=content)
    assert res.pmap is not None and dciodvfy(res.pmap).errors == []
    pm = pydicom.dcmread(res.pmap)
    assert pm.NumberOfFrames == len(ds.PerFrameFunctionalGroupsSequence) == 4
    positions = sorted(tuple(float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient)
                       for it in pm.PerFrameFunctionalGroupsSequence)
    stored = sorted(tuple(float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient)
                    for it in ds.PerFrameFunctionalGroupsSequence)
    np.testing.assert_allclose(positions, stored, atol=1e-4)
    assert int(np.count_nonzero(pm.pixel_array.reshape(4, -1).any(axis=1))) == 2  # the two lesion slices only


def test_heat_is_placed_only_on_a_plane_of_the_canonical_grid(tmp_path: Path) -> None:
    """heat_on_plane copies the heat pixel for pixel, or refuses a plane that is not the canonical slice it is said
    to be: shifted by half a pixel, or another slice."""
    from dataclasses import replace as dc_replace

    from spinedx.errors import SpinedxError
    from spinedx.interop.geometry import stored_planes
    from spinedx.interop.pmap import canonical_slice, heat_on_plane

    write_series(tmp_path / "t2", _distinct_volume((4, 20, 16)), spacing=(1.0, 1.0, 4.0), row_dir=(0.0, 1.0, 0.0),
                 col_dir=(0.0, 0.0, -1.0), slice_dir=(1.0, 0.0, 0.0), origin=(-8.0, -10.0, 20.0))
    img = read_image(tmp_path / "t2")
    plane = stored_planes(img, where="t2")[1]
    k = canonical_slice(img, plane)
    heat = np.random.default_rng(0).uniform(0, 1, img.shape[1:]).astype(np.float32)
    np.testing.assert_array_equal(heat_on_plane(heat, img, plane, k), heat)  # stored as displayed: the same pixels
    with pytest.raises(SpinedxError, match="not canonical slice"):
        heat_on_plane(heat, img, plane, k + 1)
    with pytest.raises(SpinedxError, match="not canonical slice"):
        heat_on_plane(heat, img, dc_replace(plane, position=plane.position + 0.5 * plane.row_dir), k)
    with pytest.raises(SpinedxError, match="not canonical slice"):  # a finer grid: exact at the origin only
        heat_on_plane(heat, img, dc_replace(plane, spacing=(0.5, 0.5)), k)
