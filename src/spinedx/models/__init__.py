"""The paper's network (1x1 conv 6->3, ResNet50, one logit), its weights and the fold models of a run.

Prediction with these models goes through :mod:`spinedx.inference` (the one inference path: a run folder or a
bundle, the torch or the ONNX Runtime engine).
"""

from spinedx.models.net import CHANNEL_NAMES, SpineNet, WeightsInfo, build_model, find_imagenet_weights
from spinedx.models.run import RunModels, fingerprint_lines, load_fold_model, load_run, save_fold_model

__all__ = [
    "CHANNEL_NAMES", "RunModels", "SpineNet", "WeightsInfo", "build_model", "find_imagenet_weights",
    "fingerprint_lines", "load_fold_model", "load_run", "save_fold_model",
]
