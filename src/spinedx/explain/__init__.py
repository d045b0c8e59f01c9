"""Explanations: Grad-CAM heatmaps and their overlays on the T1W/T2W lesion crops."""

from spinedx.explain.gradcam import MalignantLogitTarget, gradcam
from spinedx.explain.overlay import channel_index, figure_png, overlay_figure, save_overlay

__all__ = ["MalignantLogitTarget", "channel_index", "figure_png", "gradcam", "overlay_figure", "save_overlay"]
