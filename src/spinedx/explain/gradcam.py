"""Grad-CAM heatmaps for the malignant logit of a patch classifier (the original single-method API).

Grad-CAM (Selvaraju et al., ICCV 2017) weights the activation maps of a convolutional layer by
the spatially averaged gradient of the class score and keeps the positive part. The paper
(Yeh et al. 2022, Figs. 3-6) shows such heatmaps over the lesion's T1W and T2W slices; here
the class score is the network's single logit for 'malignant' and the layer is, by default, the
ResNet's last residual block (``model.gradcam_target_layer()``). :func:`spinedx.explain.explain`
is the entry point for every method (this one is ``gradcam-layer4`` there); :func:`gradcam` stays
for callers that want this exact map or another layer of their choice.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spinedx.explain.cam import cams


class MalignantLogitTarget:
    """A ``pytorch-grad-cam`` target: the model's single malignant logit, whatever its output shape.

    ``pytorch-grad-cam`` calls the target once per sample with that sample's output, which is
    a 0-d tensor for an ``(N,)`` output and a ``(1,)`` tensor for an ``(N, 1)`` output.
    """

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output.reshape(-1)[0]


def _target_layer(model: nn.Module, layer: nn.Module | None) -> nn.Module:
    if layer is not None:
        return layer
    getter = getattr(model, "gradcam_target_layer", None)
    if getter is None:
        raise TypeError("model has no gradcam_target_layer(); pass target_layer= explicitly")
    return getter()


def gradcam(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    target_layer: nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM heatmaps of the malignant logit for a batch of patches.

    Args:
        model: a classifier with one logit output (``(N,)`` or ``(N, 1)``); by default its
            ``gradcam_target_layer()`` (the ResNet's last residual block) is explained. The model
            is used in evaluation mode and left as it was (mode, modules, parameters).
        x: patches ``(N, C, H, W)`` (spinedx: ``(N, 6, 64, 64)``, channel order of
            ``spinedx.preprocess.CHANNEL_NAMES``).
        target_layer: the layer to explain, when it must be a module of ``model`` other than
            its default.
        batch_size: patches per forward/backward pass.

    Returns:
        ``(N, H, W)`` float32 heatmaps, each scaled to ``[0, 1]`` (all zeros where no region
        increases the malignant logit), upsampled to the patch size.
    """
    return cams(model, x, [(_target_layer(model, target_layer), "gradcam")], batch_size=batch_size)[0]
