"""Heatmap overlays on the lesion slice's T1W and T2W crops (the paper's Figs. 3-6), drawn with Pillow
(:mod:`spinedx.explain.render`).

Patches follow the channel order of ``spinedx.preprocess.CHANNEL_NAMES``
(``T1 s-1, T1 s, T1 s+1, T2 s-1, T2 s, T2 s+1``); the overlays use the centre slice of each
sequence, ``T1 s`` and ``T2 s``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def channel_index(name: str) -> int:
    """Index of channel ``name`` (e.g. ``"T2 s"``) in a patch."""
    from spinedx.preprocess import CHANNEL_NAMES as names  # the single source of truth

    if name not in names:
        raise KeyError(f"unknown channel {name!r}; channels are {names}")
    return names.index(name)


def _method_label(method: str) -> str:
    from spinedx.explain.methods import method_info

    return method_info(method).label


def panel_titles(heatmap: bool, method: str | None = None) -> list[str]:
    """The panel titles of an overlay: ``T1W``, ``T2W`` and, with a heatmap, both again ``+`` the method's label
    (``method`` None: "Grad-CAM", the maps of :func:`spinedx.explain.gradcam`)."""
    titles = ["T1W", "T2W"]
    if heatmap:
        label = "Grad-CAM" if method is None else _method_label(method)
        titles += [f"T1W + {label}", f"T2W + {label}"]
    return titles


def overlay_image(
    patch: np.ndarray,
    heatmap: np.ndarray | None,
    *,
    title: str | None = None,
    method: str | None = None,
    scale: int = 3,
) -> Any:
    """A Pillow image: T1 s, T2 s, and (with a heatmap) both again with the heatmap on top, titled.

    Args:
        patch: one patch ``(6, H, W)``.
        heatmap: ``(H, W)`` in ``[0, 1]`` (from :func:`spinedx.explain.explain` or
            :func:`spinedx.explain.gradcam`) or None for crops only.
        title: the title line (patient, slice, probability, ...).
        method: the name of the method that made ``heatmap`` (:data:`spinedx.explain.METHODS`), shown in
            the panel titles; None: "Grad-CAM" (the maps of :func:`spinedx.explain.gradcam`).
        scale: screen pixels per patch pixel (the crops are enlarged without smoothing, the heat bilinearly,
            both drawn at that size).

    Returns:
        An RGB ``PIL.Image.Image`` (:func:`overlay_png` writes it as PNG).
    """
    from PIL import Image

    from spinedx.explain.render import blend_heat, draw_label, window

    patch = np.asarray(patch)
    if patch.ndim != 3:
        raise ValueError(f"patch must be (C, H, W), got shape {patch.shape}")
    h, w = patch.shape[-2:]
    heat_big = None
    if heatmap is not None:
        heat = np.asarray(heatmap, dtype=np.float32)
        if heat.shape != (h, w):
            raise ValueError(f"heatmap shape {heat.shape} differs from the patch's {(h, w)}")
        # bilinear with pixel centres aligned, as matplotlib drew it
        heat_big = np.asarray(Image.fromarray(heat, mode="F").resize((w * scale, h * scale), Image.Resampling.BILINEAR))
    crops = [np.kron(window(patch[channel_index(c)]), np.ones((scale, scale))) for c in ("T1 s", "T2 s")]
    panels = [blend_heat(c, None) for c in crops]
    if heat_big is not None:
        panels += [blend_heat(c, heat_big) for c in crops]
    titles = panel_titles(heat_big is not None, method)
    gap, head, top = 6, 18, (22 if title else 4)
    pw, ph = w * scale, h * scale
    canvas = Image.new("RGB", (len(panels) * (pw + gap) + gap, top + head + ph + gap), "white")
    for i, (px, name) in enumerate(zip(panels, titles, strict=True)):
        x = gap + i * (pw + gap)
        canvas.paste(Image.fromarray(px), (x, top + head))
        draw_label(canvas, (x + pw / 2, top + head - 3), name, 12, fill=(0, 0, 0), anchor="md")
        if i >= 2 and heat_big is not None and not np.any(heat_big > 0):
            draw_label(canvas, (x + pw / 2, top + head + ph - 3), "no positive evidence", 11, fill=(255, 255, 0),
                       background=(0, 0, 0), anchor="md")
    if title:
        draw_label(canvas, (canvas.width / 2, 4), title, 13, fill=(0, 0, 0), anchor="ma")
    return canvas


def overlay_png(patch: np.ndarray, heatmap: np.ndarray | None, **kwargs: Any) -> bytes:
    """PNG bytes of :func:`overlay_image` (same arguments)."""
    buf = io.BytesIO()
    overlay_image(patch, heatmap, **kwargs).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_overlay(
    patch: np.ndarray, heatmap: np.ndarray | None, path: str | Path, *, title: str | None = None,
    method: str | None = None,
) -> Path:
    """Write :func:`overlay_image` as a PNG file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(overlay_png(patch, heatmap, title=title, method=method))
    return path
