"""Which layer of a backbone an explanation method reads: ResNet stages and their equivalents.

The methods of :mod:`spinedx.explain.methods` name layers the ResNet way (He et al. 2016):
``layerK`` is the last residual block of stage K (``layerK[-1]``), whose output has 1/2**(K+1) of the
input's resolution (1/32 for ``layer4``, so 2x2 for the 64x64 patches of Yeh et al. 2022). Other
torchvision backbones with a ``features`` sequence (MobileNet, EfficientNet, DenseNet, VGG, ConvNeXt,
...) get the same meaning by resolution: ``layerK`` is the last module of ``features`` whose output has
that stride, found by one forward pass of a single sample.
"""

from __future__ import annotations

import torch
from torch import nn

#: The ResNet stages an explanation may read; stride of each stage's output relative to the input.
STAGE_STRIDES: dict[str, int] = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def _body(model: nn.Module) -> nn.Module:
    """The backbone of a :class:`spinedx.models.net.SpineNet`, or the model itself."""
    backbone = getattr(model, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else model


def _features_stage(features: nn.Sequential, x: torch.Tensor, stride: int, model: nn.Module) -> nn.Module:
    """The last child of ``features`` whose output is ``stride`` times smaller than the input ``x``."""
    sizes: dict[int, tuple[int, ...]] = {}
    handles = [child.register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, tuple(o.shape[-2:])))
               for n, child in enumerate(features)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    want = (max(x.shape[-2] // stride, 1), max(x.shape[-1] // stride, 1))
    hits = [n for n, size in sizes.items() if size == want]
    if not hits:
        raise ValueError(f"no module of the backbone's features outputs {want[0]}x{want[1]} maps for "
                         f"{x.shape[-2]}x{x.shape[-1]} input (stride {stride}); output sizes are "
                         f"{sorted(set(sizes.values()), reverse=True)}")
    return features[max(hits)]


def stage_layer(model: nn.Module, stage: str, x: torch.Tensor | None = None) -> nn.Module:
    """The module whose output an explanation at ``stage`` reads.

    Args:
        model: a :class:`~spinedx.models.net.SpineNet` (its ``backbone`` is searched) or a backbone.
        stage: ``layer1`` .. ``layer4`` (see :data:`STAGE_STRIDES`).
        x: an input batch ``(N, C, H, W)``; needed only for ``features``-style backbones, whose stages
            are found by the resolution of their outputs.

    Returns:
        ``layerK[-1]`` for ResNets (``layerK`` itself when it is not a sequence), else the last module
        of ``features`` at the stage's stride.

    Raises:
        ValueError: unknown stage, or a backbone with neither ``layerK`` nor ``features``.
    """
    if stage not in STAGE_STRIDES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_STRIDES)}")
    body = _body(model)
    layer = getattr(body, stage, None)
    if isinstance(layer, nn.Sequential):
        if len(layer) == 0:
            raise ValueError(f"{stage} of the backbone is empty")
        return layer[-1]
    if isinstance(layer, nn.Module):
        return layer
    features = getattr(body, "features", None)
    if isinstance(features, nn.Sequential):
        if x is None:
            raise ValueError(f"finding {stage} in a features-style backbone needs an input batch")
        return _features_stage(features, x, STAGE_STRIDES[stage], model)
    raise ValueError(f"the model has neither {stage} (ResNet) nor a features sequence; pass the layer explicitly")
