"""Training: configuration and profiles, batch augmentation on the device, the fast training loop."""

from spinedx.training.augment import AffineRanges, BatchAffine, apply_affine, epoch_indices
from spinedx.training.config import CVConfig
from spinedx.training.engine import FitResult, Trainer, fold_seed, resolve_device

__all__ = [
    "AffineRanges", "BatchAffine", "CVConfig", "FitResult", "Trainer", "apply_affine", "epoch_indices",
    "fold_seed", "resolve_device",
]
