"""Configuration of patch extraction (one typed object, written into every ``extract.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# The six input channels, in order; defined once in the light spinedx.common (re-exported here).
from spinedx.common import CHANNEL_NAMES

__all__ = ["CHANNEL_NAMES", "ExtractConfig"]

_ZSCORE_MODES = ("channel", "patch")
_PAIR_CHECK_MODES = ("strict", "warn", "off")  # spinedx.preprocess.pairing.PAIR_CHECK_MODES


@dataclass(frozen=True)
class ExtractConfig:
    """How lesion boxes drawn on T2 become 6-channel patches.

    Args:
        patch_size: side of the square output patch in pixels (paper: 64).
        margin: extra context around the square crop, as a fraction of the box's longer side added on each
            side (0 = the square exactly containing the box, as in the paper).
        register: refine the geometry-only T2->T1 mapping with a bounded rigid registration (paper: "mapped
            onto T1W images using linear registration").
        max_translation_mm: registration results translating further than this are rejected.
        max_rotation_deg: registration results rotating further than this (about any axis) are rejected.
        registration_iterations: optimiser iterations per resolution level.
        registration_margin_mm: in-plane margin around the box of the region the metric is computed on.
        registration_slices: T2 slices on each side of the lesion slices included in that region.
        histogram_bins: Mattes mutual-information histogram bins.
        registration_samples: at most this many fixed-region voxels (regular grid, fixed seed) enter the
            metric; smaller regions use all their voxels.
        zscore: ``"channel"`` normalises each of the six channels to mean 0, std 1 (default; T1 and T2
            intensities are on unrelated scales), ``"patch"`` normalises the whole 6-channel patch at once.
        min_std: a channel whose standard deviation is below this is constant; it becomes all zeros.
        pair_check: whether T1 and T2 must be two series of one patient with the right weighting
            (:mod:`spinedx.preprocess.pairing`): ``strict`` refuses a wrong pair, ``warn`` records the problem
            and goes on (unusual protocols), ``off`` makes no check.
    """

    patch_size: int = 64
    margin: float = 0.0
    register: bool = True
    max_translation_mm: float = 10.0
    max_rotation_deg: float = 5.0
    registration_iterations: int = 100
    registration_margin_mm: float = 25.0
    registration_slices: int = 2
    histogram_bins: int = 32
    registration_samples: int = 40000
    zscore: str = "channel"
    min_std: float = 1e-6
    pair_check: str = "strict"

    def __post_init__(self) -> None:
        if self.patch_size < 2:
            raise ValueError(f"patch_size must be >= 2, got {self.patch_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.pair_check not in _PAIR_CHECK_MODES:
            raise ValueError(f"pair_check must be one of {_PAIR_CHECK_MODES}, got {self.pair_check!r}")
        if self.zscore not in _ZSCORE_MODES:
            raise ValueError(f"zscore must be one of {_ZSCORE_MODES}, got {self.zscore!r}")
        if self.max_translation_mm <= 0 or self.max_rotation_deg <= 0:
            raise ValueError("registration bounds must be positive")
        if self.registration_iterations < 1 or self.registration_slices < 0:
            raise ValueError("registration_iterations must be >= 1 and registration_slices >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractConfig:
        """Build from a dict (e.g. the ``config`` of an ``extract.json``); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ExtractConfig keys: {unknown}; known: {sorted(known)}")
        return cls(**data)
