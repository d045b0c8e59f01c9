"""Class activation maps of the malignant logit: Grad-CAM and LayerCAM at any layer, several in one pass.

Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1-2) weights each channel of a layer's activations by the
spatial mean of the class score's gradient and keeps the positive part of the sum. LayerCAM (Jiang et
al., IEEE TIP 2021, eqs. 5-6) weights every activation by its own positive gradient, so it stays
sharp at early, high-resolution layers where Grad-CAM's channel-wide weights blur. Both follow the
conventions of ``pytorch-grad-cam`` (package ``grad-cam``; the tests compare against it): ReLU, then
each map scaled to [0, 1] by its minimum and maximum, then bilinear upsampling to the input size.

The class score is the network's single logit for 'malignant' (Yeh et al. 2022: one output unit with a
sigmoid). Activations are captured by forward hooks that hand a copy of the layer's output to the rest
of the network, so in-place operations downstream (torchvision's ``ReLU(inplace=True)``) cannot alter
them, without copying the model; gradients are taken with :func:`torch.autograd.grad` with respect to
the activations only, so no parameter gradient is computed or left behind.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CAM_KINDS = ("gradcam", "layercam")


def as_batch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``x`` as a float32 tensor ``(N, C, H, W)``; anything else is refused."""
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    xt = xt.detach().to(torch.float32)
    if xt.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(xt.shape)}")
    if not bool(torch.isfinite(xt).all()):
        raise ValueError("x holds NaN or infinite values")
    return xt


def malignant_logit(output: torch.Tensor, n: int) -> torch.Tensor:
    """The single malignant logit per sample from an ``(N,)`` or ``(N, 1)`` output."""
    if output.ndim == 0 or output.shape[0] != n or output[0].numel() != 1:
        raise ValueError(f"the model must return one logit per sample ((N,) or (N, 1)), got shape "
                         f"{tuple(output.shape)} for {n} samples")
    logit = output.reshape(n)
    if not bool(torch.isfinite(logit).all()):
        raise ValueError("the model returned NaN or infinite logits")
    return logit


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameterless model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode (batch norm running statistics, no dropout) for the block; the mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def scale_maps(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU, each map scaled to [0, 1] by its min and max, bilinear upsampling to ``size``, scaled again.

    A map without positive values stays all zeros (nothing raises the score). The order is
    pytorch-grad-cam's (``compute_cam_per_layer`` then ``aggregate_multi_layers``): the second scaling
    brings the maximum back to 1 where upsampling blended it with its neighbours.
    """
    cam = minmax(torch.relu(cam))
    if tuple(cam.shape[-2:]) != size:
        cam = minmax(F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])
    return cam.clamp_(0.0, 1.0)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map ``(N, h, w)`` shifted and scaled to [0, 1] by its own minimum and maximum (a constant map -> 0)."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1).values.reshape(-1, 1, 1)
    hi = flat.max(dim=1).values.reshape(-1, 1, 1)
    return (maps - lo) / (hi - lo + 1e-7)


def _module_names(model: nn.Module, layers: Sequence[nn.Module]) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    missing = [i for i, layer in enumerate(layers) if id(layer) not in names]
    if missing:
        raise ValueError("a target layer is not a module of the model")
    return [names[id(layer)] for layer in layers]


def _gradient_ready(model: nn.Module, layers: list[nn.Module], names: list[str]) -> tuple[nn.Module, list[nn.Module]]:
    """``model`` and ``layers``, or a copy and its layers when the model holds inference tensors.

    Tensors made under :func:`torch.inference_mode` (e.g. parameters converted to channels-last there)
    cannot enter an autograd graph; the clones a deep copy makes outside that mode can.
    """
    if not any(t.is_inference() for t in (*model.parameters(), *model.buffers())):
        return model, layers
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    return clone, [modules[n] for n in names]


def _distinct_layers(requests: Sequence[tuple[nn.Module, str]]) -> list[nn.Module]:
    """The requests' layers, each once, in order of first request.

    Raises:
        ValueError: a kind not in :data:`CAM_KINDS`.
    """
    layers: list[nn.Module] = []
    for layer, kind in requests:
        if kind not in CAM_KINDS:
            raise ValueError(f"unknown CAM kind {kind!r}; kinds are {', '.join(CAM_KINDS)}")
        if not any(layer is m for m in layers):
            layers.append(layer)
    return layers


def _weighted_map(kind: str, act: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """The (N, h, w) map of one layer before scaling: Grad-CAM weights each channel by its mean gradient, LayerCAM
    each position by its positive gradient; zeros where the logit does not depend on the layer at all."""
    if grad is None:
        return torch.zeros(act.shape[0], *act.shape[2:], device=act.device)
    if kind == "gradcam":
        return (grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1)
    return (torch.relu(grad) * act).sum(dim=1)


def cams(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    requests: Sequence[tuple[nn.Module, str]],
    *,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """Class activation maps of the malignant logit for several (layer, kind) pairs in one pass per batch.

    Args:
        model: a classifier with one logit per sample (``(N,)`` or ``(N, 1)``). Evaluation mode is used
            during the call and the model's mode is restored; its parameters and modules are untouched.
        x: patches ``(N, C, H, W)``.
        requests: ``(layer, kind)`` pairs, ``kind`` in :data:`CAM_KINDS`; ``layer`` must be a module of
            ``model`` that runs once per forward pass and returns a ``(N, K, h, w)`` tensor.
        batch_size: patches per forward/backward pass.

    Returns:
        One ``(N, H, W)`` float32 array in [0, 1] per request, in order.
    """
    xt = as_batch(x)
    layers = _distinct_layers(requests)
    original = list(layers)
    names = _module_names(model, layers)
    model, layers = _gradient_ready(model, layers, names)
    names = [n or "<model>" for n in names]
    index = [next(i for i, m in enumerate(original) if m is layer) for layer, _ in requests]
    size = (int(xt.shape[2]), int(xt.shape[3]))
    out: list[list[np.ndarray]] = [[] for _ in requests]
    captured: list[list[torch.Tensor]] = [[] for _ in layers]

    def make_hook(i: int) -> Callable[[nn.Module, object, object], torch.Tensor]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                raise ValueError(f"layer {names[i]} must return a (N, K, h, w) tensor to be explained")
            captured[i].append(output)
            return output.clone()  # downstream in-place ops change the copy, not the captured activation
        return hook

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(layers)]
    device = model_device(model)
    try:
        with eval_mode(model), torch.enable_grad():
            for start in range(0, xt.shape[0], batch_size):
                for c in captured:
                    c.clear()
                # requires_grad on the input keeps the graph alive even when every parameter is frozen
                batch = xt[start:start + batch_size].to(device).requires_grad_(True)
                logit = malignant_logit(model(batch), batch.shape[0])
                for i, c in enumerate(captured):
                    if len(c) != 1:
                        raise ValueError(f"layer {names[i]} ran {len(c)} times in one forward pass; explain a "
                                         "module that runs once (e.g. a whole block)")
                acts = [c[0] for c in captured]
                grads = torch.autograd.grad(logit.sum(), acts, allow_unused=True)
                for r, ((_, kind), i) in enumerate(zip(requests, index, strict=True)):
                    cam = _weighted_map(kind, acts[i].detach(), grads[i])
                    out[r].append(scale_maps(cam.float(), size).cpu().numpy().astype(np.float32))
    finally:
        for h in handles:
            h.remove()
    return [np.concatenate(o) if o else np.zeros((0, *size), np.float32) for o in out]
