"""A smooth synthetic "spine" in physical space, sampled on arbitrary sagittal grids.

Used to make T1/T2 pairs with different matrices, spacings and slice positions, and with a known
patient motion between them, without any files.
"""

from __future__ import annotations

import numpy as np

from spinedx.io.image import Image

#: Sagittal orientation (DICOM IOP rows = anterior->posterior (+y), columns = head->feet (-z)); slice normal
#: = row x column = -x (towards the patient's right).
SAGITTAL = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _blobs(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    blobs = []
    # A column of "vertebral bodies" along z (head-feet), 28 mm apart, each an ellipsoid.
    for i in range(5):
        c = np.array([0.0, 0.0, -56.0 + 28.0 * i])
        blobs.append((c, np.array([14.0, 16.0, 11.0]), 1.0 + 0.3 * i))
    # Texture: smaller blobs of varying brightness.
    for _ in range(25):
        c = rng.uniform([-15, -40, -70], [15, 40, 70])
        blobs.append((c, rng.uniform(3.0, 8.0, 3), float(rng.uniform(-0.8, 0.8))))
    return blobs


def spine(points: np.ndarray, contrast: str = "t2", seed: int = 0) -> np.ndarray:
    """Intensity at (N, 3) LPS points; ``contrast`` 't1' maps the same anatomy to other intensities."""
    val = np.zeros(len(points))
    for i, (c, r, w) in enumerate(_blobs(seed)):
        d2 = (((points - c) / r) ** 2).sum(axis=1)
        inside = 1.0 / (1.0 + np.exp(8.0 * (np.sqrt(d2) - 1.0)))  # smooth-edged ellipsoid
        ww = w if contrast == "t2" else (0.5 * w if i < 5 else -1.5 * w)
        val += ww * inside
    if contrast == "t1":
        return 600.0 - 250.0 * val
    return 100.0 + 300.0 * val


def sample(shape_zyx: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float],
           contrast: str = "t2", shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
           direction: np.ndarray = SAGITTAL, seed: int = 0) -> Image:
    """An Image of the phantom. ``shift`` (mm, LPS) moves the anatomy (patient motion between series)."""
    img = Image.from_geometry(np.zeros(shape_zyx, np.float32), spacing, origin, direction)
    nz, ny, nx = shape_zyx
    k, i, j = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pts = img.index_to_physical(np.stack([j.ravel(), i.ravel(), k.ravel()], axis=1))
    img.array = spine(pts - np.asarray(shift), contrast, seed).reshape(shape_zyx).astype(np.float32)
    return img


def centered_origin(shape_zyx: tuple[int, int, int], spacing: tuple[float, float, float],
                    direction: np.ndarray = SAGITTAL, offset: tuple[float, float, float] = (0, 0, 0)) -> tuple:
    """Origin putting the volume centre at ``offset`` (LPS mm)."""
    half = (np.array(shape_zyx[::-1]) - 1) / 2.0 * np.asarray(spacing)
    return tuple(np.asarray(offset) - direction @ half)
