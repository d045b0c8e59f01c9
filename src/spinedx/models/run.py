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
from torch import nn

from spinedx.common import CHANNEL_NAMES
from spinedx.errors import WeightsError
from spinedx.fsutil import atomic_path
from spinedx.models.net import SpineNet, build_model
from spinedx.models.tta import TTAViews
from spinedx.runfolder import RunFolder, RunRecord
from spinedx.training.config import CVConfig


def save_fold_model(model: SpineNet, path: str | Path, fold: int, **meta: Any) -> None:
    """Write a fold model as a weights-only dict (``state_dict``, ``backbone``, ``channel_names``, ``fold``, ...)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "backbone": model.backbone_name, "channel_names": list(model.channel_names),
               "fold": int(fold), **meta}
    with atomic_path(path) as tmp:  # a killed run never leaves a half-written model
        torch.save(payload, tmp)


def load_fold_model(path: str | Path, device: torch.device | str = "cpu", *, fold: int | None = None,
                    backbone: str | None = None) -> SpineNet:
    """Load one ``model.pt`` (weights only) into a fresh network, in eval mode.

    Args:
        path: the file.
        device: where to put the model.
        fold: when given, the fold the file must say it belongs to.
        backbone: when given, the backbone the file must hold.

    Raises:
        WeightsError: not a spinedx fold model (damaged, truncated, another program's file), or not the fold or
            backbone expected; the message names the file and says how to retrain it.
    """
    path = Path(path)
    redo = (f"delete the folder {path.parent} and rerun spinedx cv in the run folder to train that fold again"
            if path.parent.parent.name == "folds" else "rerun spinedx cv")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("backbone"), str):
            raise ValueError("no backbone name in the file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model(payload["backbone"], pretrained="none")
        model.load_state_dict(payload["state_dict"])
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file; all mean the same
        why = " ".join(str(exc).split())[:200]
        raise WeightsError(f"not a readable spinedx fold model ({type(exc).__name__}: {why}); {redo}",
                           where=str(path)) from None
    if fold is not None and payload.get("fold") != fold:
        raise WeightsError(f"holds fold {payload.get('fold')!r}, not fold {fold}; {redo}", where=str(path))
    if backbone is not None and payload["backbone"] != backbone:
        raise WeightsError(f"holds a {payload['backbone']} model, the run's backbone is {backbone}; {redo}",
                           where=str(path))
    names = tuple(payload.get("channel_names", ()))
    if names != tuple(CHANNEL_NAMES):
        raise WeightsError(f"expects channels {list(names)}, spinedx makes {list(CHANNEL_NAMES)}; {redo}",
                           where=str(path))
    model.channel_names = names
    return model.to(device).eval()


@dataclass
class RunModels:
    """The fold models of a run and its record.

    Attributes:
        run_dir: The run folder.
        record: ``config.yaml`` (:class:`spinedx.runfolder.RunRecord`): configuration, what the run was
            trained on, weights, provenance.
        models: Fold models in fold order, eval mode.
        folds: Fold numbers of ``models``.
        missing_folds: Folds of the run without a model (only when loaded with ``allow_missing_folds``).
    """

    run_dir: Path
    record: RunRecord
    models: list[SpineNet]
    folds: list[int]
    missing_folds: list[int] = field(default_factory=list)

    @property
    def config(self) -> CVConfig:
        """The run's configuration."""
        return self.record.config

    @property
    def threshold(self) -> float:
        """Decision threshold on the patient probability."""
        return self.record.threshold

    @property
    def aggregation(self) -> str:
        """``max`` or ``mean`` over a patient's slices."""
        return self.record.aggregation

    @property
    def backbone(self) -> str:
        """torchvision backbone name."""
        return self.record.config.backbone

    @property
    def optimistic(self) -> bool:
        """True when the run's early stopping used the outer folds."""
        return self.record.optimistic

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Input channel order of the models."""
        return self.record.channel_names

    @property
    def patch_size(self) -> int:
        """Side of the patches the models were trained on."""
        return self.record.patches.patch_size

    @property
    def tta(self) -> TTAViews:
        """The test-time views the run's probabilities average over (``config.tta``)."""
        return TTAViews.from_config(self.record.config)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", *,
             allow_missing_folds: bool = False) -> RunModels:
    """Load a ``spinedx cv`` run folder (or a model bundle): its record and ``folds/<k>/model.pt`` for every fold.

    Args:
        run_dir: The run folder.
        device: Where to put the models.
        allow_missing_folds: Use the finished folds when some have no model (the caller must record
            :attr:`RunModels.missing_folds`); by default a run with a missing fold model is refused.

    Raises:
        SpinedxError: not a run folder, a damaged ``config.yaml``, missing fold models (unless allowed),
            unexpected entries in ``folds/`` (``1.bak``), or a damaged ``model.pt``.
    """
    from spinedx.interop.bundle import is_bundle, load_bundle

    if is_bundle(run_dir):  # a model bundle (spinedx export) is accepted wherever a run is, after its checksums
        return load_bundle(run_dir, device)
    rf = RunFolder(run_dir)
    record = rf.read_record()
    found = rf.fold_models(allow_missing=allow_missing_folds)
    models = [load_fold_model(p, device, fold=k, backbone=record.config.backbone) for k, p in found.paths.items()]
    return RunModels(rf.path, record, models, list(found.paths), list(found.missing))


def _fast_cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def predict_patches(
    models: RunModels | Sequence[nn.Module], x: np.ndarray, batch_size: int = 256, bf16: bool | None = None,
    views: TTAViews | None = None,
) -> np.ndarray:
    """Malignancy probabilities of every model for every patch.

    Inference runs under :func:`torch.inference_mode`, channels-last, with bf16 autocast where
    the device supports it (the sigmoid of the paper's output layer is applied here).

    Args:
        models: A :class:`RunModels` or a list of networks (on one device).
        x: Patches (N, 6, P, P), channel order :data:`spinedx.common.CHANNEL_NAMES`.
        batch_size: Patches per forward pass.
        bf16: Force bf16 on/off; None: where supported.
        views: Test-time views to average each probability over (:class:`~spinedx.models.tta.TTAViews`); None:
            a :class:`RunModels`' own (:attr:`RunModels.tta`), the patch alone for a list of networks.

    Returns:
        Array (n_models, N) of probabilities, float32.
    """
    if views is None:
        views = models.tta if isinstance(models, RunModels) else TTAViews("none")
    mods = list(models.models if isinstance(models, RunModels) else models)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"patches must be (N, C, H, W), got shape {x.shape}")
    if views.params and len(x):
        return views.reduce(predict_patches(mods, views.expand(x), batch_size, bf16, TTAViews("none")))
    if not mods:
        return np.zeros((0, x.shape[0]), dtype=np.float32)
    device = next(mods[0].parameters()).device
    if bf16 is None:
        bf16 = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (device.type == "cpu" and _fast_cpu_bf16())
    out = np.empty((len(mods), x.shape[0]), dtype=np.float32)
    xt = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
    for model in mods:
        # outside inference mode: converted parameters made there would be inference tensors, which no later
        # gradient (an explanation, fine-tuning) can use
        model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for m_i, model in enumerate(mods):
            was_training = model.training
            model.eval()
            for i in range(0, x.shape[0], batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
                    logits = model(xt[i:i + batch_size])
                out[m_i, i:i + batch_size] = torch.sigmoid(logits.float().reshape(-1)).cpu().numpy()
            model.train(was_training)
    return out
