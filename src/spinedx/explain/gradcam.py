"""Grad-CAM heatmaps for the malignant logit of a patch classifier.

Grad-CAM (Selvaraju et al., ICCV 2017) weights the activation maps of a convolutional layer by
the spatially averaged gradient of the class score and keeps the positive part. The paper
(Yeh et al. 2022, Figs. 3-6) shows such heatmaps over the lesion's T1W and T2W slices; here
the class score is the network's single logit for 'malignant' and the layer is the ResNet's
last residual block (``model.gradcam_target_layer()``). The maintained implementation of
``pytorch-grad-cam`` (package ``grad-cam``) does the hooking.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn


class MalignantLogitTarget:
    """Grad-CAM target: the model's single malignant logit, whatever its output shape.

    ``pytorch-grad-cam`` calls the target once per sample with that sample's output, which is
    a 0-d tensor for an ``(N,)`` output and a ``(1,)`` tensor for an ``(N, 1)`` output.
    """

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output.reshape(-1)[0]


def _without_inplace_relu(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode where every ``nn.ReLU`` is out of place.

    torchvision's ResNet blocks apply ``ReLU(inplace=True)`` to tensors that hooks may have
    captured; an in-place op on a hooked tensor either corrupts the saved activation or makes
    autograd refuse the backward pass. Copying keeps the caller's model untouched.
    """
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    for p in clone.parameters():
        p.requires_grad_(True)  # frozen layers would stop the gradient before the target layer
    return clone


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
            ``gradcam_target_layer()`` (the ResNet's last residual block) is explained.
        x: patches ``(N, C, H, W)`` (spinedx: ``(N, 6, 64, 64)``, channel order of
            ``spinedx.preprocess.CHANNEL_NAMES``).
        target_layer: the layer to explain, when it must be a layer of ``model`` other than
            its default. It is looked up by name in the internal copy of the model.
        batch_size: patches per forward/backward pass.

    Returns:
        ``(N, H, W)`` float32 heatmaps, each scaled to ``[0, 1]`` (all zeros where no region
        increases the malignant logit), upsampled to the patch size.
    """
    from pytorch_grad_cam import GradCAM

    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if xt.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(xt.shape)}")
    layer = _target_layer(model, target_layer)
    # Find the layer's name so the same layer can be taken from the ReLU-safe copy.
    name = next((n for n, m in model.named_modules() if m is layer), None)
    if name is None:
        raise ValueError("target_layer is not a module of model")
    clone = _without_inplace_relu(model)
    clone_layer = dict(clone.named_modules())[name]
    device = next(clone.parameters()).device
    out: list[np.ndarray] = []
    cam = GradCAM(model=clone, target_layers=[clone_layer])
    # Not used as a context manager: its __exit__ swallows IndexError, which would hide bugs.
    try:
        with torch.enable_grad():
            for start in range(0, xt.shape[0], batch_size):
                # requires_grad on the input keeps the graph alive even if the model is frozen
                batch = xt[start:start + batch_size].to(device).clone().requires_grad_(True)
                targets: list[Any] = [MalignantLogitTarget()] * batch.shape[0]
                heat = cam(input_tensor=batch, targets=targets)
                out.append(np.asarray(heat, dtype=np.float32))
    finally:
        cam.activations_and_grads.release()
    if not out:
        return np.zeros((0, xt.shape[2], xt.shape[3]), dtype=np.float32)
    # pytorch-grad-cam min-max scales each map; clip float noise so the contract [0, 1] holds.
    return np.clip(np.concatenate(out, axis=0), 0.0, 1.0)
