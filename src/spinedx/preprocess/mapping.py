"""T2 -> T1 mapping through physical geometry, and the square crop grid of a lesion box.

The lesion annotation (slice indices and the box ``x0,y0,x1,y1``) is drawn on T2. T1 usually has another
matrix, pixel spacing, field of view and slice positions (the paper: 320x192 T1 vs 448x224 T2). Rather than
resampling whole volumes, only the output patch's sample points are computed: each output pixel is a
physical point (LPS mm) on a T2 plane, T2 is sampled there bilinearly (in-plane, the plane is exact) and T1
trilinearly at the same physical point, optionally moved by the rigid T2->T1 registration transform. This
"resample T1 onto the T2 planes s-1, s, s+1" costs ``6 x 64 x 64`` interpolations per sample, whatever the
volume sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spinedx.errors import PreprocessError
from spinedx.io.image import Image

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class CropGrid:
    """The square crop of one box, as continuous T2 pixel coordinates of the output pixels' centres.

    Attributes:
        x: (P, P) column coordinates (T2 index x) of each output pixel, row-major like the patch.
        y: (P, P) row coordinates (T2 index y).
        center: (cx, cy) centre of the box in T2 pixel coordinates.
        side_mm: side of the square in millimetres.
    """

    x: np.ndarray
    y: np.ndarray
    center: tuple[float, float]
    side_mm: float


def validate_annotation(t2: Image, lesion_slices: tuple[int, ...], box: Box, *, where: str) -> None:
    """Check that the box lies inside the T2 slice and the lesion slices inside the T2 series.

    Raises:
        PreprocessError: naming ``where`` and what to fix.
    """
    nz, ny, nx = t2.shape
    if nz < 3:
        raise PreprocessError(
            f"T2 series has {nz} slice(s); 3 are needed (lesion slice and its two neighbours). "
            "Check that the t2 column points to the full sagittal series.",
            where=where,
        )
    if not lesion_slices:
        raise PreprocessError("no lesion slice given; set lesion_slices (e.g. 7;8;9)", where=where)
    bad = [s for s in lesion_slices if not 0 <= int(s) < nz]
    if bad:
        raise PreprocessError(
            f"lesion slice(s) {bad} out of range: the T2 series has {nz} slices (valid 0..{nz - 1}, 0-based, "
            "ordered along the slice normal). Fix lesion_slices.",
            where=where,
        )
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise PreprocessError(f"box {box} is empty: need x0 < x1 and y0 < y1", where=where)
    if x0 < 0 or y0 < 0 or x1 > nx or y1 > ny:
        raise PreprocessError(
            f"box {box} lies outside the T2 image of {nx} columns x {ny} rows (x0,y0 >= 0, x1 <= {nx}, "
            f"y1 <= {ny}; pixel coordinates on T2). Fix the box.",
            where=where,
        )


def crop_grid(t2: Image, box: Box, patch_size: int, margin: float = 0.0) -> CropGrid:
    """The square crop containing the whole box, sampled at ``patch_size x patch_size`` points.

    The square is defined in millimetres, not pixels, so that anisotropic pixels (e.g. a 448x224 matrix
    reconstructed on a square FOV) give an undistorted patch: side = the box's longer side in mm, times
    ``1 + 2 * margin``, centred on the box centre (Yeh et al. 2022: "A square box containing the entire
    abnormal vertebra"). Output pixel centres lie at ``(c + 0.5) / P`` of the side, so the patch covers exactly
    the square (pixel-edge alignment, as ``align_corners=False`` resizing).

    Args:
        t2: the T2 image (for its pixel spacing).
        box: ``x0,y0,x1,y1`` half-open pixel box on T2.
        patch_size: P.
        margin: fraction of the side added on each side.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = float(t2.spacing[0]), float(t2.spacing[1])
    # Pixel j covers [j - 0.5, j + 0.5]; the box [x0, x1) covers [x0 - 0.5, x1 - 0.5].
    cx, cy = (x0 + x1 - 1.0) / 2.0, (y0 + y1 - 1.0) / 2.0
    side = max((x1 - x0) * sx, (y1 - y0) * sy) * (1.0 + 2.0 * margin)
    frac = (np.arange(patch_size, dtype=np.float64) + 0.5) / patch_size - 0.5
    gx = cx + frac * side / sx
    gy = cy + frac * side / sy
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    return CropGrid(x=xx, y=yy, center=(cx, cy), side_mm=side)


def plane_points(t2: Image, grid: CropGrid, k: float) -> np.ndarray:
    """(P*P, 3) LPS points of the crop grid on T2 plane ``k``."""
    idx = np.stack([grid.x.ravel(), grid.y.ravel(), np.full(grid.x.size, float(k))], axis=1)
    return t2.index_to_physical(idx)


def sample_plane(img: Image, k: int, grid: CropGrid) -> np.ndarray:
    """Bilinear samples of slice ``k`` of ``img`` at the crop grid; outside the slice the edge is repeated.

    Repeating the edge (rather than padding with zeros) keeps an artificial black band out of the z-score
    when a box touches the image border.
    """
    out = ndimage.map_coordinates(
        img.array[int(k)], [grid.y.ravel(), grid.x.ravel()], order=1, mode="nearest", prefilter=False
    )
    return out.reshape(grid.x.shape).astype(np.float32, copy=False)


def sample_index_map(img: Image, index_map: np.ndarray, xyz: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear samples of ``img`` at ``index_map @ (x, y, z, 1)`` for (N, 3) source indices; edge repeated.

    ``index_map`` is a 4x4 map from another image's index space to ``img``'s, composed once per case
    (T1 index <- T1 affine^-1 <- T2->T1 transform <- T2 affine), so each sample costs one small matmul.
    """
    ijk = xyz @ index_map[:3, :3].T + index_map[:3, 3]
    out = ndimage.map_coordinates(
        img.array, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=1, mode="nearest", prefilter=False
    )
    return out.reshape(shape).astype(np.float32, copy=False)


def box_corners(t2: Image, box: Box, k: float) -> np.ndarray:
    """(4, 3) LPS corners (outer pixel edges) of the box on T2 plane ``k``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    idx = np.array([[x0 - 0.5, y0 - 0.5, k], [x1 - 0.5, y0 - 0.5, k], [x0 - 0.5, y1 - 0.5, k],
                    [x1 - 0.5, y1 - 0.5, k]])
    return t2.index_to_physical(idx)


def check_overlap(t1: Image, t2: Image, box: Box, lesion_slices: tuple[int, ...], *, where: str) -> None:
    """Refuse a pair whose T1 does not cover the box on the lesion slices.

    Each box corner on each lesion plane, mapped through both geometries, must fall inside T1's field of
    view: within the outer voxel edges in-plane, and along T1's slice axis within the slab widened by one T1
    slice on each side (T1 and T2 slabs rarely coincide exactly; a plane just beyond the T1 slab takes the
    outer T1 slice, at most one slice spacing away). Otherwise the two series do not image the same region
    (wrong series, other exam, or a T1 slab that misses the lesion) and the patch would be made of padding.

    Raises:
        PreprocessError: with the distance by which the box misses T1.
    """
    shape_xyz = np.array(t1.shape[::-1], dtype=np.float64)
    edge = np.array([0.5, 0.5, 1.5])  # voxels beyond the outer voxel centres that still count as inside
    tol = 1e-3
    for s in lesion_slices:
        ijk = t1.physical_to_index(box_corners(t2, box, float(s)))
        below = -edge - ijk
        above = ijk - (shape_xyz - 1.0 + edge)
        miss = np.maximum(below, above).max(axis=0)  # per axis, in voxels
        if (miss > tol).any():
            mm = float((np.maximum(miss, 0.0) * t1.spacing).max())
            axes = ", ".join(a for a, m in zip(("x (columns)", "y (rows)", "z (slices)"), miss, strict=True) if m > tol)
            raise PreprocessError(
                f"T1 and T2 do not overlap: the box on T2 slice {s} lies up to {mm:.1f} mm outside the T1 field "
                f"of view along T1 {axes}. Check that t1 and t2 are the same patient and exam and that the "
                "DICOM geometry (ImagePositionPatient/ImageOrientationPatient) is intact.",
                where=where,
            )
