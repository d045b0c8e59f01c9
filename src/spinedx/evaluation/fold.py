"""One fold of a cross-validation: :func:`train_fold`, a function of ``(run folder, fold, repeat)`` alone.

It reads the run's configuration and splits from the run folder and the patches it records (checking their
sha256), trains with the fold's seeds (derived from ``(seed, fold)`` only, :func:`repeat_seed` for a repeat),
predicts the fold's validation patients with the run's test-time views (and its inner-validation patients, held out
of its training: the honest calibration data of :mod:`spinedx.evaluation.decisioncv`), and hands everything to the
run folder's one writer (:meth:`spinedx.runfolder.RunFolder.write_fold`), which writes the fold folder complete or
not at all. Any process can run it: this one (:class:`~spinedx.evaluation.executors.InProcessExecutor`), a worker
process or a Ray task (:mod:`spinedx.evaluation.executors`); given the same device type, the bytes are the same.

Only the standard library, numpy and light spinedx modules are imported at module level (torch inside).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from spinedx.runfolder import PatchSet, RunFolder, RunFolderError, RunRecord
from spinedx.training.config import CVConfig

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from spinedx.evaluation.progress import CVProgress
    from spinedx.models.net import SpineNet
    from spinedx.training.engine import Trainer

__all__ = ["curves_png", "make_trainer", "repeat_seed", "resolve_runtime", "train_fold"]


def repeat_seed(seed: int, repeat: int | None) -> int:
    """The master seed of repeat ``r`` of a repeated cross-validation: ``seed + r`` (splits and initialisation).

    Repeat ``r`` of a run with ``--seed s`` is therefore the single run with ``--seed s+r``, fold for fold.
    """
    return int(seed) + int(repeat or 0)


def resolve_runtime(config: CVConfig) -> dict[str, Any]:
    """Device, bf16 and compile for this process, and the folds' thread count.

    The process's own torch thread count is left alone: each fold sets the configured count for itself
    (:func:`spinedx.training.engine.fold_numerics`) and restores the caller's after.
    """
    import torch

    from spinedx.training.engine import resolve_device, use_bf16

    device = resolve_device(config.device)
    compile_on = config.compile == "on" or (config.compile == "auto" and config.profile == "paper")
    return {"device": device, "bf16": use_bf16(config.bf16, device), "compile": compile_on,
            "threads": config.threads if config.threads is not None else torch.get_num_threads()}


def _builder(config: CVConfig) -> Callable[[], torch.nn.Module]:
    from spinedx.models.net import build_model

    def build() -> torch.nn.Module:
        return build_model(config.backbone, config.pretrained, config.weights, dropout=config.dropout)[0]

    return build


def make_trainer(record: RunRecord) -> Trainer:
    """A trainer for ``record``'s configuration on this process's device (a worker without a driver's trainer).

    Raises:
        RunFolderError: this process resolves the initial weights to another file than the run recorded.
    """
    from spinedx.models.net import build_model
    from spinedx.training.engine import Trainer

    config = record.config
    runtime = resolve_runtime(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, weights = build_model(config.backbone, config.pretrained, config.weights, dropout=config.dropout)
    if weights.sha256 != record.weights.sha256 or weights.pretrained != record.weights.pretrained:
        raise RunFolderError(f"this process resolves the initial weights to {weights.source} "
                             f"({weights.path or 'no file'}), the run was started with {record.weights.source} "
                             f"({record.weights.path or 'no file'}); give every worker the same weights file",
                             where=str(record.weights.path or config.weights or "--weights"))
    return Trainer(model, runtime["device"], bf16=runtime["bf16"], channels_last=config.channels_last,
                   compile=runtime["compile"])


def curves_png(history: pd.DataFrame, title: str, kept_epoch: int, restored: bool = True) -> bytes:
    """Training and validation loss per epoch, the epoch whose weights the fold kept marked, as PNG bytes
    (``curves.png``; matplotlib's object API: no global backend switch)."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=100)
    ax = fig.subplots()
    ax.plot(history["epoch"], history["train_loss"], marker="o", ms=3, label="train (augmented)")
    ax.plot(history["epoch"], history["val_loss"], marker="o", ms=3, label="validation")
    ax.axvline(kept_epoch, color="grey", ls=":", label="best (restored)" if restored else "last (kept, no early stop)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def train_fold(
    run_dir: str | Path,
    fold: int,
    *,
    repeat: int | None = None,
    patches: PatchSet | None = None,
    trainer: Trainer | None = None,
    progress: CVProgress | None = None,
) -> dict[str, Any]:
    """Train one fold of a run and write its folder ``folds/<k>/`` (complete, or not at all).

    Everything comes from the run folder (``config.yaml``, ``splits.json``) and the patches it records, so
    the function can run in any process (a pool, a Ray worker) given only ``(run_dir, fold, repeat)``; the
    optional ``patches`` and ``trainer`` let one process reuse what it already loaded (and compiled).

    Args:
        run_dir: a run folder prepared by :func:`spinedx.evaluation.cv.run_cv` (``config.yaml`` and ``splits.json``
            written).
        fold: the outer fold to train.
        repeat: the repetition of a repeated cross-validation (None: the single cross-validation).
        patches: the run's patches, already loaded (checked against the run's sha256).
        trainer: a trainer to reuse (its model is re-initialised from the fold's seed).
        progress: where the fold reports its epochs and batches (the driver reports the finished fold).

    Returns:
        The fold's ``done.json`` record (the existing one, without training, when the fold is finished).

    Raises:
        SpinedxError: the run folder or the patches are not what the run records.
    """
    import pandas as pd
    import torch

    from spinedx.inference import TorchEngine
    from spinedx.models.run import save_fold_model
    from spinedx.models.tta import TTAViews
    from spinedx.training.engine import fold_numerics, fold_seed, initial_state, numerics_record, recalibrate_batchnorm

    repeat = repeat or None  # repeat 0 is the run folder itself
    rf = RunFolder(run_dir)
    record = rf.read_record()
    config = record.config
    if rf.fold_dir(fold, repeat).exists():
        rf.scan_folds(config.folds, repeat)  # refuses a damaged fold folder
        return rf.read_done(fold, repeat)
    splits = rf.read_splits(repeat)
    patches = record.checked_patches(patches)
    trainer = trainer or make_trainer(record)
    split = splits.split(fold)
    pid = patches.patient_id
    val_mask = np.isin(pid, split.val)
    es_mask = val_mask if config.optimistic else np.isin(pid, split.inner_val)
    train_mask = ~val_mask & ~es_mask
    seed_k = fold_seed(repeat_seed(config.seed, repeat), fold)
    t0 = time.perf_counter()
    n_views = int(np.where(patches.label[train_mask] == 1, config.views_malignant, config.views_benign).sum())
    if progress is not None:
        progress.fold_start(repeat, fold, config.epochs, n_views // config.batch_size + 1)
    tta = TTAViews.from_config(config)  # the run's test-time views (the cpu profile's affine8)
    # The fold's computation depends on the configuration alone, whichever executor runs it: the configured
    # intra-op threads and fixed backend flags for training *and* the out-of-fold prediction (restored after).
    with fold_numerics(config.threads):
        trainer.reset(initial_state(_builder(config), seed_k))
        torch.manual_seed(seed_k)
        fit = trainer.fit(
            patches.x[train_mask], patches.label[train_mask], patches.x[es_mask], patches.label[es_mask],
            seed=seed_k, epochs=config.epochs, patience=config.patience, views_benign=config.views_benign,
            views_malignant=config.views_malignant, batch_size=config.batch_size, lr=config.lr,
            betas=config.betas, weight_decay=config.weight_decay, augment=config.augment,
            lr_schedule=config.lr_schedule, restore_best=config.restores_best_epoch,
            on_batch=progress.batch if progress is not None else None,
            on_epoch=progress.epoch if progress is not None else None,
        )
        model = cast("SpineNet", trainer.model)
        if config.recalibrate_bn:
            recalibrate_batchnorm(model, patches.x[train_mask])
        # the out-of-fold prediction: the fold's validation patches, with the run's test-time views
        # out of fold: the engine, fp32 precision and views predict, the workstation and the bundle use (whatever
        # precision training used), so the reported performance is the deployed model's
        oof_engine = TorchEngine([model], folds=[fold], views=tta)
        prob = oof_engine.predict(patches.x[val_mask])[0]
        # the honest calibration data of the run's calibrator and conformal thresholds: this model's probabilities on
        # its inner-validation patients, held out of its training (the optimistic protocol trains on them: none)
        inner_mask = np.isin(pid, split.inner_val) & ~val_mask if not config.optimistic else np.zeros_like(val_mask)
        inner_prob = oof_engine.predict(patches.x[inner_mask])[0] if inner_mask.any() else None
        numerics = numerics_record(trainer.device, trainer.bf16, fit.compiled)
    preds = pd.DataFrame({"patient_id": pid[val_mask], "slice_index": patches.slice_index[val_mask], "fold": fold,
                          "label": patches.label[val_mask], "probability": prob})
    inner = None if inner_prob is None else pd.DataFrame({
        "patient_id": pid[inner_mask], "slice_index": patches.slice_index[inner_mask], "fold": fold,
        "label": patches.label[inner_mask], "probability": inner_prob})
    hist = pd.DataFrame(fit.history)
    done = {
        "fold": fold, "repeat": repeat, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
        "epochs_run": len(fit.history), "seconds": time.perf_counter() - t0,
        "n_train_slices": int(train_mask.sum()), "n_early_stop_slices": int(es_mask.sum()),
        "n_val_slices": int(val_mask.sum()), "n_inner_predicted_slices": int(inner_mask.sum()),
        "compiled": fit.compiled,
        "batchnorm_recalibrated": bool(config.recalibrate_bn),
        "test_time_views": tta.n_views, "seed": seed_k, "notes": fit.notes,
        "patches_sha256": patches.sha256, "numerics": numerics, "inference": oof_engine.record(),
    }
    kept = (f"best epoch {fit.best_epoch}" if config.restores_best_epoch
            else f"last epoch {fit.best_epoch} kept (no early stopping)")
    if config.recalibrate_bn:
        kept += "\nthen BatchNorm statistics re-estimated on the training patches"
    png = curves_png(hist, f"fold {fold}: {kept}" + (" (OPTIMISTIC: outer early stop)" if config.optimistic else ""),
                     fit.best_epoch, restored=config.restores_best_epoch)

    def save_model(path: Path) -> None:
        save_fold_model(model, path, fold, best_epoch=fit.best_epoch, best_val_loss=float(fit.best_val_loss),
                        seed=seed_k, early_stop_on=config.early_stop_on, patch_size=patches.patch_size)

    return rf.write_fold(fold, repeat, history=hist, curves_png=png, save_model=save_model, predictions=preds,
                         done=done, inner_predictions=inner)
