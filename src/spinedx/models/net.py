"""The paper's network: a 1x1 convolution (6 -> 3 channels) in front of an ImageNet backbone.

Yeh et al. 2022, "Deep learning architecture": ResNet50 pre-trained on ImageNet takes three
input channels, so "a convolutional layer with 1 x 1 filter was added to extract inter-channel
features and transform from six channels to three channels"; "the output of the last block is
connected to a fully connected layer with sigmoid function". The sigmoid lives in the loss
(``BCEWithLogitsLoss``) and in the inference engines (:mod:`spinedx.inference`), so the network
returns logits.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spinedx.common import CHANNEL_NAMES  # light module: importing the network does not pull in SimpleITK
from spinedx.errors import WeightsError

PRETRAINED_CHOICES = ("auto", "imagenet", "none")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's initial weights came from (recorded in every output).

    Attributes:
        source: ``imagenet-file`` (``--weights PATH``), ``imagenet-cache`` (torch hub cache),
            ``imagenet-download`` (fetched into the cache now), ``none`` (scratch, asked for) or
            ``fallback-none`` (``auto`` found no file: scratch).
        path: The weights file, if any.
        sha256: sha256 of that file, if any.
        message: A human-readable sentence; a warning for ``fallback-none``.
    """

    source: str
    path: str | None = None
    sha256: str | None = None
    message: str = ""

    @property
    def pretrained(self) -> bool:
        """True when ImageNet weights were loaded."""
        return self.source.startswith("imagenet")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML/JSON outputs."""
        return asdict(self)


class SpineNet(nn.Module):
    """``Conv2d(6, 3, 1)`` -> torchvision backbone -> ``Linear(features, 1)`` logit.

    Attributes:
        backbone_name: torchvision model name (``resnet50`` in the paper).
        channel_names: Names of the six input channels, in order.
        head_dropout: Dropout probability on the input of the final ``Linear`` during training (:class:`HeadDropout`).
    """

    def __init__(self, backbone_name: str, backbone: nn.Module, channel_names: tuple[str, ...] = CHANNEL_NAMES):
        super().__init__()
        self.backbone_name = backbone_name
        self.channel_names = tuple(channel_names)
        self.head_dropout = 0.0  # dropout on the final layer's input in training (set by build_model)
        self.mix = nn.Conv2d(len(self.channel_names), 3, kernel_size=1)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 1) for patches (N, 6, H, W)."""
        return self.backbone(self.mix(x))

    def gradcam_target_layer(self) -> nn.Module:
        """The last block of the backbone's last stage (``layer4[-1]`` for ResNets), for Grad-CAM."""
        layer4 = getattr(self.backbone, "layer4", None)
        if layer4 is not None:
            return layer4[-1]
        features = getattr(self.backbone, "features", None)
        if features is not None:
            return features[-1]
        raise AttributeError(f"no Grad-CAM target layer known for backbone {self.backbone_name}")


class HeadDropout:
    """Forward pre-hook of the final ``Linear``: dropout on its input in training mode (the paper's dropout).

    A hook rather than a module keeps the head a plain ``nn.Linear``: the state-dict keys of every saved fold
    model (``fc.weight``, ``fc.bias``) and the traced inference graph (BatchNorm folding, the ONNX ensemble) are
    unchanged, and in evaluation mode the hook does nothing.

    Attributes:
        p: Dropout probability during training.
    """

    def __init__(self, p: float) -> None:
        self.p = float(p)

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if module.training and self.p > 0.0:
            return (nn.functional.dropout(args[0], self.p, training=True), *args[1:])
        return None


#: Momentum of every BatchNorm's running statistics (PyTorch's default; the ResNets' own).
BN_MOMENTUM = 0.1


def set_batchnorm_momentum(net: nn.Module, momentum: float = BN_MOMENTUM) -> None:
    """Give every BatchNorm layer of ``net`` the running-statistics momentum ``momentum``.

    torchvision's MobileNetV3 (and EfficientNet) use 0.01, tuned for hundreds of thousands of ImageNet steps: over
    the few hundred steps of a fold here their running statistics still describe the first epochs' weights, and the
    evaluation-mode network collapsed to one probability for every patch (mobilenet_v3_small on a 190-patient
    development cohort: every fold's predictions within 0.005 of their median, pooled AUC 0.53). 0.1, the value the
    ResNets already use, tracks the last ~10 batches. The statistics are not saved weights: fold models written
    before this change load unchanged.
    """
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def _torchvision_backbone(name: str) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise WeightsError(
            f"unknown backbone {name!r}; use a torchvision classification model such as resnet18, resnet34, "
            "resnet50 (the paper's) or resnet101",
            where="--backbone",
        )
    return torchvision.models.get_model(name, weights=None)


def _new_head(in_features: int, dropout: float) -> nn.Linear:
    head = nn.Linear(in_features, 1)
    if dropout > 0.0:
        head.register_forward_pre_hook(HeadDropout(dropout))
    return head


def _replace_head(name: str, net: nn.Module, dropout: float = 0.0) -> None:
    """Replace the 1000-class ImageNet head by one logit, with ``dropout`` on its input during training."""
    fc = getattr(net, "fc", None)
    if isinstance(fc, nn.Linear):
        net.fc = _new_head(fc.in_features, dropout)
        return
    head = getattr(net, "classifier", None)
    if isinstance(head, nn.Linear):
        net.classifier = _new_head(head.in_features, dropout)
        return
    if isinstance(head, nn.Sequential):
        for i in range(len(head) - 1, -1, -1):
            layer = head[i]
            if isinstance(layer, nn.Linear):
                head[i] = _new_head(layer.in_features, dropout)
                return
    raise WeightsError(f"backbone {name!r} has no fc/classifier Linear head to replace", where="--backbone")


def imagenet_file_names(backbone: str) -> list[str]:
    """torchvision's ImageNet weight file names for ``backbone``, the default first."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(backbone)
    except (ValueError, KeyError):
        return []
    names = [enum.DEFAULT.url.rsplit("/", 1)[-1]]
    names += [w.url.rsplit("/", 1)[-1] for w in enum if w.url.rsplit("/", 1)[-1] not in names]
    return names


def imagenet_cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(backbone: str) -> Path | None:
    """The first torchvision ImageNet file for ``backbone`` present in the hub cache, or None."""
    for name in imagenet_file_names(backbone):
        path = imagenet_cache_dir() / name
        if path.is_file():
            return path
    return None


def _where_to_put(backbone: str) -> str:
    names = imagenet_file_names(backbone)
    if not names:
        return f"torchvision has no ImageNet weights for {backbone}; use --pretrained none"
    url_hint = ", ".join(names)
    return (
        f"put torchvision's ImageNet file for {backbone} at {imagenet_cache_dir() / names[0]} "
        f"(file name from https://download.pytorch.org/models/; accepted: {url_hint}) or pass --weights PATH, "
        "or train from scratch with --pretrained none"
    )


def _load_imagenet_state(backbone: str, net: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle refused, ...
        raise WeightsError(f"cannot read weights file ({exc}); {_where_to_put(backbone)}", where=str(path)) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError("not a state dict", where=str(path))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(
            f"not a torchvision {backbone} ImageNet state dict ({first}); {_where_to_put(backbone)}", where=str(path)
        ) from exc


def build_model(
    backbone: str = "resnet50", pretrained: str = "auto", weights: str | Path | None = None, *, progress: bool = True,
    dropout: float = 0.0,
) -> tuple[SpineNet, WeightsInfo]:
    """Build the paper's network and initialise it.

    ImageNet weights come from ``weights`` or torchvision's file in the torch hub cache
    (``torch.hub.get_dir()/checkpoints/<torchvision file name>``); only ``pretrained="imagenet"`` with no
    file anywhere downloads it (:func:`spinedx.models.weights.download_imagenet`).

    Args:
        backbone: torchvision model name; ``resnet50`` is the paper's ("Parameters were
            initialized using ImageNet").
        pretrained: ``imagenet`` (a local file, else downloaded once into the cache), ``none`` (scratch) or
            ``auto`` (ImageNet if a local file is found, else scratch with a warning recorded in
            :class:`WeightsInfo`; never touches the network).
        weights: Path of a torchvision ImageNet state dict for ``backbone``.
        progress: show the download's progress bar.
        dropout: dropout probability on the input of the final layer during training (:class:`HeadDropout`;
            the paper's Discussion says dropout was used but gives no rate; our runs use
            :attr:`spinedx.training.config.CVConfig.dropout`). Inference is unaffected.

    Returns:
        The model (train mode, CPU) and where its weights came from.

    Raises:
        WeightsError: Unknown backbone, or ImageNet weights asked for but missing/unusable; the
            message says where to put the file.
    """
    from spinedx.provenance import sha256_file

    if pretrained not in PRETRAINED_CHOICES:
        raise WeightsError(f"pretrained must be one of {', '.join(PRETRAINED_CHOICES)}, not {pretrained!r}",
                           where="--pretrained")
    net = _torchvision_backbone(backbone)
    path: Path | None = None
    source = "none"
    if pretrained != "none":
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsError(f"weights file not found; {_where_to_put(backbone)}", where=str(path))
            source = "imagenet-file"
        else:
            path = find_imagenet_weights(backbone)
            if path is not None:
                source = "imagenet-cache"
            elif pretrained == "imagenet":
                # Asked for explicitly: fetch torchvision's file into the standard cache (checksum verified),
                # or fail cleanly within the timeout when offline. ``auto`` never gets here: no network.
                from spinedx.models.weights import download_imagenet

                path = download_imagenet(backbone, progress=progress)
                source = "imagenet-download"
    if path is not None:
        _load_imagenet_state(backbone, net, path)
        info = WeightsInfo(source, str(path.resolve()), sha256_file(path),
                           f"ImageNet weights for {backbone} from {path.resolve()}")
    elif pretrained == "auto":
        msg = (f"WARNING: no local ImageNet weights for {backbone}: training from scratch, unlike the paper; "
               f"{_where_to_put(backbone)}")
        warnings.warn(msg, stacklevel=2)
        info = WeightsInfo("fallback-none", None, None, msg)
    else:
        info = WeightsInfo("none", None, None, f"{backbone} trained from scratch (--pretrained none)")
    _replace_head(backbone, net, dropout)
    set_batchnorm_momentum(net)
    model = SpineNet(backbone, net)
    model.head_dropout = float(dropout)
    return model, info
