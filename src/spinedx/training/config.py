"""One typed configuration for a cross-validation run, with the ``paper`` and ``quick`` profiles.

Defaults follow Yeh et al. 2022, "Augmentation and training configurations" and "Evaluation
using cross-validation": ResNet50 initialised from ImageNet, Adam (lr 1e-4, beta1 0.5), L2
regularisation, batch 32, 100 epochs with early stopping on the lowest validation loss, benign
slices augmented 20x and malignant 40x, tenfold cross-validation, patient probability = the
highest slice probability, threshold 0.5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from spinedx.errors import SpinedxError
from spinedx.training.augment import AffineRanges

PROFILES = ("paper", "quick")
EARLY_STOP_CHOICES = ("inner", "outer")
AGGREGATIONS = ("max", "mean")

OPTIMISTIC_WARNING = (
    "OPTIMISTIC: early stopping used the outer validation fold (--early-stop-on outer), as the paper "
    "describes; each fold's model was chosen on the very patients it is scored on, so these metrics "
    "overstate performance on new patients. Use --early-stop-on inner for an unbiased estimate."
)


@dataclass
class CVConfig:
    """Everything that shapes a cross-validation run (written to ``config.yaml``).

    Attributes:
        profile: ``paper`` (full protocol) or ``quick`` (fewer epochs and views, all else equal).
        folds: Number of outer folds (paper: 10).
        seed: Master seed; fold ``k`` derives its own seeds from ``(seed, k)``.
        backbone: torchvision backbone (paper: resnet50).
        pretrained: ``auto``, ``imagenet`` or ``none`` (see :func:`spinedx.models.build_model`).
        weights: Local ImageNet weights file, if any.
        epochs: Maximum epochs per fold (paper: 100).
        patience: Epochs without a lower validation loss before stopping; 0 disables stopping
            (the best epoch is still restored).
        views_benign: Augmented views of each benign slice per epoch (paper: 20).
        views_malignant: Augmented views of each malignant slice per epoch (paper: 40).
        lr: Adam learning rate (paper: 1e-4).
        betas: Adam betas (paper: beta1 = 0.5).
        weight_decay: L2 penalty (Adam ``weight_decay``, i.e. L2 added to the gradient).
        batch_size: Paper: 32.
        early_stop_on: ``inner`` (validation patients drawn from the training folds) or
            ``outer`` (the paper literally: the held-out fold; results flagged optimistic).
        inner_val_fraction: Share of the training patients held out for early stopping.
        threshold: Malignant when the patient probability is >= threshold (paper: 0.5).
        aggregation: Patient probability from slice probabilities: ``max`` (paper) or ``mean``.
        augment: Affine ranges (rotation, translation, scale).
        threads: torch CPU threads (None: torch's default).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        bf16: ``auto`` (where the device supports it), ``on`` or ``off``.
        channels_last: Use the channels-last memory format (faster convolutions on CPU and GPU).
        compile: ``auto`` (only for the paper profile, where it pays off), ``on`` or ``off``.
    """

    profile: str = "paper"
    folds: int = 10
    seed: int = 0
    backbone: str = "resnet50"
    pretrained: str = "auto"
    weights: str | None = None
    epochs: int = 100
    patience: int = 10
    views_benign: int = 20
    views_malignant: int = 40
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-4
    batch_size: int = 32
    early_stop_on: str = "inner"
    inner_val_fraction: float = 0.1
    threshold: float = 0.5
    aggregation: str = "max"
    augment: AffineRanges = field(default_factory=AffineRanges)
    threads: int | None = None
    device: str = "auto"
    bf16: str = "auto"
    channels_last: bool = True
    compile: str = "auto"

    @classmethod
    def from_profile(cls, profile: str = "paper", **overrides: Any) -> CVConfig:
        """The profile's defaults with ``overrides`` (None values are ignored)."""
        if profile not in PROFILES:
            raise SpinedxError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}", where="--profile")
        base: dict[str, Any] = {}
        if profile == "quick":
            # Sized so 10 folds over the default 190-patient synthetic cohort (570 slices) take
            # about 10 minutes on 2 CPU cores; everything but epochs and views is the paper's.
            base = {"epochs": 8, "patience": 4, "views_benign": 1, "views_malignant": 2}
        base.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(base) - names
        if unknown:
            raise SpinedxError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        if isinstance(base.get("augment"), dict):
            aug = dict(base["augment"])
            if "scale" in aug:
                aug["scale"] = tuple(aug["scale"])
            base["augment"] = AffineRanges(**aug)
        if "betas" in base:
            base["betas"] = tuple(base["betas"])
        cfg = cls(profile=profile, **base)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`SpinedxError` for values that cannot work."""
        problems = []
        if self.folds < 2:
            problems.append(f"folds must be >= 2 (got {self.folds})")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.patience < 0:
            problems.append(f"patience must be >= 0 (got {self.patience})")
        if self.views_benign < 1 or self.views_malignant < 1:
            problems.append("views per slice must be >= 1")
        if self.batch_size < 2:
            problems.append("batch_size must be >= 2 (batch normalisation)")
        if self.early_stop_on not in EARLY_STOP_CHOICES:
            problems.append(f"early_stop_on must be inner or outer (got {self.early_stop_on!r})")
        if not 0.0 < self.inner_val_fraction < 0.5:
            problems.append(f"inner_val_fraction must be in (0, 0.5) (got {self.inner_val_fraction})")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold must be in [0, 1] (got {self.threshold})")
        if self.aggregation not in AGGREGATIONS:
            problems.append(f"aggregation must be max or mean (got {self.aggregation!r})")
        if self.bf16 not in ("auto", "on", "off") or self.compile not in ("auto", "on", "off"):
            problems.append("bf16 and compile must be auto, on or off")
        if problems:
            raise SpinedxError("; ".join(problems) + ".", where="configuration")

    @property
    def optimistic(self) -> bool:
        """True when early stopping saw the outer fold (the paper's literal protocol)."""
        return self.early_stop_on == "outer"

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples as lists), for YAML/JSON."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["augment"] = {**asdict(self.augment), "scale": list(self.augment.scale)}
        return d


#: Keys that may change between a run and its resume without changing results.
RESUMABLE_KEYS = ("threads", "compile")
