"""Saving, loading and running the fold models of a cross-validation run.

Each fold's best model is ``RUN_DIR/folds/<k>/model.pt``: a plain dict (tensors, strings,
numbers) loadable with ``torch.load(..., weights_only=True)``, so loading a run never executes
pickled code. ``spinedx predict`` and the report use :func:`load_run` and
:func:`predict_patches` (the ensemble of the fold models).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from spinedx.errors import WeightsError
from spinedx.models.net import SpineNet, build_model


def save_fold_model(model: SpineNet, path: str | Path, fold: int, **meta: Any) -> None:
    """Write a fold model as a weights-only dict (``state_dict``, ``backbone``, ``channel_names``, ``fold``, ...)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "backbone": model.backbone_name, "channel_names": list(model.channel_names),
               "fold": int(fold), **meta}
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written model


def load_fold_model(path: str | Path, device: torch.device | str = "cpu") -> SpineNet:
    """Load one ``model.pt`` (weights only) into a fresh network, in eval mode."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        backbone = payload["backbone"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model(backbone, pretrained="none")
        model.load_state_dict(payload["state_dict"])
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"not a spinedx fold model ({type(exc).__name__}: {exc}); rerun spinedx cv",
                           where=str(path)) from exc
    model.channel_names = tuple(payload.get("channel_names", model.channel_names))
    return model.to(device).eval()


@dataclass
class RunModels:
    """The fold models of a run and its resolved configuration.

    Attributes:
        run_dir: The run folder.
        config: The ``config`` section of ``config.yaml`` (backbone, threshold, aggregation, ...).
        models: Fold models in fold order, eval mode.
        folds: Fold numbers of ``models``.
        meta: The whole ``config.yaml`` (weights info, provenance, optimistic flag, ...).
    """

    run_dir: Path
    config: dict[str, Any]
    models: list[SpineNet]
    folds: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """Decision threshold on the patient probability."""
        return float(self.config.get("threshold", 0.5))

    @property
    def aggregation(self) -> str:
        """``max`` or ``mean`` over a patient's slices."""
        return str(self.config.get("aggregation", "max"))

    @property
    def backbone(self) -> str:
        """torchvision backbone name."""
        return str(self.config.get("backbone", self.models[0].backbone_name if self.models else "resnet50"))

    @property
    def optimistic(self) -> bool:
        """True when the run's early stopping used the outer folds."""
        return bool(self.meta.get("optimistic", False))

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Input channel order of the models."""
        return self.models[0].channel_names


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> RunModels:
    """Load a ``spinedx cv`` run folder: ``config.yaml`` and ``folds/<k>/model.pt`` for every fold.

    Raises:
        WeightsError: The folder has no config or no finished fold model.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise WeightsError("not a spinedx cv run folder (config.yaml missing); run spinedx cv first",
                           where=str(run_dir))
    meta = yaml.safe_load(cfg_path.read_text()) or {}
    paths = sorted((run_dir / "folds").glob("*/model.pt"), key=lambda p: int(p.parent.name))
    if not paths:
        raise WeightsError("no fold models (folds/<k>/model.pt); finish spinedx cv first", where=str(run_dir))
    models = [load_fold_model(p, device) for p in paths]
    return RunModels(run_dir, dict(meta.get("config", {})), models, [int(p.parent.name) for p in paths], meta)


def _fast_cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def predict_patches(
    models: RunModels | Sequence[nn.Module], x: np.ndarray, batch_size: int = 256, bf16: bool | None = None
) -> np.ndarray:
    """Malignancy probabilities of every model for every patch.

    Inference runs under :func:`torch.inference_mode`, channels-last, with bf16 autocast where
    the device supports it (the sigmoid of the paper's output layer is applied here).

    Args:
        models: A :class:`RunModels` or a list of networks (on one device).
        x: Patches (N, 6, 64, 64), channel order ``spinedx.preprocess.CHANNEL_NAMES``.
        batch_size: Patches per forward pass.
        bf16: Force bf16 on/off; None: where supported.

    Returns:
        Array (n_models, N) of probabilities, float32.
    """
    mods = list(models.models if isinstance(models, RunModels) else models)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"patches must be (N, C, H, W), got shape {x.shape}")
    if not mods:
        return np.zeros((0, x.shape[0]), dtype=np.float32)
    device = next(mods[0].parameters()).device
    if bf16 is None:
        bf16 = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (device.type == "cpu" and _fast_cpu_bf16())
    out = np.empty((len(mods), x.shape[0]), dtype=np.float32)
    xt = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for m_i, model in enumerate(mods):
            was_training = model.training
            model.eval()
            model.to(memory_format=torch.channels_last)
            for i in range(0, x.shape[0], batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
                    logits = model(xt[i:i + batch_size])
                out[m_i, i:i + batch_size] = torch.sigmoid(logits.float().reshape(-1)).cpu().numpy()
            model.train(was_training)
    return out
