"""The paper's network (1x1 conv 6->3, ResNet50, one logit), its weights and the fold models of a run."""

from spinedx.models.ensemble import Ensemble
from spinedx.models.net import CHANNEL_NAMES, SpineNet, WeightsInfo, build_model, find_imagenet_weights
from spinedx.models.run import RunModels, load_fold_model, load_run, predict_patches, save_fold_model

__all__ = [
    "CHANNEL_NAMES", "Ensemble", "RunModels", "SpineNet", "WeightsInfo", "build_model", "find_imagenet_weights",
    "load_fold_model", "load_run", "predict_patches", "save_fold_model",
]
