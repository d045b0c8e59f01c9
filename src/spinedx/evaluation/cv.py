"""Tenfold cross-validation of the paper's model, by patient, with resumable folds.

Yeh et al. 2022, "Evaluation using cross-validation": ResNet50 "was evaluated using tenfold
cross-validation, and each case had only one chance to be included in the validation group";
slice probabilities are aggregated per patient by their maximum and thresholded at 0.5.

The paper stops early "based on the lowest validation loss"; if that validation set is the
held-out fold, model selection has seen the patients being scored and the results are
optimistic. By default (``early_stop_on="inner"``) early stopping uses inner validation
patients drawn from the training folds, so every out-of-fold prediction is untouched by its
own patient; ``early_stop_on="outer"`` reproduces the paper literally and every output says the
results are optimistic.

The work is split so that folds can be scheduled anywhere: :func:`run_cv` (the driver) checks the
inputs and an existing run folder, writes ``config.yaml`` and ``splits.json``, calls
:func:`train_fold` for every unfinished fold and gathers their predictions (:func:`finish_run`).
:func:`train_fold` is a function of ``(run folder, fold, repeat)`` alone: it reads the run's
configuration, splits and patches (checking their sha256), trains, and writes its own fold folder
atomically, so a process pool or a Ray worker can run it. The run folder's files are read and written
by :mod:`spinedx.runfolder` only.

Resume: a fold folder exists only when the fold finished (it is written into a temporary sibling
and renamed); each fold's seeds derive from ``(seed, fold)`` only, so a resumed run gives the same
results as an uninterrupted one (same device, threads and settings).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np

from spinedx.common import SYNTHETIC_BANNER, json_clean
from spinedx.errors import SpinedxError
from spinedx.evaluation.aggregate import aggregate_patients
from spinedx.evaluation.metrics import classification_report, patient_bootstrap_report, roc_auc
from spinedx.evaluation.splits import check_split_sizes, make_splits, patient_labels
from spinedx.fsutil import remove_stale_tmp
from spinedx.runfolder import (
    PatchSet,
    RunFolder,
    RunFolderError,
    RunRecord,
    Splits,
    WeightsRecord,
    load_patches,
)
from spinedx.training.config import OPTIMISTIC_WARNING, CVConfig

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from spinedx.evaluation.executors import RayOptions
    from spinedx.models.net import SpineNet
    from spinedx.training.engine import Trainer

log = logging.getLogger(__name__)

__all__ = ["CVConfig", "finish_repeats", "finish_run", "load_patches", "repeat_seed", "run_cv", "summary_lines",
           "train_fold"]


def _save_curves(history: pd.DataFrame, path: Path, title: str, kept_epoch: int, restored: bool = True) -> None:
    """Training and validation loss per epoch, the epoch whose weights the fold kept marked (matplotlib's object
    API: no global backend switch)."""
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
    fig.savefig(path, format="png")


def _resolve_runtime(config: CVConfig) -> dict[str, Any]:
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


def _make_trainer(record: RunRecord) -> Trainer:
    """A trainer for ``record``'s configuration on this process's device (a worker without a driver's trainer)."""
    from spinedx.models.net import build_model
    from spinedx.training.engine import Trainer

    config = record.config
    runtime = _resolve_runtime(config)
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


def _run_patches(record: RunRecord, patches: PatchSet | None) -> PatchSet:
    """The run's patches (loaded when not given), refused when they changed since the run started."""
    if patches is None:
        patches = load_patches(record.patches.path)
    if patches.sha256 != record.patches.sha256:
        raise RunFolderError(f"the patches changed since this run started (sha256 {patches.sha256[:12]}... now, "
                             f"{record.patches.sha256[:12]}... recorded); rerun spinedx cv into a new folder",
                             where=str(patches.path))
    return patches


def train_fold(
    run_dir: str | Path,
    fold: int,
    *,
    repeat: int | None = None,
    patches: PatchSet | None = None,
    trainer: Trainer | None = None,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """Train one fold of a run and write its folder ``folds/<k>/`` (complete, or not at all).

    Everything comes from the run folder (``config.yaml``, ``splits.json``) and the patches it records, so
    the function can run in any process (a pool, a Ray worker) given only ``(run_dir, fold, repeat)``; the
    optional ``patches`` and ``trainer`` let one process reuse what it already loaded (and compiled).

    Args:
        run_dir: a run folder prepared by :func:`run_cv` (``config.yaml`` and ``splits.json`` written).
        fold: the outer fold to train.
        repeat: the repetition of a repeated cross-validation (None: the single cross-validation).
        patches: the run's patches, already loaded (checked against the run's sha256).
        trainer: a trainer to reuse (its model is re-initialised from the fold's seed).
        progress: progress display.

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
    from spinedx.provenance import sha256_file
    from spinedx.training.engine import fold_numerics, fold_seed, initial_state, numerics_record, recalibrate_batchnorm

    repeat = repeat or None  # repeat 0 is the run folder itself
    rf = RunFolder(run_dir)
    record = rf.read_record()
    config = record.config
    if rf.fold_dir(fold, repeat).exists():
        rf.scan_folds(config.folds, repeat)  # refuses a damaged fold folder
        return rf.read_done(fold, repeat)
    splits = rf.read_splits(repeat)
    patches = _run_patches(record, patches)
    trainer = trainer or _make_trainer(record)
    split = splits.split(fold)
    pid = patches.patient_id
    val_mask = np.isin(pid, split.val)
    es_mask = val_mask if config.optimistic else np.isin(pid, split.inner_val)
    train_mask = ~val_mask & ~es_mask
    seed_k = fold_seed(repeat_seed(config.seed, repeat), fold)
    t0 = time.perf_counter()
    n_views = int(np.where(patches.label[train_mask] == 1, config.views_malignant, config.views_benign).sum())
    if progress is not None:
        progress.fold_start(fold, config.epochs, n_views // config.batch_size + 1)
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
        # out of fold: the engine, fp32 precision and views predict, the workstation and the bundle use (whatever
        # precision training used), so the reported performance is the deployed model's
        oof_engine = TorchEngine([model], folds=[fold], views=tta)
        prob = oof_engine.predict(patches.x[val_mask])[0]
        numerics = numerics_record(trainer.device, trainer.bf16, fit.compiled)
    preds = pd.DataFrame({"patient_id": pid[val_mask], "slice_index": patches.slice_index[val_mask], "fold": fold,
                          "label": patches.label[val_mask], "probability": prob})
    hist = pd.DataFrame(fit.history)
    done = json_clean({
        "fold": fold, "repeat": repeat, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
        "epochs_run": len(fit.history), "seconds": time.perf_counter() - t0,
        "n_train_slices": int(train_mask.sum()), "n_early_stop_slices": int(es_mask.sum()),
        "n_val_slices": int(val_mask.sum()), "compiled": fit.compiled,
        "batchnorm_recalibrated": bool(config.recalibrate_bn),
        "test_time_views": tta.n_views, "seed": seed_k, "notes": fit.notes,
        "patches_sha256": patches.sha256, "numerics": numerics, "inference": oof_engine.record(),
    })
    with rf.fold_writer(fold, repeat) as tmp:
        hist.to_csv(tmp / "history.csv", index=False)
        kept = (f"best epoch {fit.best_epoch}" if config.restores_best_epoch
                else f"last epoch {fit.best_epoch} kept (no early stopping)")
        if config.recalibrate_bn:
            kept += "\nthen BatchNorm statistics re-estimated on the training patches"
        _save_curves(hist, tmp / "curves.png", f"fold {fold}: {kept}"
                     + (" (OPTIMISTIC: outer early stop)" if config.optimistic else ""),
                     fit.best_epoch, restored=config.restores_best_epoch)
        save_fold_model(model, tmp / "model.pt", fold, best_epoch=fit.best_epoch,
                        best_val_loss=float(fit.best_val_loss), seed=seed_k, early_stop_on=config.early_stop_on,
                        patch_size=patches.patch_size)
        preds.to_csv(tmp / "predictions.csv", index=False)
        # the model's fingerprint, recorded when it was made: every reader compares the file with it
        done["model_sha256"] = sha256_file(tmp / "model.pt")
        (tmp / "done.json").write_text(json.dumps(done, indent=1, allow_nan=False) + "\n")
    if progress is not None:
        progress.fold_done(fold, fit.best_epoch, fit.best_val_loss)
    return done


def repeat_seed(seed: int, repeat: int | None) -> int:
    """The master seed of repeat ``r`` of a repeated cross-validation: ``seed + r`` (splits and initialisation).

    Repeat ``r`` of a run with ``--seed s`` is therefore the single run with ``--seed s+r``, fold for fold.
    """
    return int(seed) + int(repeat or 0)


def _prepare_repeats(rf: RunFolder, config: CVConfig, labels: dict[str, int], repeats: int) -> list[Splits]:
    """Check or write ``repeats.json`` and the splits of repeats 1 .. N-1 (repeat 0's are the run's)."""
    import dataclasses

    plan = rf.read_repeats()
    seeds = [repeat_seed(config.seed, r) for r in range(repeats)]
    have = 1 if plan is None else int(plan["repeats"])
    if have != repeats and (plan is not None or repeats < have):
        raise RunFolderError(f"this run folder holds a cross-validation repeated {have} time(s); rerun with "
                             f"--repeats {have} to resume it, or choose a new --out folder", where=str(rf.path))
    if plan is not None and plan["seeds"] != seeds:
        raise RunFolderError(f"repeats.json records seeds {plan['seeds']}, this run would use {seeds}; rerun with the "
                             "same --seed, or choose a new --out folder", where=str(rf.repeats_doc_path))
    out: list[Splits] = []
    for r in range(1, repeats):
        conf_r = dataclasses.replace(config, seed=seeds[r])
        if rf.splits_path(r).exists():
            split_r = rf.read_splits(r)
            problems = split_r.problems_with(conf_r, list(labels))
            if problems:
                raise RunFolderError(f"repeat {r} was made with other settings ({'; '.join(problems)}); choose a new "
                                     "--out folder", where=str(rf.splits_path(r)))
        else:
            split_r = rf.write_splits(make_splits(labels, config.folds, seeds[r], config.inner_val_fraction), r)
        out.append(split_r)
    if repeats > 1 and plan is None:
        rf.write_repeats(repeats, seeds)  # last: a folder with repeats.json has all its repeats' splits
    return out


def _prepare(rf: RunFolder, record: RunRecord, labels: dict[str, int], overwrite: bool) -> Splits:
    """Check an existing run folder against the new run before anything is written; write config and splits.

    The seed, folds, inner split, patches and every other setting that shapes results must match what the
    folder holds, whether or not a fold finished. ``overwrite`` starts over, but only while no fold finished.
    """
    config = record.config
    problems: list[str] = []
    finished: list[int] = []
    if rf.is_run():
        old = rf.read_record()
        finished = rf.scan_folds(old.config.folds).complete
        problems = old.resume_problems(record)
        if old.config.threads is None and finished and not problems:
            log.warning("%s was written before the per-fold thread count was recorded (threads: null): its finished "
                        "folds used their process's own count; the folds trained now use %s thread(s), so the "
                        "out-of-fold probabilities may differ in the last digits from one uninterrupted run",
                        rf.config_path, config.threads)
    if rf.splits_path().exists():
        if not rf.is_run():
            problems.append("splits.json without config.yaml")
        else:
            problems += rf.read_splits().problems_with(config, list(labels))
    elif rf.folds_dir().exists() and not rf.is_run():
        problems.append("folds/ without config.yaml")
    if overwrite and finished:
        raise RunFolderError(f"{len(finished)} fold(s) already finished here; --overwrite only starts over before any "
                             "fold finished: delete the folder or choose a new --out", where=str(rf.path))
    if problems and not overwrite:
        raise RunFolderError(f"this run folder was made with other settings ({'; '.join(problems)}); rerun with the "
                             "same options to resume" + (", or pass --overwrite to start over (no fold finished yet)"
                                                         if not finished else "")
                             + ", or choose a new --out folder", where=str(rf.path))
    if overwrite:
        rf.clear()
    rf.write_record(record)
    if rf.splits_path().exists():
        return rf.read_splits()
    return rf.write_splits(make_splits(labels, config.folds, config.seed, config.inner_val_fraction))


def run_cv(
    patches_dir: str | Path,
    run_dir: str | Path,
    config: CVConfig | None = None,
    progress: bool = True,
    on_fold_done: Callable[[int], None] | None = None,
    *,
    overwrite: bool = False,
    executor: str = "local",
    ray_options: RayOptions | None = None,
    repeats: int = 1,
    jobs: int = 1,
) -> dict[str, Any]:
    """Cross-validate the paper's model on ``patches.npz`` and write the run folder.

    With ``repeats`` N > 1 the whole k-fold cross-validation is repeated N times with the master seeds
    ``seed, seed+1, ..., seed+N-1`` (:func:`repeat_seed`: new patient splits and new initial weights): repeat 0
    is the run folder itself, repeat r >= 1 lives in ``repeats/<r>/``; every repeat resumes fold by fold, and
    ``metrics.json`` adds the spread across repeats (:func:`repeat_summary`).

    Args:
        patches_dir: Folder with ``patches.npz`` (from ``spinedx extract``) or the file itself.
        run_dir: Output run folder; an existing one is resumed (finished folds skipped) when it was made
            with the same settings and patches.
        config: The run's configuration (default: the ``paper`` profile).
        progress: Show rich progress bars; False logs one line per epoch instead.
        on_fold_done: Called with the fold number after each fold is saved (monitoring, tests).
        overwrite: Start over in a run folder made with other settings, provided no fold finished there.
        executor: ``local`` (folds one after the other in this process) or ``ray`` (each fold a Ray task,
            :mod:`spinedx.evaluation.executors`).
        ray_options: Ray address and per-fold resources (``executor="ray"``).
        repeats: Repetitions of the whole cross-validation (1: the single cross-validation, as the paper).
        jobs: With the local executor, folds trained at once in worker processes on this machine
            (:func:`spinedx.evaluation.executors.run_folds_processes`; one torch thread each unless ``threads`` is
            set); 1 trains them one after the other in this process.

    Returns:
        The metrics written to ``metrics.json`` (repeat 0's, with a ``repeats`` section when N > 1).

    Raises:
        SpinedxError: Bad patches (unreadable, NaN, wrong shapes), impossible folds, a run folder made with
            other settings or patches, or missing ImageNet weights (:class:`spinedx.errors.WeightsError`).
    """
    import torch

    from spinedx.models.net import build_model
    from spinedx.provenance import provenance
    from spinedx.training.engine import Trainer, fold_seed

    config = config or CVConfig.from_profile("paper")
    config.validate()
    if not isinstance(repeats, int) or repeats < 1:
        raise SpinedxError(f"--repeats must be a whole number >= 1 (got {repeats})", where="--repeats")
    if executor not in ("local", "ray"):
        raise SpinedxError(f"unknown executor {executor!r}; use local or ray", where="--executor")
    if not isinstance(jobs, int) or jobs < 1:
        raise SpinedxError(f"--jobs must be a whole number >= 1 (got {jobs})", where="--jobs")
    if config.threads is None:  # only runs written before the thread count was fixed have none
        raise SpinedxError("threads must be a whole number >= 1 (each fold's torch thread count; it shapes the "
                           "results, so every run records it)", where="--threads")
    if executor == "ray":
        from spinedx.evaluation.executors import RayOptions, ray_available

        ray_options = ray_options or RayOptions()
        ray_options.validate()
        if not ray_available():
            raise SpinedxError("the Ray executor needs the ray extra: pip install 'spinedx[ray]'", where="--executor")
    rf = RunFolder(run_dir)
    rf.check_output()
    remove_stale_tmp(rf.path)  # temporaries of a killed (SIGKILL) earlier run
    patches = load_patches(patches_dir)
    labels = patient_labels(patches.patient_id, patches.label, where=str(patches.path))
    if rf.is_run():  # a damaged or foreign config.yaml is refused before any slow work
        rf.read_record()
    runtime = _resolve_runtime(config)
    device = runtime["device"]

    # Resolve the weights before any work, so a missing ImageNet file fails at once (exit 2).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(fold_seed(config.seed, 0))
        model, weights = build_model(config.backbone, config.pretrained, config.weights, dropout=config.dropout)
    if weights.source == "fallback-none":
        log.warning(weights.message)
    record = RunRecord(
        config=config, patches=patches.info(), weights=WeightsRecord(**weights.to_dict()),
        device={"type": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "threads": runtime["threads"], "bf16": runtime["bf16"], "compile": runtime["compile"],
                "channels_last": config.channels_last},
        channel_names=tuple(model.channel_names), provenance=provenance())
    check_split_sizes(labels, config.folds, config.inner_val_fraction, where=str(patches.path))  # before any write
    splits = _prepare(rf, record, labels, overwrite)
    all_splits: list[tuple[int | None, Splits]] = [(None, splits)]
    all_splits += [(r, s) for r, s in enumerate(_prepare_repeats(rf, config, labels, repeats), start=1)]
    for r, _ in all_splits:  # fold folders a killed earlier run (SIGKILL, power loss) was writing
        rf.remove_fold_temporaries(r)
    todo = [(r, s.fold) for r, sp in all_splits for s in sp.splits
            if s.fold not in rf.scan_folds(config.folds, r).complete]
    if executor == "ray":
        from spinedx.evaluation.executors import run_folds_ray

        run_folds_ray(rf.path, [k for _, k in todo], ray_options, threads=config.threads, tasks=todo,
                      on_fold_done=(lambda k, _done: on_fold_done(k)) if on_fold_done is not None else None)
    elif jobs > 1 and len(todo) > 1:
        from spinedx.evaluation.executors import run_folds_processes

        bar = _Progress(progress, config.folds * repeats)

        def fold_done(r: int | None, k: int, done: dict[str, Any]) -> None:
            bar.repeat = r
            bar.fold_done(k, int(done["best_epoch"]), float(done["best_val_loss"]))
            if on_fold_done is not None:
                on_fold_done(k)

        with bar:
            for r, sp in all_splits:
                for split in sp.splits:
                    if (r, split.fold) not in todo:
                        bar.fold_skipped(split.fold, r)
            bar.running(min(jobs, len(todo)))
            run_folds_processes(rf.path, todo, jobs, threads=config.threads, on_fold_done=fold_done)
    else:
        trainer = Trainer(model, device, bf16=runtime["bf16"], channels_last=config.channels_last,
                          compile=runtime["compile"])
        bar = _Progress(progress, config.folds * repeats)
        with bar:
            for r, sp in all_splits:
                bar.repeat = r
                for split in sp.splits:
                    if (r, split.fold) not in todo:
                        bar.fold_skipped(split.fold, r)
                        continue
                    train_fold(rf.path, split.fold, repeat=r, patches=patches, trainer=trainer, progress=bar)
                    if on_fold_done is not None:
                        on_fold_done(split.fold)
    if repeats == 1:
        return finish_run(rf.path, patches=patches)
    return finish_repeats(rf.path, patches=patches)


def finish_run(run_dir: str | Path, repeat: int | None = None, *, patches: PatchSet | None = None,
               features: np.ndarray | None = None) -> dict[str, Any]:
    """Gather the finished folds' predictions into ``oof_slices.csv``, ``oof_patients.csv`` and ``metrics.json``,
    with the baselines fitted on the same folds (:mod:`spinedx.baselines.inrun`; reused when already fitted).

    Args:
        run_dir: the run folder.
        repeat: the repeat (None: the run itself).
        patches: the run's patches, if already loaded (else read from the record and checked by sha256).
        features: their radiomics features, if already computed.

    Raises:
        RunFolderError: a fold is not finished, or its files disagree with the run.
    """
    import pandas as pd

    from spinedx.baselines.inrun import baseline_metrics, fit_baselines

    rf = RunFolder(run_dir)
    record = rf.read_record()
    config = record.config
    splits = rf.read_splits(repeat)
    scan = rf.scan_folds(config.folds, repeat)
    if scan.missing:
        raise RunFolderError(f"fold(s) {', '.join(map(str, scan.missing))} not finished; rerun spinedx cv in this "
                             "folder", where=str(rf.folds_dir(repeat)))
    frames = [rf.read_fold_predictions(s.fold, splits, repeat) for s in splits.splits]
    notes: list[str] = []
    numerics: dict[int, Any] = {}
    for s in splits.splits:
        done = rf.read_done(s.fold, repeat)
        notes.extend(n for n in done.get("notes", []) if n not in notes)
        numerics[s.fold] = done.get("numerics")
    note = _numerics_note(numerics)
    if note:
        notes.append(note)
    slices = pd.concat(frames, ignore_index=True).sort_values(["patient_id", "slice_index"], kind="stable")
    slices = slices.reset_index(drop=True)
    patients = aggregate_patients(slices, config.aggregation, config.threshold)
    patients = patients.sort_values("patient_id", kind="stable").reset_index(drop=True)
    rf.write_oof(slices, patients, repeat)
    seed = splits.seed  # the run's seed (repeat 0), or the repeat's

    metrics: dict[str, Any] = classification_report(patients["label"].to_numpy(), patients["probability"].to_numpy(),
                                                    threshold=config.threshold, seed=seed)
    # A patient's slices are not independent: slice-level intervals resample patients.
    metrics["slice"] = patient_bootstrap_report(slices["label"].to_numpy(), slices["probability"].to_numpy(),
                                                slices["patient_id"].to_numpy(), threshold=config.threshold,
                                                seed=seed)
    per_fold = []
    for k, grp in patients.groupby("fold"):
        sgrp = slices[slices["fold"] == k]
        per_fold.append({"fold": int(k), "n_patients": len(grp),
                         "auc": roc_auc(grp["label"].to_numpy(), grp["probability"].to_numpy()),
                         "slice_auc": roc_auc(sgrp["label"].to_numpy(), sgrp["probability"].to_numpy())})
    metrics["per_fold"] = per_fold
    metrics["per_fold_auc"] = [f["auc"] for f in per_fold]
    metrics.update({
        "level": "patient", "aggregation": config.aggregation, "threshold": config.threshold,
        "n_patients": len(patients), "n_slices": len(slices), "folds": config.folds,
        "early_stop_on": config.early_stop_on, "optimistic": config.optimistic,
        "warning": OPTIMISTIC_WARNING if config.optimistic else None,
        "weights": record.weights.to_dict(), "profile": config.profile, "backbone": config.backbone,
        "synthetic": record.synthetic, "patches_sha256": record.patches.sha256, "notes": notes,
    })
    if repeat:
        metrics.update({"repeat": int(repeat), "seed": seed})
    patches = _run_patches(record, patches)
    baselines = fit_baselines(rf, record, splits, patches, repeat=repeat, features=features)
    metrics["baselines"] = baseline_metrics(baselines, patients, config.threshold, seed)
    rf.write_metrics(metrics, repeat)
    return json_clean(metrics)


def _numerics_note(numerics: dict[int, Any]) -> str | None:
    """A note when the folds were computed under different numerics (``done.json`` ``numerics``: device, threads,
    bf16, compile, CPU kernels), e.g. a Ray cluster of unlike nodes or a run resumed on another machine: each fold's
    probabilities are valid, but they are not the bytes one setting gives. None when they agree (or none records)."""
    known = {k: v for k, v in numerics.items() if isinstance(v, dict)}
    if len({json.dumps(v, sort_keys=True) for v in known.values()}) <= 1:
        return None
    values = list(known.values())
    keys = sorted({key for v in values for key in v if len({json.dumps(w.get(key)) for w in values}) > 1})
    per_fold = "; ".join(f"fold {k}: " + ", ".join(f"{key} {v.get(key)}" for key in keys)
                         for k, v in sorted(known.items()))
    return (f"the folds were computed under different numerics ({per_fold}): each fold's probabilities are valid, "
            "but a rerun in one setting gives other last digits")


#: Metrics whose spread across repeats is reported (patient level).
REPEAT_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv")


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, SD (n-1), min and max of the finite values (None when there are fewer than one / two)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return {"values": values, "mean": float(v.mean()) if len(v) else None,
            "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()) if len(v) else None, "max": float(v.max()) if len(v) else None}


def repeat_summary(per_repeat: list[dict[str, Any]], pooled: pd.DataFrame, threshold: float, seed: int,
                   seeds: list[int]) -> dict[str, Any]:
    """The ``repeats`` section of ``metrics.json``.

    ``spread``: per metric the value of each repeat with their mean, SD (n-1) and range, for the model and each
    baseline; ``pooled``: the metrics with intervals of each patient's out-of-fold probability averaged over the
    repeats (every repeat scored the patient with a model that did not see it, so the average is out-of-fold
    too), called at the run's threshold. The intervals of single repeats ignore training randomness; the spread
    across repeats shows it.
    """
    spread = {k: _spread([m.get(k) for m in per_repeat]) for k in REPEAT_METRICS}
    baselines: dict[str, Any] = {}
    for name in per_repeat[0].get("baselines", {}):
        items = [m.get("baselines", {}).get(name, {}) for m in per_repeat]
        if all(b.get("status") == "ok" for b in items):
            baselines[name] = {k: _spread([b.get(k) for b in items]) for k in REPEAT_METRICS}
            baselines[name]["difference"] = _spread([(b.get("vs_model") or {}).get("difference") for b in items])
            baselines[name]["verdicts"] = [(b.get("vs_model") or {}).get("verdict") for b in items]
    pooled_metrics = classification_report(pooled["label"].to_numpy(), pooled["probability"].to_numpy(),
                                           threshold=threshold, seed=seed)
    return {"n": len(per_repeat), "seeds": seeds, "spread": spread, "baselines": baselines,
            "pooled": pooled_metrics, "pooled_how": "each patient's out-of-fold probability averaged over the "
            f"{len(per_repeat)} repeats, called at threshold {threshold:g}"}


def finish_repeats(run_dir: str | Path, *, patches: PatchSet | None = None) -> dict[str, Any]:
    """Finish every repeat of a repeated cross-validation (:func:`finish_run` each, the radiomics features computed
    once) and add the ``repeats`` section to the run's ``metrics.json`` (repeat 0's metrics).

    Raises:
        RunFolderError: not a repeated run, or a fold of some repeat not finished.
    """
    import pandas as pd

    from spinedx.baselines.inrun import radiomics_matrix

    rf = RunFolder(run_dir)
    plan = rf.read_repeats()
    if plan is None:
        raise RunFolderError("not a repeated cross-validation (no repeats.json)", where=str(rf.path))
    record = rf.read_record()
    if patches is None:
        patches = load_patches(record.patches.path)
    features = None
    if any(rf.read_baselines(r) is None for r in range(plan["repeats"])):
        features, _ = radiomics_matrix(patches)
    per_repeat = [finish_run(rf.path, r or None, patches=patches, features=features) for r in range(plan["repeats"])]
    tables = [rf.read_oof_patients(record, repeat=r or None) for r in range(plan["repeats"])]
    pooled = pd.concat(tables).groupby("patient_id", sort=True).agg(label=("label", "first"),
                                                                    probability=("probability", "mean"))
    metrics = dict(per_repeat[0])
    metrics["repeats"] = repeat_summary(per_repeat, pooled.reset_index(), record.config.threshold,
                                        record.config.seed, list(plan["seeds"]))
    rf.write_metrics(metrics)
    return json_clean(metrics)


def repeat_lines(metrics: dict[str, Any]) -> list[str]:
    """Command-line lines for the spread across repeats (empty for a single cross-validation)."""
    rep = metrics.get("repeats")
    if not isinstance(rep, dict):
        return []

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    def line(name: str, sp: dict[str, Any]) -> str:
        return f"{name} mean {f(sp['mean'])} SD {f(sp['sd'])} range {f(sp['min'])} to {f(sp['max'])}"

    pooled = rep["pooled"]
    out = [f"repeated cross-validation: {rep['n']} repeats (seeds {', '.join(map(str, rep['seeds']))}); the figures "
           "above are repeat 0's",
           "  model across repeats: " + "; ".join(line(k, rep["spread"][k]) for k in ("auc", "sensitivity",
                                                                                         "specificity", "accuracy")),
           "  model pooled (" + rep["pooled_how"] + "): " + ", ".join(
               f"{k} {f(pooled.get(k))} [{f(pooled.get(k + '_low'))}, {f(pooled.get(k + '_high'))}]"
               for k in ("auc", "sensitivity", "specificity", "accuracy"))]
    for name, b in rep.get("baselines", {}).items():
        label = (metrics.get("baselines", {}).get(name) or {}).get("label", name)
        verdicts = ", ".join(str(v) for v in b["verdicts"])
        out.append(f"  {label} across repeats: {line('auc', b['auc'])}; {line('CNN - baseline AUC', b['difference'])}"
                   f" (verdict per repeat: {verdicts})")
    return out


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """Human-readable summary of ``metrics.json`` (used by the CLI): the model, then the baselines on the same
    folds with the paired comparison."""
    from spinedx.baselines.inrun import baseline_lines
    from spinedx.common import format_metric as fmt

    lines = []
    if metrics.get("synthetic"):
        lines.append(SYNTHETIC_BANNER + ": the figures below describe a simulation")
    if metrics.get("optimistic"):
        lines.append(metrics.get("warning") or OPTIMISTIC_WARNING)
    w = metrics.get("weights", {})
    lines.append(f"weights: {w.get('source')}" + (f" {w.get('path')} sha256 {w.get('sha256')}" if w.get("path") else "")
                 + (f" -- {w.get('message')}" if w.get("source") == "fallback-none" else ""))
    for level, m in (("patient", metrics), ("slice", metrics.get("slice", {}))):
        how = f"{metrics.get('aggregation')} aggregation" if level == "patient" else "intervals resample patients"
        lines.append(
            f"{level} level (n={m.get('n')}, {how}, threshold {metrics.get('threshold')}): "
            + ", ".join(fmt(m, n) for n in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"))
            + f"; tp {m.get('tp')} tn {m.get('tn')} fp {m.get('fp')} fn {m.get('fn')}")
    aucs = [a for a in metrics.get("per_fold_auc", []) if a is not None]
    if aucs:
        lines.append("per-fold patient AUC: " + " ".join(f"{a:.2f}" for a in aucs))
    lines.extend(baseline_lines(metrics))
    lines.extend(repeat_lines(metrics))
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    return lines


class _Progress:
    """Rich progress bars (folds; batches of the current epoch with the running loss) or log lines."""

    def __init__(self, enabled: bool, n_folds: int) -> None:
        self.enabled = enabled
        self.n_folds = n_folds
        self.fold = 0
        self.repeat: int | None = None  # set by run_cv while it trains the folds of a repeat
        self.n_epochs = 0
        self._p = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TimeRemainingColumn())
            self._folds = self._p.add_task("folds", total=n_folds)
            self._batches = self._p.add_task("epoch", total=1, visible=False)

    def __enter__(self) -> Self:
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def running(self, jobs: int) -> None:
        """Folds are being trained by ``jobs`` worker processes (no per-batch progress from them)."""
        msg = f"training {jobs} folds at a time in worker processes (one line per finished fold)"
        if self._p is not None:
            self._p.update(self._folds, description=f"folds ({jobs} at a time)")
            self._p.console.print(msg)
        else:
            log.info(msg)

    def _name(self, k: int) -> str:
        return f"repeat {self.repeat} fold {k}" if self.repeat else f"fold {k}"

    def fold_skipped(self, k: int, repeat: int | None = None) -> None:
        what = f"repeat {repeat} fold {k}" if repeat else f"fold {k}"
        log.info("%s already done: skipped", what)
        if self._p is not None:
            self._p.advance(self._folds)
            self._p.console.print(f"{what}: already done, skipped (resume)")

    def fold_start(self, k: int, n_epochs: int, n_batches: int) -> None:
        self.fold, self.n_epochs = k, n_epochs
        if self._p is not None:
            self._p.update(self._batches, description=f"{self._name(k)} epoch 1/{n_epochs}", total=n_batches,
                           completed=0, visible=True)

    def batch(self, epoch: int, b: int, n_batches: int, running: float) -> None:
        if self._p is not None:
            self._p.update(self._batches, completed=b, total=n_batches,
                           description=f"{self._name(self.fold)} epoch {epoch}/{self.n_epochs} loss {running:.4f}")

    def epoch(self, row: dict[str, float]) -> None:
        msg = (f"{self._name(self.fold)} epoch {int(row['epoch'])}/{self.n_epochs}: train_loss {row['train_loss']:.4f} "
               f"val_loss {row['val_loss']:.4f} ({row['seconds']:.1f}s)")
        if self._p is None:
            log.info(msg)

    def fold_done(self, k: int, best_epoch: int, best_loss: float) -> None:
        msg = f"{self._name(k)} done: kept epoch {best_epoch}, validation loss {best_loss:.4f}"
        if self._p is not None:
            self._p.advance(self._folds)
            self._p.console.print(msg)
        else:
            log.info(msg)
