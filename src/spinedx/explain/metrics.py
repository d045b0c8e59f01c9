"""Scoring heatmaps against known lesion masks: pointing game, energy inside the mask, chance baselines.

* Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016 / IJCV
  2018): a map scores a hit when its maximum lies inside the lesion. Here without the original's
  15-pixel tolerance (a 64x64 patch is the lesion box itself). When several pixels share the maximum
  (a coarse map upsampled from 2x2 has flat corners), the hit needs at least half of them inside the
  mask, i.e. the hit a random choice among them would score more often than not. A map without a
  maximum (constant, e.g. all zeros because nothing raises the malignant logit) points nowhere: a miss.
* Energy share (the "energy-based pointing game" of Wang et al., Score-CAM, CVPRW 2020): the fraction of
  the map's sum that lies inside the mask. A map with no energy counts as uniform (its share is the
  mask's area fraction: it tells nothing about where the lesion is).
* Baselines that know nothing about the image: a random map (independent uniform pixels: hit rate and
  share near the mask's area fraction) and a centre prior (a centred Gaussian: the lesion box is centred
  on the lesion, so this is what "pointing at the middle" earns).

Masks are ``(N, H, W)`` in [0, 1] (``patches.npz["mask"]``, bilinearly sampled on the crop grid); a pixel
is inside the lesion when its mask value is at least 0.5.
"""

from __future__ import annotations

import numpy as np

MASK_THRESHOLD = 0.5


def _check(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be (N, H, W) of one shape, got {maps.shape} and {masks.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps hold NaN or infinite values")
    return maps, masks >= MASK_THRESHOLD


def empty_maps(maps: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: maps that are constant (no maximum to point with, no energy pattern)."""
    maps = np.asarray(maps, dtype=np.float64)
    flat = maps.reshape(len(maps), -1)
    return flat.max(axis=1) <= flat.min(axis=1)


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: does each map's maximum fall inside its mask?

    Args:
        maps: ``(N, H, W)`` heatmaps (any scale).
        masks: ``(N, H, W)`` lesion masks in [0, 1].

    Returns:
        True where at least half of the pixels at the map's maximum lie inside the mask; False for a
        constant map.
    """
    maps, inside = _check(maps, masks)
    flat, ins = maps.reshape(len(maps), -1), inside.reshape(len(inside), -1)
    at_max = flat == flat.max(axis=1, keepdims=True)
    share = (at_max & ins).sum(axis=1) / at_max.sum(axis=1)
    return (share >= 0.5) & ~empty_maps(maps)


def energy_share(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``(N,)`` float: the fraction of each map's sum inside its mask.

    Args:
        maps: ``(N, H, W)`` non-negative heatmaps.
        masks: ``(N, H, W)`` lesion masks in [0, 1].

    Returns:
        ``sum(map * inside) / sum(map)``; for a map that sums to 0, the mask's area fraction.
    """
    maps, inside = _check(maps, masks)
    if (maps < 0).any():
        raise ValueError("energy share needs non-negative maps")
    total = maps.sum(axis=(1, 2))
    within = (maps * inside).sum(axis=(1, 2))
    area = inside.mean(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, within / np.where(total > 0, total, 1.0), area)


def random_maps(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(n, h, w)`` maps of independent uniform pixels: the no-information baseline."""
    return np.random.default_rng(seed).random((n, h, w))


def centre_prior_maps(n: int, h: int, w: int, sigma: float = 0.25) -> np.ndarray:
    """``(n, h, w)`` copies of a centred Gaussian with standard deviation ``sigma`` times the side.

    Its maximum is the four central pixels (even sides), so its pointing game asks whether the middle of
    the lesion box is lesion.
    """
    yy = (np.arange(h) - (h - 1) / 2) / (sigma * h)
    xx = (np.arange(w) - (w - 1) / 2) / (sigma * w)
    g = np.exp(-0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2))
    return np.broadcast_to(g, (n, h, w)).copy()
