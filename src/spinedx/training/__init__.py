"""Training: configuration and profiles, batch augmentation on the device, the fast training loop.

Names are imported on first use (PEP 562), so ``spinedx.training.config`` (the run configuration, read
by the run folder, the statistics and the report) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AffineRanges": "spinedx.training.config", "CVConfig": "spinedx.training.config",
    "BatchAffine": "spinedx.training.augment", "apply_affine": "spinedx.training.augment",
    "epoch_indices": "spinedx.training.augment", "FitResult": "spinedx.training.engine",
    "Trainer": "spinedx.training.engine", "fold_seed": "spinedx.training.engine",
    "resolve_device": "spinedx.training.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spinedx.training' has no attribute {name!r}")
