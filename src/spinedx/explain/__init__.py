"""Explanations: heatmaps of the malignant logit (:func:`explain`, several methods) and their overlays.

``explain(models, x, method=DEFAULT_METHOD)`` is the entry point; :func:`gradcam` is the original
Grad-CAM of the last residual block. docs/explanations.md compares the methods on synthetic lesions
with known masks and says why :data:`DEFAULT_METHOD` is the default.
"""

from spinedx.explain.gradcam import MalignantLogitTarget, gradcam
from spinedx.explain.methods import (
    DEFAULT_METHOD,
    METHODS,
    Method,
    explain,
    explain_many,
    explanation_record,
    method_caption,
    method_info,
)
from spinedx.explain.overlay import channel_index, overlay_image, overlay_png, panel_titles, save_overlay

__all__ = [
    "DEFAULT_METHOD", "METHODS", "MalignantLogitTarget", "Method", "channel_index", "explain", "explain_many",
    "explanation_record", "method_caption",
    "gradcam", "method_info", "overlay_image", "overlay_png", "panel_titles", "save_overlay",
]
