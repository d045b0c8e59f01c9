"""Random affine augmentation of whole batches on the training device.

Yeh et al. 2022, "Augmentation and training configurations": "The benign dataset was augmented
20 times by using random affine transformations including translation, scaling, and rotation
... the malignant dataset was augmented 40 times." Here each epoch draws every benign slice 20
times and every malignant slice 40 times (see :func:`epoch_indices`) and transforms each draw
with fresh parameters, which gives the same distribution of training images as the paper's
offline copies but without storing them and with new transforms every epoch.

As in TorchIO, sampling parameters (:meth:`BatchAffine.sample`) is separate from applying them
(:func:`apply_affine`), so a transform can be replayed exactly from its parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Defined with the run configuration (light, no torch), re-exported here where the transform lives.
from spinedx.training.config import AffineRanges


def affine_theta(params: torch.Tensor) -> torch.Tensor:
    """Sampling matrices (N, 2, 3) for :func:`torch.nn.functional.affine_grid`.

    Args:
        params: (N, 4) rows of ``(angle_rad, tx, ty, scale)``; ``tx, ty`` in normalised
            coordinates ([-1, 1] spans the patch), so a fraction ``t`` of the size is ``2 t``.

    Returns:
        Output-to-input matrices: the content is rotated by ``angle``, scaled by ``scale`` and
        shifted by ``(tx, ty)``.
    """
    angle, tx, ty, scale = params.unbind(1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # inverse of (shift o scale o rotate): the grid maps output pixels back into the input
    row0 = torch.stack([cos, sin, -(cos * tx + sin * ty)], dim=1)
    row1 = torch.stack([-sin, cos, -(-sin * tx + cos * ty)], dim=1)
    return torch.stack([row0, row1], dim=1)


def apply_affine(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Transform each patch of ``x`` (N, C, H, W) by its own parameters, bilinear, zero padding.

    Zero padding is the patch mean, since patches are normalised to mean 0, SD 1 (the paper's
    intensity normalisation).
    """
    theta = affine_theta(params.to(device=x.device, dtype=torch.float32))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(x.dtype)


def identity_params(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Parameters of the identity transform for ``n`` patches."""
    p = torch.zeros(n, 4, device=device)
    p[:, 3] = 1.0
    return p


class BatchAffine:
    """Seeded random affine transform of whole batches, parameters drawn per sample.

    The generator lives on the CPU (so results do not depend on the device) and only the small
    (N, 4) parameter tensor is copied to the device; the image work happens there.
    """

    def __init__(self, ranges: AffineRanges = AffineRanges(), seed: int = 0) -> None:
        self.ranges = ranges
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, n: int) -> torch.Tensor:
        """Draw (n, 4) parameters ``(angle_rad, tx, ty, scale)``."""
        r = self.ranges
        u = torch.rand(n, 4, generator=self.generator)
        angle = (2 * u[:, 0] - 1) * math.radians(r.rotation_deg)
        tx = (2 * u[:, 1] - 1) * 2 * r.translation
        ty = (2 * u[:, 2] - 1) * 2 * r.translation
        scale = r.scale[0] + u[:, 3] * (r.scale[1] - r.scale[0])
        return torch.stack([angle, tx, ty, scale], dim=1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A freshly transformed copy of the batch ``x`` (N, C, H, W)."""
        params = self.sample(x.shape[0])
        # non_blocking: the (N, 4) host tensor is staged at once, so the GPU queue is not drained per batch
        return apply_affine(x, params.to(x.device, non_blocking=True))


def epoch_indices(labels: np.ndarray, views_benign: int, views_malignant: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled slice indices for one epoch: benign slices ``views_benign`` times, malignant ``views_malignant``.

    With the paper's 20 and 40, one epoch holds the same images as its offline-augmented set
    (20 copies of each benign slice, 40 of each malignant one), each under a fresh transform.
    """
    labels = np.asarray(labels)
    reps = np.where(labels == 1, views_malignant, views_benign)
    idx = np.repeat(np.arange(len(labels)), reps)
    rng.shuffle(idx)
    return idx
