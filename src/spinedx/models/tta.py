"""Test-time augmentation (TTA): a run's probability for a patch is the mean over the patch and fixed affine views.

The models are trained on randomly rotated, shifted and zoomed patches (:mod:`spinedx.training.augment`) and scored
on un-augmented ones. Averaging each fold model's probability over the patch and a few affine views of it, drawn
from inside the training ranges, steadies the prediction; on the development cohorts ``affine8`` gained 0.015-0.030
patient AUC over the un-augmented patch after the BatchNorm re-estimation (docs/training.md, "Why the CNN
trailed"). The ``cpu`` profile uses it (``CVConfig.tta = "affine8"``); ``paper`` and ``quick`` do not (``"none"``).

The views are fixed, not random: the same for every patch, every case and every engine, so a prediction is
deterministic and both engines of :mod:`spinedx.inference` (the torch fold models and their ONNX graph, which holds
the views as sampling grids: the workstation's and a bundle's ``model.onnx``) give the same numbers. ``affine8`` is
the patch and 8 views, each moving one thing to two thirds of the training range: rotation +-2/3 of
``rotation_deg``, shift +-2/3 of ``translation`` along each axis, zoom at each end of ``scale``.

Explanations (:mod:`spinedx.explain`) stay on the un-augmented patch: a map of a rotated view would not line up
with the image the reader sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spinedx.training.config import TTA_CHOICES, AffineRanges

if TYPE_CHECKING:
    import torch

    from spinedx.training.config import CVConfig

__all__ = ["TTA_CHOICES", "TTAViews"]


@dataclass(frozen=True)
class TTAViews:
    """The views a run averages over at test time.

    Attributes:
        name: ``none`` (the patch alone) or ``affine8`` (the patch and 8 affine views).
        params: The views beyond the patch itself, rows ``(angle_rad, tx, ty, scale)`` as in
            :func:`spinedx.training.augment.apply_affine` (``tx, ty`` in normalised coordinates).
    """

    name: str
    params: tuple[tuple[float, float, float, float], ...] = ()

    @classmethod
    def make(cls, name: str, ranges: AffineRanges = AffineRanges()) -> TTAViews:
        """The views called ``name`` for augmentation ``ranges`` (a run's ``config.augment``)."""
        if name == "none":
            return cls("none", ())
        if name == "affine8":
            a = math.radians(ranges.rotation_deg) * 2 / 3
            t = 2 * ranges.translation * 2 / 3  # a fraction f of the patch is 2 f in normalised coordinates
            s0, s1 = ranges.scale
            params = ((a, 0.0, 0.0, 1.0), (-a, 0.0, 0.0, 1.0), (0.0, t, 0.0, 1.0), (0.0, -t, 0.0, 1.0),
                      (0.0, 0.0, t, 1.0), (0.0, 0.0, -t, 1.0), (0.0, 0.0, 0.0, float(s0)), (0.0, 0.0, 0.0, float(s1)))
            return cls("affine8", params)
        raise ValueError(f"test-time augmentation must be one of {', '.join(TTA_CHOICES)}, not {name!r}")

    @classmethod
    def from_config(cls, config: CVConfig) -> TTAViews:
        """The views of a run's configuration."""
        return cls.make(config.tta, config.augment)

    @property
    def n_views(self) -> int:
        """Images per patch: the patch itself and the extra views."""
        return 1 + len(self.params)

    def describe(self) -> str:
        """One line for records and pages."""
        if not self.params:
            return "none (the patch alone)"
        return (f"{self.name}: mean probability over the patch and {len(self.params)} fixed affine views "
                "(rotation, shift along each axis, zoom)")

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON records (bundle.json, prediction.json)."""
        return {"name": self.name, "n_views": self.n_views,
                "views": [{"rotation_deg": round(math.degrees(a), 6), "shift_x": tx / 2, "shift_y": ty / 2,
                           "zoom": s} for a, tx, ty, s in self.params],
                "shift_unit": "fraction of the patch size", "combine": "mean of probabilities"}

    def param_tensor(self) -> torch.Tensor:
        """``params`` as a float32 (V, 4) tensor."""
        import torch

        return torch.tensor(self.params, dtype=torch.float32).reshape(-1, 4)

    def grids(self, n_channels: int, size: int) -> torch.Tensor:
        """Sampling grids (V, size, size, 2) of the extra views (for graphs that cannot build them)."""
        import torch
        import torch.nn.functional as F

        from spinedx.training.augment import affine_theta

        if not self.params:
            return torch.zeros(0, size, size, 2)
        theta = affine_theta(self.param_tensor())
        return F.affine_grid(theta, [len(self.params), n_channels, size, size], align_corners=False)


def expand_views(x: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) and each view of it by ``grids`` (V, H, W, 2, from :meth:`TTAViews.grids`), view-major.

    Bilinear, zero padding (the patch mean, patches being z-scored), as the training augmentation
    (:func:`spinedx.training.augment.apply_affine`). Written so the ONNX exporter can trace it with a dynamic batch
    (:class:`spinedx.inference.EnsembleNet` runs it in both engines and in the exported graph).
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    views = [F.grid_sample(x, g.unsqueeze(0).expand(n, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                           align_corners=False) for g in grids]
    return torch.cat([x, *views], dim=0)
