"""The one image type of spinedx: voxels plus a physical-space affine.

Conventions (used everywhere in the project):

* ``array`` has shape ``(nz, ny, nx)`` and is indexed ``array[k, i, j]`` where ``k`` is the
  slice (0-based, in order of position along the slice normal), ``i`` the row (pixel y) and
  ``j`` the column (pixel x). This is SimpleITK's / numpy's order.
* ``affine`` is a 4x4 matrix mapping the homogeneous *index* ``(x=j, y=i, z=k, 1)`` to the
  physical point in millimetres in the DICOM patient coordinate system (LPS: +x to the
  patient's left, +y posterior, +z head), as in DICOM PS3.3 C.7.6.2.1.1 and in ITK.
* A lesion box ``x0,y0,x1,y1`` is in pixel (column, row) coordinates of one slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk


@dataclass
class Image:
    """A 3-D image (a stack of 2-D slices) with its geometry.

    Args:
        array: voxels, shape ``(nz, ny, nx)``, float32.
        affine: 4x4 index-to-LPS matrix (see module docstring).
        source: where it came from (file or folder), for error messages.
        meta: free-form facts (series UID, TR, TE, description, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise ValueError(f"Image array must be 3-D (nz, ny, nx), got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    # -- geometry ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along (x, y, z) = (column, row, slice)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit LPS directions of the x, y and z index axes."""
        return self.affine[:3, :3] / self.spacing[None, :]

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def slice_normal(self) -> np.ndarray:
        """Unit vector along increasing slice index."""
        return self.direction[:, 2]

    def index_to_physical(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) continuous indices (x, y, z) to (N, 3) LPS points in mm."""
        pts = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) LPS points in mm to (N, 3) continuous indices (x, y, z)."""
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return np.linalg.solve(self.affine[:3, :3], (pts - self.affine[:3, 3]).T).T

    # -- conversion -------------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        """The image as a SimpleITK image (float32) with the same geometry."""
        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array, dtype=np.float32))
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(tuple(float(d) for d in self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, source: str = "", meta: dict[str, Any] | None = None) -> Image:
        """Build from a 3-D SimpleITK image, keeping its geometry."""
        if img.GetDimension() != 3:
            raise ValueError(f"expected a 3-D image, got {img.GetDimension()}-D")
        arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
        spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
        affine = np.eye(4)
        affine[:3, :3] = direction * spacing[None, :]
        affine[:3, 3] = img.GetOrigin()
        return cls(arr, affine, source=source, meta=dict(meta or {}))

    @classmethod
    def from_geometry(
        cls,
        array: np.ndarray,
        spacing: tuple[float, float, float],
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        direction: np.ndarray | None = None,
        source: str = "",
        meta: dict[str, Any] | None = None,
    ) -> Image:
        """Build from spacing (x, y, z), origin and a 3x3 direction (columns = axis directions)."""
        d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        affine = np.eye(4)
        affine[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
        affine[:3, 3] = origin
        return cls(np.asarray(array, dtype=np.float32), affine, source=source, meta=dict(meta or {}))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        return f"Image(shape={self.shape}, spacing=({sp}) mm, source={self.source!r})"
