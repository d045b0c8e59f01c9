"""Pixels of the heatmap overlays: windowing, the heat blended over the anatomy, and text, drawn with Pillow.

The one place overlay pixels are made: the PNG overlays (:func:`spinedx.explain.overlay_image`), the report's
gallery and the DICOM Secondary Captures (:mod:`spinedx.interop.sc`) all blend with :func:`blend_heat` and write
with :func:`draw_label`. Pillow draws a 4-panel overlay in a few milliseconds where a matplotlib figure took about
170 ms, which mattered for a prediction with heatmaps in two seconds. The colours are matplotlib's ``jet`` colour map
(its 256-entry table, taken once) and the text is matplotlib's DejaVu Sans, so the overlays look as before.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

#: Heat opacity where the map is 1; it fades with the square root of the heat, so cold regions keep the anatomy
#: visible and an all-zero map (nothing raises the malignant score) leaves the image untinted.
ALPHA = 0.6


@functools.cache
def _jet() -> np.ndarray:
    """matplotlib's ``jet`` colour map as a ``(256, 3)`` float table."""
    from matplotlib import colormaps

    return np.asarray(colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float64)


@functools.cache
def font(size: int) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels, as a Pillow font."""
    from pathlib import Path

    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def warm() -> None:
    """Load the colour table and the usual fonts now (a server calls this at start, not on its first request)."""
    _jet()
    for size in (11, 12, 13):
        font(size)


def window(img: np.ndarray) -> np.ndarray:
    """``img`` windowed to its 1st-99th percentile, in ``[0, 1]`` (all zero for a constant image)."""
    img = np.asarray(img, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99])
    if hi <= lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def jet(heat: np.ndarray) -> np.ndarray:
    """The ``jet`` colours ``(..., 3)`` in ``[0, 1]`` of heat values in ``[0, 1]`` (matplotlib's 256-entry table)."""
    idx = np.clip((np.asarray(heat, dtype=np.float64) * 256).astype(np.int64), 0, 255)  # as matplotlib's Colormap
    return _jet()[idx]


def blend_heat(gray: np.ndarray, heat: np.ndarray | None, alpha: float = ALPHA) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``: the windowed image ``gray`` (``[0, 1]``) with ``heat`` (``[0, 1]``, same shape) in
    the jet colours on top, opacity ``alpha * sqrt(heat)``; ``heat`` None: the image alone."""
    rgb = np.repeat(np.asarray(gray, dtype=np.float64)[..., None], 3, axis=2)
    if heat is not None:
        h = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
        if h.shape != rgb.shape[:2]:
            raise ValueError(f"heatmap shape {h.shape} differs from the image's {rgb.shape[:2]}")
        a = (alpha * np.sqrt(h))[..., None]
        rgb = (1.0 - a) * rgb + a * jet(h)
    return np.round(rgb * 255.0).astype(np.uint8)


def draw_label(img: Any, xy: tuple[float, float], text: str, size: int, *, fill: tuple[int, int, int] = (255, 255, 255),
               background: tuple[int, int, int] | None = None, anchor: str = "la", pad: int = 2) -> None:
    """Write ``text`` (lines separated by ``\\n``) on the Pillow image ``img`` at ``xy`` (``anchor`` as Pillow's: ``la``
    left-top, ``ma`` centred-top, ``md`` centred-bottom), optionally on a filled box ``pad`` pixels wider."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    f = font(size)
    if background is not None:
        x0, y0, x1, y1 = draw.multiline_textbbox(xy, text, font=f, anchor=anchor, spacing=size // 3)
        draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=background)
    draw.multiline_text(xy, text, font=f, fill=fill, anchor=anchor, spacing=size // 3)
