"""Geometry of DICOM stacks and the one canonical image orientation of spinedx.

Two jobs, both pure computation on positions and affines (no file access):

* :func:`stack_slices` checks that 2-D DICOM images form one regular stack, orders them along
  the slice normal and builds the index-to-LPS affine (DICOM PS3.3 C.7.6.2.1.1; rules in
  :mod:`spinedx.io.dicom`).
* :func:`to_canonical` reorients any volume to the **canonical sagittal display grid** by axis
  permutations and flips only (no resampling):

  ====================  ===========================  ===================================
  index axis            array axis of ``[k, i, j]``   direction in the patient (LPS)
  ====================  ===========================  ===================================
  x = column ``j``      last                          anterior -> posterior  ``(0, 1, 0)``
  y = row ``i``         middle                        head -> feet           ``(0, 0, -1)``
  z = slice ``k``       first                         patient's left -> right ``(-1, 0, 0)``
  ====================  ===========================  ===================================

  That is the grid of a sagittal series with ImageOrientationPatient ``[0,1,0,0,0,-1]``
  whose slices are ordered along its normal (row x column = ``(-1, 0, 0)``), i.e. what a
  viewer shows: nose to the left, head up, paging from the patient's left to right. Manifest
  boxes and slice indices refer to this grid whatever the file format. The slice axis is the
  index axis most aligned with left-right; of the two others, the assignment to
  anterior-posterior / head-feet with the larger sum of ``|cos|`` wins; each axis is flipped
  when it points against its target. Oblique and sheared stacks take that closest
  permutation/flip and keep their exact (oblique, sheared) affine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.image import Image

#: LPS directions of the canonical index axes: rows of this array are x (columns), y (rows), z (slices).
CANONICAL_DIRECTIONS = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
#: ImageOrientationPatient of a DICOM series already on the canonical grid (slices ordered along its normal).
CANONICAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

# Tolerances of stack_slices (see spinedx.io.dicom's docstring).
ORIENT_TOL = 2e-3  # max |difference| of direction cosines between slices of one stack (~0.1 deg)
DUP_TOL_MM = 0.01  # two slices closer than this along the normal are "the same position"
STEP_ABS_TOL_MM = 0.02
STEP_REL_TOL = 0.01
STEP_MAX_ROUNDING_REL = 0.3  # rounding never widens the step tolerance past 30 % (a missing slice is +100 %)
LINE_ABS_TOL_MM = 0.05  # max distance of a slice position from the fitted straight line
SHEAR_IGNORE_DEG = 0.1
SHEAR_MAX_DEG = 30.0
SAGITTAL_MIN = 0.7
MIN_SLICES = 3  # the paper's input is a lesion slice and its two neighbours


@dataclass
class Slice2D:
    """One 2-D image (a classic file or one frame of a multi-frame file) with its plane geometry.

    Attributes:
        path: the file.
        frame: frame index in a multi-frame file, None for a single-frame file.
        position: ImagePositionPatient (LPS mm of the first pixel's centre).
        orientation: the 6 direction cosines of ImageOrientationPatient (row, column).
        pixel_spacing: PixelSpacing (between rows, between columns), mm.
        rows, cols: matrix.
        position_decimals: decimals written in each ImagePositionPatient value (None when unknown), used to
            derive the rounding tolerance of the stack.
        pixels: decodes the frame (stored values).
        extra: reader facts carried along (rescale, photometric interpretation, ImageType).
    """

    path: Path
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int
    position_decimals: np.ndarray | None
    pixels: Callable[[], np.ndarray]
    extra: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


def orientation_name(normal: np.ndarray) -> str:
    """Name the plane of a slice normal (LPS): 'sagittal' when mostly left-right, etc."""
    n = np.abs(np.asarray(normal, dtype=float))
    axis = int(np.argmax(n))
    if n[axis] < SAGITTAL_MIN:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def normal_of(iop: np.ndarray) -> np.ndarray:
    """Unit normal ``row x column`` of 6 ImageOrientationPatient cosines (zero vector when degenerate)."""
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


# A decimal string (PS3.5 6.2 DS): digits, optional fraction, optional exponent.
_DS_PARTS = re.compile(r"\s*[+-]?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?\s*")


def ds_decimals(text: str) -> int | None:
    """Decimal places a DS value was written with (``"12.30"`` -> 2, ``"1.5e-3"`` -> 4, ``"20"`` -> 0).

    None when the text is not a plain decimal string.
    """
    m = _DS_PARTS.fullmatch(text)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    return len(m.group(2) or "") - int(m.group(3) or 0)


def _rounding(slices: Sequence[Slice2D]) -> np.ndarray:
    """Half a unit of the last written digit of ImagePositionPatient per LPS axis, coarsest over the series.

    Trailing zeros are often not written (``"20"`` for ``20.0``), so an axis takes the finest precision seen
    in any slice, i.e. the precision the writer used. Zeros when unknown (positions from another parser).
    """
    decs = [s.position_decimals for s in slices]
    if any(d is None for d in decs):
        return np.zeros(3)
    return 0.5 * 10.0 ** (-np.max(np.asarray(decs, dtype=float), axis=0))


def stack_slices(slices: list[Slice2D], folder: Path | str, where: str | None
                 ) -> tuple[list[Slice2D], np.ndarray, dict[str, Any]]:
    """Check that the slices form one regular stack, sort them along the normal and build the affine.

    The step tolerance is ``max(0.02 mm, 1 % of the median step, rounding)``, where ``rounding`` is derived
    from the decimals written in the ImagePositionPatient strings: with each coordinate rounded to half a unit
    ``h_a`` of its last digit, a projection on the unit normal ``n`` is off by at most ``r = sum |n_a| h_a``,
    a step by ``2 r`` and the median step by ``2 r``, so steps may differ from the median by ``4 r`` (capped at
    30 % of the median, so a missing slice, +100 %, is always refused).

    Returns:
        ``(sorted slices, 4x4 affine, facts)`` with ``facts`` holding ``shear_deg``, ``slice_spacing_mm`` and
        ``position_rounding_mm``.

    Raises:
        ImageReadError: mixed orientations or matrices, duplicate positions, non-uniform steps, a stack whose
            positions do not lie on a line or advance more than 30 deg away from the normal.
    """
    w = f"{where}: {folder}" if where else str(folder)
    ref = slices[0]
    # Every slice against the first, all at once; the first offending slice is reported.
    bad_orient = np.max(np.abs(np.array([s.orientation for s in slices]) - ref.orientation), axis=1) > ORIENT_TOL
    bad_matrix = np.array([(s.rows, s.cols) != (ref.rows, ref.cols) for s in slices]) | ~np.all(
        np.isclose(np.array([s.pixel_spacing for s in slices]), ref.pixel_spacing, rtol=1e-3, atol=1e-4), axis=1)
    bad = np.nonzero((bad_orient | bad_matrix)[1:])[0] + 1
    if bad.size:
        s = slices[int(bad[0])]
        if bad_orient[bad[0]]:
            raise ImageReadError(
                "slices have different orientations (a localiser/scout or multi-planar series): "
                f"{ref.label} vs {s.label}; choose a series with one stack", where=w)
        raise ImageReadError(f"slices differ in matrix or pixel spacing: {ref.label} {ref.rows}x{ref.cols} "
                             f"{ref.pixel_spacing} vs {s.label} {s.rows}x{s.cols} {s.pixel_spacing}", where=w)
    row, col = ref.orientation[:3], ref.orientation[3:]
    if not (abs(np.linalg.norm(row) - 1) < 0.01 and abs(np.linalg.norm(col) - 1) < 0.01
            and abs(np.dot(row, col)) < 0.01):
        raise ImageReadError(f"ImageOrientationPatient (0020,0037) is not two orthogonal unit vectors: "
                             f"{ref.orientation.tolist()} ({ref.label}); re-export the series", where=w)
    normal = normal_of(ref.orientation)
    if not (ref.pixel_spacing[0] > 0 and ref.pixel_spacing[1] > 0):
        raise ImageReadError(f"PixelSpacing (0028,0030) {list(ref.pixel_spacing)} is not positive ({ref.label}); "
                             "re-export the series", where=w)
    d = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(d, kind="stable")
    slices = [slices[i] for i in order]
    d = d[order]
    n = len(slices)
    h = _rounding(slices)
    r = float(np.abs(normal) @ h)
    h_norm = float(np.linalg.norm(h))
    if n >= 2:
        gaps = np.diff(d)
        dup = np.nonzero(gaps < DUP_TOL_MM)[0]
        if dup.size:
            i = int(dup[0])
            raise ImageReadError(
                f"{dup.size} pair(s) of slices share a position along the normal, e.g. "
                f"{slices[i].label} and {slices[i + 1].label} at {d[i]:.3f} mm: the series holds several "
                "acquisitions (echoes, time points, repeats) under one SeriesInstanceUID; split it and choose one",
                where=w)
        med = float(np.median(gaps))
        tol = max(STEP_ABS_TOL_MM, STEP_REL_TOL * med, min(4.0 * r, STEP_MAX_ROUNDING_REL * med))
        bad = np.nonzero(np.abs(gaps - med) > tol)[0]
        if bad.size:
            i = int(bad[0])
            raise ImageReadError(
                f"slice spacing is not uniform: step {gaps[i]:.3f} mm between {slices[i].label} and "
                f"{slices[i + 1].label}, median {med:.3f} mm, tolerance {tol:.3f} mm (a missing slice or two "
                "stacks in one series); re-export the complete series", where=w)
        step_vec = (slices[-1].position - slices[0].position) / (n - 1)
        spacing_z = float(np.linalg.norm(step_vec))
        cosang = float(np.clip(np.dot(step_vec, normal) / spacing_z, -1.0, 1.0))
        shear = math.degrees(math.acos(cosang))
        if shear > SHEAR_MAX_DEG:
            raise ImageReadError(f"slice positions advance {shear:.1f} deg away from the slice normal: not one "
                                 "stack of parallel slices", where=w)
        fitted = slices[0].position[None, :] + np.arange(n)[:, None] * step_vec[None, :]
        resid = np.linalg.norm(np.array([s.position for s in slices]) - fitted, axis=1)
        if float(resid.max()) > max(LINE_ABS_TOL_MM, STEP_REL_TOL * spacing_z, 2.0 * h_norm):
            k = int(np.argmax(resid))
            raise ImageReadError(f"slice positions do not lie on a straight line ({slices[k].label} is "
                                 f"{resid[k]:.2f} mm off); the series mixes stacks", where=w)
        # Rounded positions tilt the first-to-last step by up to 2 |h| / (n - 1) mm: not a gantry tilt.
        noise_deg = math.degrees(2.0 * h_norm / ((n - 1) * spacing_z)) if spacing_z > 0 else 0.0
        sheared = shear > max(SHEAR_IGNORE_DEG, noise_deg)
        zcol = step_vec if sheared else normal * med
        spacing = med
    else:
        sheared, shear, spacing = False, 0.0, float(ref.pixel_spacing[0])
        zcol = normal * spacing
    affine = np.eye(4)
    affine[:3, 0] = row * ref.pixel_spacing[1]  # x = column index j advances along the row direction
    affine[:3, 1] = col * ref.pixel_spacing[0]  # y = row index i advances along the column direction
    affine[:3, 2] = zcol
    affine[:3, 3] = slices[0].position
    geo = {"shear_deg": round(shear, 4) if sheared else 0.0, "slice_spacing_mm": spacing,
           "position_rounding_mm": [float(v) for v in h]}
    return slices, affine, geo


def check_geometry(n_slices: int, affine: np.ndarray, *, expect_sagittal: bool, where: str | None) -> None:
    """Refuse a stack spinedx cannot use: fewer than :data:`MIN_SLICES` slices, a singular or non-finite affine,
    or (``expect_sagittal``) a slice plane that is not sagittal.

    One check for :func:`spinedx.io.read_image` (after reading) and :func:`spinedx.io.check_dicom_series` (from the
    headers alone, for ``spinedx index``), so the two cannot drift apart.

    Args:
        n_slices: slices of the stack.
        affine: index -> LPS affine of the stack as acquired (the plane test is on the acquired slices: reoriented,
            an axial stack would look sagittal).
        expect_sagittal: require the slice normal to be mostly left-right (``|n . (1,0,0)| >= 0.7``).
        where: names the file/patient in the error.

    Raises:
        ImageReadError: with what is wrong and what to do.
    """
    if n_slices < MIN_SLICES:
        raise ImageReadError(f"only {n_slices} slice(s); at least {MIN_SLICES} are needed (a lesion slice and "
                             "its two neighbours)", where=where)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError("the image geometry (affine) is singular or not finite", where=where)
    if expect_sagittal:
        # Use the normal of the slice plane (x cross y), not the z column: for a sheared stack
        # the z column is tilted while the planes themselves are what the reader sees.
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        normal /= np.linalg.norm(normal)
        if abs(float(normal[0])) < SAGITTAL_MIN:
            name = orientation_name(normal)
            raise ImageReadError(
                f"{name} series where sagittal is expected (slice normal {np.round(normal, 3).tolist()} in LPS); "
                "point the manifest at the sagittal T1W/T2W series", where=where)


# -- canonical orientation ----------------------------------------------------------------------------------
def canonical_axes(affine: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Which index axis of ``affine`` becomes canonical x, y, z, and whether each is flipped.

    Args:
        affine: 4x4 index-to-LPS matrix (columns x, y, z may be oblique or sheared).

    Returns:
        ``(source_axes, flipped)``: ``source_axes[t]`` is the original index axis (0 = x, 1 = y, 2 = z) that
        becomes canonical axis ``t``; ``flipped[t]`` says it runs against the canonical direction.
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3].T.tolist()  # rows: index axes x, y, z (plain floats: tiny)
    dirs = []
    for v in m:
        norm = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) or 1.0
        dirs.append((v[0] / norm, v[1] / norm, v[2] / norm))
    # The slice axis is the most left-right one; ties keep the current slice axis, then x, then y.
    s = max((2, 0, 1), key=lambda ax: (round(abs(dirs[ax][0]), 9), ax == 2, ax == 0))
    a, b = (ax for ax in range(3) if ax != s)
    # canonical x points to (0, 1, 0) (posterior), y to (0, 0, -1) (feet): the cosines are components 1 and -2
    keep = abs(dirs[a][1]) + abs(dirs[b][2])
    swap = abs(dirs[b][1]) + abs(dirs[a][2])
    x_src, y_src = (b, a) if swap > keep + 1e-9 else (a, b)
    src = (x_src, y_src, s)
    flipped = (dirs[x_src][1] < 0, -dirs[y_src][2] < 0, -dirs[s][0] < 0)
    return src, flipped


def reorient(array: np.ndarray, affine: np.ndarray, source_axes: Sequence[int],
             flipped: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Permute and flip a volume ``array[k, i, j]`` and its affine (no interpolation; voxels keep their place).

    Index axis ``a`` (0 = x, 1 = y, 2 = z) is numpy axis ``2 - a``. New index axis ``t`` is old axis
    ``source_axes[t]``, reversed when ``flipped[t]``: then old index ``n - 1 - i`` and the affine's column is
    negated with the origin moved to the old last voxel along that axis, so every voxel keeps its LPS position.

    Returns:
        The new array (a view when possible) and its affine.
    """
    src = [int(v) for v in source_axes]
    arr = np.transpose(array, (2 - src[2], 2 - src[1], 2 - src[0]))
    index = tuple(slice(None, None, -1) if flipped[2 - ax] else slice(None) for ax in range(3))
    arr = arr[index]
    old_shape_xyz = array.shape[::-1]
    out = np.eye(4)
    origin = np.asarray(affine[:3, 3], dtype=np.float64).copy()
    for t in range(3):
        col = np.asarray(affine[:3, src[t]], dtype=np.float64)
        if flipped[t]:
            origin = origin + (old_shape_xyz[src[t]] - 1) * col
            col = -col
        out[:3, t] = col
    out[:3, 3] = origin
    return arr, out


def to_canonical(img: Image) -> Image:
    """``img`` on the canonical sagittal display grid (module docstring), by permutation and flips only.

    ``meta['reorientation']`` records what was done: ``source_axes_xyz`` (the original index axis that became
    x, y, z), ``flipped_xyz`` and ``source_shape_zyx``. An image already on the grid is returned as it is
    (no copy). A DICOM ``meta['files']`` list (one entry per slice) follows the slices.
    """
    src, flipped = canonical_axes(img.affine)
    record = {"source_axes_xyz": list(src), "flipped_xyz": list(flipped), "source_shape_zyx": list(img.shape)}
    meta = dict(img.meta)
    meta["reorientation"] = record
    if src == (0, 1, 2) and not any(flipped):
        img.meta = meta
        return img
    arr, affine = reorient(img.array, img.affine, src, flipped)
    files = meta.get("files")
    if isinstance(files, list) and len(files) == img.n_slices:
        if src[2] == 2:
            meta["files"] = files[::-1] if flipped[2] else files
        else:  # the acquired slices are now rows or columns of the grid: keep the list in acquisition order
            meta["files_acquisition_order"] = meta.pop("files")
    return Image(np.ascontiguousarray(arr), affine, source=img.source, meta=meta)
