"""Heatmap overlays on the lesion slice's T1W and T2W crops (the paper's Figs. 3-6).

Patches follow the channel order of ``spinedx.preprocess.CHANNEL_NAMES``
(``T1 s-1, T1 s, T1 s+1, T2 s-1, T2 s, T2 s+1``); the overlays use the centre slice of each
sequence, ``T1 s`` and ``T2 s``.
"""

from __future__ import annotations

import io
from pathlib import Path

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


def _display(img: np.ndarray) -> np.ndarray:
    """Window a z-scored crop to its 1st-99th percentile for display."""
    lo, hi = np.percentile(img, [1, 99])
    if hi <= lo:
        return np.zeros_like(img, dtype=float)
    return np.clip((img - lo) / (hi - lo), 0, 1)


def overlay_figure(
    patch: np.ndarray,
    heatmap: np.ndarray | None,
    *,
    title: str | None = None,
    alpha: float = 0.6,
    panel_inches: float = 1.6,
    method: str | None = None,
):
    """A matplotlib figure: T1 s, T2 s, and (with a heatmap) both again with the heatmap on top.

    Args:
        patch: one patch ``(6, H, W)``.
        heatmap: ``(H, W)`` in ``[0, 1]`` (from :func:`spinedx.explain.explain` or
            :func:`spinedx.explain.gradcam`) or None for crops only.
        title: figure title (patient, slice, probability, ...).
        alpha: heatmap opacity where the map is 1 (it fades with the square root of the heat).
        panel_inches: width of one panel.
        method: the name of the method that made ``heatmap`` (:data:`spinedx.explain.METHODS`), shown in
            the panel titles; None: "Grad-CAM" (the maps of :func:`spinedx.explain.gradcam`).

    Returns:
        A ``matplotlib.figure.Figure`` (Agg backend; close it after saving).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    patch = np.asarray(patch)
    if patch.ndim != 3:
        raise ValueError(f"patch must be (C, H, W), got shape {patch.shape}")
    t1 = _display(patch[channel_index("T1 s")])
    t2 = _display(patch[channel_index("T2 s")])
    panels: list[tuple[str, np.ndarray, np.ndarray | None]] = [("T1W", t1, None), ("T2W", t2, None)]
    if heatmap is not None:
        heat = np.asarray(heatmap, dtype=float)
        if heat.shape != t1.shape:
            raise ValueError(f"heatmap shape {heat.shape} differs from the patch's {t1.shape}")
        label = "Grad-CAM" if method is None else _method_label(method)
        panels += [(f"T1W + {label}", t1, heat), (f"T2W + {label}", t2, heat)]
    fig = Figure(figsize=(panel_inches * len(panels), panel_inches + (0.5 if title else 0.3)), dpi=100)
    axes = fig.subplots(1, len(panels))
    for ax, (name, img, hm) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if hm is not None:
            # Opacity follows the heat, so cold regions keep the anatomy visible and an all-zero map
            # (nothing raises the malignant score) leaves the crop untinted instead of uniformly blue.
            rgba = colormaps["jet"](np.clip(hm, 0, 1))
            rgba[..., 3] = alpha * np.clip(hm, 0, 1) ** 0.5
            ax.imshow(rgba, interpolation="bilinear")
            if not np.any(hm > 0):
                ax.text(0.5, 0.04, "no positive evidence", transform=ax.transAxes, ha="center", va="bottom",
                        fontsize=6, color="yellow")
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)  # the layout is tight_layout's (overlay_figure): no second pass
    return buf.getvalue()


def save_overlay(
    patch: np.ndarray, heatmap: np.ndarray | None, path: str | Path, *, title: str | None = None,
    method: str | None = None,
) -> Path:
    """Write :func:`overlay_figure` as a PNG file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(overlay_figure(patch, heatmap, title=title, method=method)))
    return path
