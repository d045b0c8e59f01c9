"""One entry point for every explanation method: ``explain(models, x, method)``.

Each method maps patches ``(N, C, H, W)`` to heatmaps ``(N, H, W)`` in [0, 1] for the malignant logit;
for several models (the fold models of a cross-validation run) the maps are averaged, so a region only
some folds rely on is shown dimmer than one all of them rely on. The methods and how they compare on
synthetic lesions with known masks (pointing game, energy inside the mask, cost) are in
docs/explanations.md; :data:`DEFAULT_METHOD` is the one shown by ``spinedx predict``, the report's case
gallery and the workstation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from spinedx.explain.cam import as_batch, cams
from spinedx.explain.layers import stage_layer
from spinedx.explain.occlusion import OCCLUSION_STRIDE, OCCLUSION_WINDOW, occlusion


@dataclass(frozen=True)
class Method:
    """An explanation method.

    Attributes:
        name: key in :data:`METHODS`.
        kind: ``gradcam``, ``layercam`` or ``occlusion``.
        stage: the ResNet stage a CAM reads (``layer2`` .. ``layer4``, see :mod:`spinedx.explain.layers`);
            None for occlusion.
        label: short human-readable name for figures, tables and DICOM descriptions.
        reference: the method's publication, for captions and DICOM descriptions.
    """

    name: str
    kind: str
    stage: str | None
    label: str
    reference: str


_GRADCAM = "Selvaraju et al., ICCV 2017"
_LAYERCAM = "Jiang et al., IEEE TIP 2021"

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradcam-layer4", "gradcam", "layer4", "Grad-CAM layer4", _GRADCAM),
    Method("gradcam-layer3", "gradcam", "layer3", "Grad-CAM layer3", _GRADCAM),
    Method("gradcam-layer2", "gradcam", "layer2", "Grad-CAM layer2", _GRADCAM),
    Method("layercam-layer3", "layercam", "layer3", "LayerCAM layer3", _LAYERCAM),
    Method("layercam-layer2", "layercam", "layer2", "LayerCAM layer2", _LAYERCAM),
    Method("occlusion", "occlusion", None, f"Occlusion {OCCLUSION_WINDOW}px/{OCCLUSION_STRIDE}",
           "Zeiler and Fergus, ECCV 2014"),
)}

#: The method shown to users (predict, report gallery, workstation); chosen in docs/explanations.md.
DEFAULT_METHOD = "layercam-layer3"


def method_info(method: str) -> Method:
    """The :class:`Method` called ``method``; an unknown name is refused with the list of known ones."""
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown explanation method {method!r}; methods are {', '.join(METHODS)}") from None


def method_caption(method: str = DEFAULT_METHOD) -> str:
    """``label (reference)``, e.g. ``LayerCAM layer3 (Jiang et al., IEEE TIP 2021)``: how every place that shows a
    map (overlay PNGs, report gallery, workstation, DICOM Secondary Capture) names the method that made it."""
    info = method_info(method)
    return f"{info.label} ({info.reference})"


def explanation_record(method: str = DEFAULT_METHOD, n_models: int | None = None) -> dict[str, Any]:
    """What a prediction records about its heatmaps (``prediction.json["explanation"]``, ``explanation.json``).

    Args:
        method: the method that made the maps (a name from :data:`METHODS`).
        n_models: how many fold models' maps were averaged (None: not recorded).
    """
    info = method_info(method)
    rec: dict[str, Any] = {"method": info.name, "label": info.label, "reference": info.reference,
                           "caption": method_caption(method), "target": "malignant logit",
                           "default": info.name == DEFAULT_METHOD,
                           "comparison": "docs/explanations.md (pointing game and energy share on synthetic lesions)"}
    if n_models is not None:
        rec["n_models"] = int(n_models)
        rec["aggregation"] = f"mean of the {n_models} fold models' maps, each scaled to [0, 1]"
    return rec


def _as_models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    out = [models] if isinstance(models, nn.Module) else list(models)
    if not out:
        raise ValueError("no model to explain")
    return out


def explain_many(
    models: nn.Module | Sequence[nn.Module],
    x: np.ndarray | torch.Tensor,
    methods: Sequence[str],
    *,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Maps of several methods at once (the CAMs of one model share a forward and a backward pass).

    Args:
        models: one model, or several whose maps are averaged (e.g. the fold models of a run).
        x: patches ``(N, C, H, W)``.
        methods: names from :data:`METHODS`.
        batch_size: patches per pass (occlusion: occluded copies per pass is 8 times this).

    Returns:
        ``{method: (N, H, W) float32 in [0, 1]}``.
    """
    infos = [method_info(m) for m in dict.fromkeys(methods)]
    xt = as_batch(x)
    ms = _as_models(models)
    n, _, h, w = xt.shape
    total = {m.name: np.zeros((n, h, w), np.float64) for m in infos}
    cam_infos = [m for m in infos if m.kind != "occlusion"]

    def maps_of(model: nn.Module) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if cam_infos:
            requests = [(stage_layer(model, m.stage or "", xt), m.kind) for m in cam_infos]
            out.update(zip([m.name for m in cam_infos], cams(model, xt, requests, batch_size=batch_size),
                           strict=True))
        if any(m.kind == "occlusion" for m in infos):
            out["occlusion"] = occlusion(model, xt, batch_size=8 * batch_size)
        return out

    for maps in _each_model(ms, maps_of):  # summed in the models' order, however they were computed
        for name, heat in maps.items():
            total[name] += heat
    return {k: np.clip(v / len(ms), 0.0, 1.0).astype(np.float32) for k, v in total.items()}


def _each_model(models: list[nn.Module], fn: Any) -> list[Any]:
    """``[fn(m) for m in models]``, with the models spread over one Python thread per torch thread.

    A few patches are too small a batch to keep two cores busy from one model: one torch thread per model and the
    models side by side make the fold ensemble's maps of a case faster (10 ResNet50 x 3 patches on two cores:
    0.42 s one model after the other, 0.37 s two at a time). torch's thread count is set to 1 for the call and
    restored after it; the results come back in the models' order.
    """
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    if len(models) < 2 or threads < 2:
        return [fn(m) for m in models]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(threads, len(models)), thread_name_prefix="spinedx-explain") as pool:
            return list(pool.map(fn, models))
    finally:
        torch.set_num_threads(threads)


def explain(
    models: nn.Module | Sequence[nn.Module],
    x: np.ndarray | torch.Tensor,
    method: str = DEFAULT_METHOD,
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """Heatmaps of the malignant logit for a batch of patches, averaged over ``models``.

    Args:
        models: a :class:`~spinedx.models.net.SpineNet` (or any torchvision-style classifier with one
            logit whose backbone has ``layer1..4`` or a ``features`` sequence), or a sequence of them.
        x: patches ``(N, C, H, W)`` (spinedx: ``(N, 6, 64, 64)``, channels of
            ``spinedx.preprocess.CHANNEL_NAMES``).
        method: a name from :data:`METHODS`; default :data:`DEFAULT_METHOD`.
        batch_size: patches per forward/backward pass.

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1] at patch resolution (the mean of each model's map, each
        scaled to [0, 1]; all zeros where no model finds anything that raises the malignant logit).
    """
    return explain_many(models, x, [method], batch_size=batch_size)[method]
