"""6-channel lesion patches: T1 and T2 of the lesion slice and its two neighbours, 64x64, z-scored.

Yeh et al. 2022, "Deep learning architecture": "The input of network included both T1W and T2W images of the
identified slice with its two neighboring slices ... The bounding box was resized to 64 x 64 by linear
interpolation. The intensities of each patch were normalized to a mean of zero and a standard deviation of
one."

Choices made here (the paper does not state them):

* **Resizing** is bilinear sampling at the output pixel centres (the ``align_corners=False`` convention),
  without anti-aliasing: the paper says "linear interpolation", and boxes around one vertebra are about
  40-120 pixels wide, so the downsampling factor stays below 2 and aliasing is small.
* **Z-score per channel** (default): T1 and T2 intensities are in arbitrary, unrelated scanner units, and a
  patch-wide z-score would let the brighter contrast dominate the other. Each of the six channels gets mean
  0, std 1; a constant channel (std < ``min_std``) becomes all zeros rather than dividing by ~0.
* **Edge slices**: when the lesion slice is the first or last T2 slice, the missing neighbour is replaced by
  the lesion slice itself (edge replication) and the sample records it in ``edge``.
"""

from __future__ import annotations

import numpy as np

from spinedx.io.image import Image
from spinedx.preprocess.mapping import CropGrid, sample_index_map, sample_plane


def neighbour_slices(s: int, nz: int) -> tuple[tuple[int, int, int], list[str]]:
    """The planes (s-1, s, s+1) clamped to the series, and which neighbours were replaced by the edge."""
    edge: list[str] = []
    lo, hi = s - 1, s + 1
    if lo < 0:
        lo = s
        edge.append("s-1")
    if hi >= nz:
        hi = s
        edge.append("s+1")
    return (lo, s, hi), edge


def zscore(x: np.ndarray, mode: str = "channel", min_std: float = 1e-6) -> tuple[np.ndarray, int]:
    """Normalise (n, C, H, W) patches to mean 0, std 1.

    Args:
        x: patches.
        mode: ``"channel"`` (each channel of each sample separately) or ``"patch"`` (each sample as a whole).
        min_std: below this a channel (or patch) counts as constant and becomes zeros.

    Returns:
        The normalised float32 array and the number of constant channels (or patches) set to zero.
    """
    x = x.astype(np.float64, copy=False)
    axes = (2, 3) if mode == "channel" else (1, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    constant = std < min_std
    out = np.where(constant, 0.0, (x - mean) / np.where(constant, 1.0, std))
    return out.astype(np.float32), int(constant.sum())


def raw_sample(t1: Image, t2: Image, grid: CropGrid, s: int, t2_to_t1: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One un-normalised (6, P, P) sample for lesion slice ``s`` and the neighbours replaced at the edge.

    T2 channels are bilinear samples of the T2 planes; T1 channels are trilinear samples of T1 at the same
    physical points mapped through ``t2_to_t1`` (identity = header geometry only).
    """
    planes, edge = neighbour_slices(s, t2.n_slices)
    p = grid.x.shape[0]
    # T2 index -> T2 physical -> (registration) T1 physical -> T1 index, composed once.
    index_map = np.linalg.inv(t1.affine) @ t2_to_t1 @ t2.affine
    out = np.empty((6, p, p), dtype=np.float32)
    for c, k in enumerate(planes):
        xyz = np.stack([grid.x.ravel(), grid.y.ravel(), np.full(grid.x.size, float(k))], axis=1)
        out[c] = sample_index_map(t1, index_map, xyz, (p, p))
        out[3 + c] = sample_plane(t2, k, grid)
    return out, edge
