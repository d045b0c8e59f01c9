"""Simulated acquisition: slice geometry, patient motion between series, bias field, Rician
noise and zero-filled reconstruction to 512 x 512 (the paper's "MRI protocols").

The paper's sagittal spin-echo T1W (TR/TE 400/15 ms, matrix 320 x 192) and FSE T2W (3200/90 ms,
448 x 224), FOV 30 cm, 4 mm slices, both reconstructed to 512 x 512. Frequency encoding runs
head-feet (the 320/448 rows) and phase encoding antero-posterior (the 192/224 columns). Images
are rendered at the acquisition matrix, complex Gaussian noise is added there (thermal noise),
and k-space is zero-filled to 512 x 512 as a scanner does; the magnitude is then Rician.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from spinedx.synth.phantom import Anatomy, evaluate

FOV_MM = 300.0
RECON = 512
SLICE_MM = 4.0
# DICOM image plane (PS3.3 C.7.6.2.1.1): rows run posterior (+y), columns run inferior (-z).
ROW_DIR = np.array([0.0, 1.0, 0.0])
COL_DIR = np.array([0.0, 0.0, -1.0])
NORMAL = np.cross(ROW_DIR, COL_DIR)  # (-1, 0, 0): slices advance towards the patient's right


@dataclass(frozen=True)
class SeriesSpec:
    """One of the paper's two sagittal sequences."""

    name: str
    matrix: tuple[int, int]  # acquired (rows = frequency, head-feet; columns = phase, AP)
    tr: float
    te: float
    echo_train: int
    series_number: int
    description: str
    sequence: str  # ScanningSequence
    variant: str  # SequenceVariant
    channel: int  # 0 T1W, 1 T2W in the phantom
    scale: float  # stored value of relative signal 1


T1 = SeriesSpec("T1", (320, 192), 400.0, 15.0, 1, 3, "SAG T1 SE", "SE", "NONE", 0, 1000.0)
T2 = SeriesSpec("T2", (448, 224), 3200.0, 90.0, 16, 4, "SAG T2 FSE", "SE", "SK", 1, 1000.0)
SERIES: tuple[SeriesSpec, ...] = (T1, T2)


@dataclass
class Geometry:
    """Slice stack of both series (same planning): position of pixel (0, 0) of slice 0."""

    origin: np.ndarray  # LPS of the first pixel centre of slice 0
    n_slices: int

    @property
    def pixel_mm(self) -> float:
        return FOV_MM / RECON

    def position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice ``k``."""
        return self.origin + k * SLICE_MM * NORMAL

    def affine(self) -> np.ndarray:
        """4x4 index (x=column, y=row, z=slice) -> LPS of the 512 x 512 reconstruction."""
        a = np.eye(4)
        a[:3, 0] = ROW_DIR * self.pixel_mm
        a[:3, 1] = COL_DIR * self.pixel_mm
        a[:3, 2] = NORMAL * SLICE_MM
        a[:3, 3] = self.origin
        return a

    def acquisition_points(self, matrix: tuple[int, int]) -> np.ndarray:
        """LPS centres (nz, rows, cols, 3) of the acquired pixels (aligned with recon pixel 0)."""
        nr, nc = matrix
        i = np.arange(nr) * (FOV_MM / nr)
        j = np.arange(nc) * (FOV_MM / nc)
        k = np.arange(self.n_slices) * SLICE_MM
        pts = (
            self.origin[None, None, None, :]
            + k[:, None, None, None] * NORMAL
            + i[None, :, None, None] * COL_DIR
            + j[None, None, :, None] * ROW_DIR
        )
        return pts.astype(np.float32)


@dataclass
class Motion:
    """Rigid patient motion between the series: ``q = R (p - centre) + centre + shift``."""

    rotation: np.ndarray  # 3x3
    centre: np.ndarray
    shift: np.ndarray
    angles_deg: np.ndarray

    @classmethod
    def identity(cls) -> Motion:
        return cls(np.eye(3), np.zeros(3), np.zeros(3), np.zeros(3))

    @classmethod
    def sample(cls, rng: np.random.Generator, centre: np.ndarray) -> Motion:
        """A few mm of translation and up to ~2 degrees about each axis."""
        ang = rng.uniform(-2.0, 2.0, 3)
        a = np.deg2rad(ang)
        rx = np.array([[1, 0, 0], [0, np.cos(a[0]), -np.sin(a[0])], [0, np.sin(a[0]), np.cos(a[0])]])
        ry = np.array([[np.cos(a[1]), 0, np.sin(a[1])], [0, 1, 0], [-np.sin(a[1]), 0, np.cos(a[1])]])
        rz = np.array([[np.cos(a[2]), -np.sin(a[2]), 0], [np.sin(a[2]), np.cos(a[2]), 0], [0, 0, 1]])
        shift = rng.uniform(-3.0, 3.0, 3)
        shift[0] *= 0.5  # less through-plane drift
        return cls(rz @ ry @ rx, np.asarray(centre, float), shift, ang)

    def forward(self, p: np.ndarray) -> np.ndarray:
        """Anatomy-frame points -> where they are during this series (scanner frame)."""
        return (p - self.centre) @ self.rotation.T + self.centre + self.shift

    def inverse(self, q: np.ndarray) -> np.ndarray:
        """Scanner-frame points -> anatomy frame (float32 in, float32 out)."""
        if not self.shift.any() and np.array_equal(self.rotation, np.eye(3)):
            return q
        d = q - (self.centre + self.shift).astype(q.dtype)
        r = self.rotation.astype(q.dtype)
        out = np.empty_like(q)
        for a in range(3):  # column by column: much faster than a (N, 3) @ (3, 3) matmul
            out[:, a] = d[:, 0] * r[0, a] + d[:, 1] * r[1, a] + d[:, 2] * r[2, a] + self.centre[a]
        return out


def zero_fill(img: np.ndarray, size: int = RECON) -> np.ndarray:
    """Zero-filled Fourier interpolation of complex slices (nz, nr, nc) to (nz, size, size).

    Keeps pixel 0 in place and the signal amplitude, like a scanner's reconstruction matrix
    larger than the acquisition matrix; sharp edges ring a little (truncation artefact).
    """
    nz, nr, nc = img.shape
    k = scipy.fft.fft2(img, axes=(1, 2))
    # the four quadrants of the unshifted spectrum go to the four corners of the larger one: the same as
    # centring both with fftshift, without the two shifted copies
    big = np.zeros((nz, size, size), dtype=np.complex64)
    hr, hc = nr - nr // 2, nc - nc // 2  # non-negative frequencies (and the rest negative)
    big[:, :hr, :hc] = k[:, :hr, :hc]
    big[:, :hr, size - nc // 2:] = k[:, :hr, hc:]
    big[:, size - nr // 2:, :hc] = k[:, hr:, :hc]
    big[:, size - nr // 2:, size - nc // 2:] = k[:, hr:, hc:]
    out = scipy.fft.ifft2(big, axes=(1, 2), overwrite_x=True)
    out *= np.float32(size * size / (nr * nc))
    return out


def acquire(
    anat: Anatomy, geom: Geometry, spec: SeriesSpec, motion: Motion, noise: float, rng: np.random.Generator,
    want_mask: bool = False,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Render one series.

    Returns:
        The stored pixel values (nz, 512, 512) uint16 and, if asked, the masks of the fractured
        body and of its lesion on the acquisition grid (nz, rows, cols), else None.
    """
    pts = geom.acquisition_points(spec.matrix)
    shape = pts.shape[:3]
    flat = pts.reshape(-1, 3)
    rendered = evaluate(anat, motion.inverse(flat), spec.channel)
    signal = rendered.signal.reshape(shape)
    # receive-coil sensitivity: posterior spine array, falling off anteriorly, slowly along z
    y = pts[..., 1]
    z = pts[..., 2]
    y_back = geom.origin[1] + 0.9 * FOV_MM
    g = rng.normal(0, 0.08, 2)
    bias = (0.45 + 0.75 * np.exp(-np.clip(y_back - y, 0, None) / 110.0)) * (1 + g[0] * (z - z.mean()) / 150.0)
    bias *= 1 + g[1] * np.cos(np.pi * (z - z.min()) / FOV_MM)
    sigma = noise
    cplx = (signal * bias).astype(np.complex64)
    cplx.real += sigma * rng.standard_normal(shape, dtype=np.float32)
    cplx.imag += sigma * rng.standard_normal(shape, dtype=np.float32)
    mag = np.abs(zero_fill(cplx))
    stored = np.clip(np.rint(mag * spec.scale), 0, 4095).astype(np.uint16)
    masks = (rendered.body.reshape(shape), rendered.lesion.reshape(shape)) if want_mask else None
    return stored, masks


def lesion_mask(anat: Anatomy, geom: Geometry, lesion_acq: np.ndarray) -> np.ndarray:
    """The lesion mask on the 512 x 512 reconstruction grid of the T2 series (no motion).

    The phantom is evaluated at the centres of the reconstructed pixels, but only in the slices
    and the in-plane bounding box (plus two acquisition pixels) where the acquisition-grid mask
    ``lesion_acq`` (nz, rows, cols) has any voxel, and one slice on either side, which is where
    the lesion can be.

    Returns:
        uint8 (nz, 512, 512), 1 in the lesion: indexed like the DICOM series' ``Image.array``.
    """
    nz, nr, nc = lesion_acq.shape
    out = np.zeros((nz, RECON, RECON), dtype=np.uint8)
    ks = np.flatnonzero(lesion_acq.any(axis=(1, 2)))
    if ks.size == 0:
        return out
    rows = np.flatnonzero(lesion_acq.any(axis=(0, 2)))
    cols = np.flatnonzero(lesion_acq.any(axis=(0, 1)))
    fr, fc = RECON / nr, RECON / nc
    r0, r1 = max(int((rows[0] - 2) * fr), 0), min(int(np.ceil((rows[-1] + 2) * fr)) + 1, RECON)
    c0, c1 = max(int((cols[0] - 2) * fc), 0), min(int(np.ceil((cols[-1] + 2) * fc)) + 1, RECON)
    k0, k1 = max(int(ks[0]) - 1, 0), min(int(ks[-1]) + 2, nz)
    pix = FOV_MM / RECON
    k = np.arange(k0, k1) * SLICE_MM
    i = np.arange(r0, r1) * pix
    j = np.arange(c0, c1) * pix
    pts = (
        geom.origin[None, None, None, :]
        + k[:, None, None, None] * NORMAL
        + i[None, :, None, None] * COL_DIR
        + j[None, None, :, None] * ROW_DIR
    ).astype(np.float32)
    lesion = evaluate(anat, pts.reshape(-1, 3), 1).lesion
    out[k0:k1, r0:r1, c0:c1] = lesion.reshape(pts.shape[:3])
    return out
