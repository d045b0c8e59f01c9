"""Tenfold cross-validation of the paper's model, by patient, with resumable folds: the driver, :func:`run_cv`.

Yeh et al. 2022, "Evaluation using cross-validation": ResNet50 "was evaluated using tenfold
cross-validation, and each case had only one chance to be included in the validation group";
slice probabilities are aggregated per patient by their maximum and thresholded at 0.5.

The paper stops early "based on the lowest validation loss"; if that validation set is the
held-out fold, model selection has seen the patients being scored and the results are
optimistic. By default (``early_stop_on="inner"``) early stopping uses inner validation
patients drawn from the training folds, so every out-of-fold prediction is untouched by its
own patient; ``early_stop_on="outer"`` reproduces the paper literally and every output says the
results are optimistic.

The work is split so that folds can be scheduled anywhere: :func:`run_cv` (this module) checks the inputs and an
existing run folder, writes ``config.yaml`` and ``splits.json``, has an executor
(:mod:`spinedx.evaluation.executors`: this process, worker processes or Ray) run :func:`train_fold`
(:mod:`spinedx.evaluation.fold`) for every unfinished fold, and gathers their predictions (:func:`finish_run`,
:mod:`spinedx.evaluation.finish`). It reports progress to a :class:`~spinedx.evaluation.progress.CVProgress` and
draws nothing itself (``spinedx cv`` passes its progress bars, :mod:`spinedx.cli.cvview`). The run folder's files
are read and written by :mod:`spinedx.runfolder` only.

Resume: a fold folder exists only when the fold finished (it is written into a temporary sibling
and renamed); each fold's seeds derive from ``(seed, fold)`` only, so a resumed run gives the same
results as an uninterrupted one (same device, threads and settings).

``train_fold``, ``finish_run``, ``finish_repeats``, ``repeat_summary`` and ``repeat_seed`` are importable from here
as well as from their modules.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.errors import SpinedxError
from spinedx.evaluation.finish import finish_repeats, finish_run, repeat_summary
from spinedx.evaluation.fold import repeat_seed, resolve_runtime, train_fold
from spinedx.evaluation.progress import CVProgress, LogProgress
from spinedx.evaluation.splits import check_split_sizes, make_splits, patient_labels
from spinedx.fsutil import remove_stale_tmp
from spinedx.runfolder import PatchSet, RunFolder, RunFolderError, RunRecord, Splits, WeightsRecord, load_patches
from spinedx.training.config import CVConfig

if TYPE_CHECKING:
    from spinedx.evaluation.executors import RayOptions  # noqa: F811

log = logging.getLogger(__name__)

__all__ = ["CVConfig", "finish_repeats", "finish_run", "load_patches", "repeat_seed", "repeat_summary", "run_cv",
           "train_fold"]


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


def _check_run_options(config: CVConfig, repeats: int, executor: str, jobs: int,
                       ray_options: RayOptions | None) -> RayOptions | None:
    """Refuse options that cannot work before anything is read or written; the Ray options to use."""
    from spinedx.evaluation.executors import RayOptions, ray_available

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
        ray_options = ray_options or RayOptions()
        ray_options.validate()
        if not ray_available():
            raise SpinedxError("the Ray executor needs the ray extra: pip install 'spinedx[ray]'", where="--executor")
    return ray_options


def _trained_on(patches: PatchSet, labels: dict[str, int]) -> dict[str, Any]:
    """What the models are trained on, stated wherever their decision is read (prediction.json, the page, the SR)."""
    info = patches.info()
    return {"synthetic": patches.synthetic, "n_patients": len(labels),
            "prevalence": sum(labels.values()) / len(labels),
            "origin": ("synthetic cohort" if patches.synthetic else "cohort")
            + (f" {info.manifest['path']}" if info.manifest else "")}


def run_cv(
    patches_dir: str | Path,
    run_dir: str | Path,
    config: CVConfig | None = None,
    progress: CVProgress | bool | None = None,
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
        progress: Where progress goes (:class:`~spinedx.evaluation.progress.CVProgress`, e.g. the CLI's bars,
            :class:`spinedx.cli.cvview.RichProgress`); None, True or False: log lines
            (:class:`~spinedx.evaluation.progress.LogProgress`; the booleans are kept for older callers).
        on_fold_done: Called with the fold number after each fold is saved (monitoring, tests).
        overwrite: Start over in a run folder made with other settings, provided no fold finished there.
        executor: ``local`` (folds on this machine) or ``ray`` (each fold a Ray task,
            :mod:`spinedx.evaluation.executors`).
        ray_options: Ray address and per-fold resources (``executor="ray"``).
        repeats: Repetitions of the whole cross-validation (1: the single cross-validation, as the paper).
        jobs: With the local executor, folds trained at once in worker processes on this machine
            (:class:`spinedx.evaluation.executors.ProcessExecutor`; one torch thread each unless ``threads`` is
            set); 1 trains them one after the other in this process.

    Returns:
        The metrics written to ``metrics.json`` (repeat 0's, with a ``repeats`` section when N > 1).

    Raises:
        SpinedxError: Bad patches (unreadable, NaN, wrong shapes), impossible folds, a run folder made with
            other settings or patches, or missing ImageNet weights (:class:`spinedx.errors.WeightsError`).
    """
    import torch

    from spinedx.evaluation.executors import FoldExecutor, FoldTask, make_executor
    from spinedx.models.net import build_model
    from spinedx.provenance import provenance
    from spinedx.training.engine import Trainer, fold_seed

    config = config or CVConfig.from_profile("paper")
    ray_options = _check_run_options(config, repeats, executor, jobs, ray_options)
    rf = RunFolder(run_dir)
    rf.check_output()
    remove_stale_tmp(rf.path)  # temporaries of a killed (SIGKILL) earlier run
    patches = load_patches(patches_dir)
    labels = patient_labels(patches.patient_id, patches.label, where=str(patches.path))
    if rf.is_run():  # a damaged or foreign config.yaml is refused before any slow work
        rf.read_record()
    runtime = resolve_runtime(config)
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
        channel_names=tuple(model.channel_names),
        provenance={**provenance(), "trained_on": _trained_on(patches, labels)})
    check_split_sizes(labels, config.folds, config.inner_val_fraction, where=str(patches.path))  # before any write
    splits = _prepare(rf, record, labels, overwrite)
    all_splits: list[tuple[int | None, Splits]] = [(None, splits)]
    all_splits += [(r, s) for r, s in enumerate(_prepare_repeats(rf, config, labels, repeats), start=1)]
    for r, _ in all_splits:  # fold folders a killed earlier run (SIGKILL, power loss) was writing
        rf.remove_fold_temporaries(r)
    finished = {r: set(rf.scan_folds(config.folds, r).complete) for r, _ in all_splits}
    todo = [(r, s.fold) for r, sp in all_splits for s in sp.splits if s.fold not in finished[r]]
    runner: FoldExecutor = make_executor(executor, jobs=jobs, n_tasks=len(todo), ray_options=ray_options,
                                         threads=config.threads)
    bar: CVProgress = progress if progress is not None and not isinstance(progress, bool) else LogProgress()
    task: FoldTask = train_fold  # what worker processes and Ray tasks run: picklable, by reference
    if runner.in_process:
        # one process trains every fold: the patches loaded once, one trainer (compiled once), batch progress
        trainer = Trainer(model, device, bf16=runtime["bf16"], channels_last=config.channels_last,
                          compile=runtime["compile"])

        def in_process_task(run_dir: str, fold: int, *, repeat: int | None) -> dict[str, Any]:
            return train_fold(run_dir, fold, repeat=repeat, patches=patches, trainer=trainer, progress=bar)

        task = in_process_task

    def fold_done(r: int | None, k: int, done: dict[str, Any]) -> None:
        bar.fold_done(r, k, int(done["best_epoch"]), float(done["best_val_loss"]))
        if on_fold_done is not None:
            on_fold_done(k)

    with bar:
        bar.planned(config.folds * repeats)
        for r, sp in all_splits:
            for split in sp.splits:
                if split.fold in finished[r]:
                    bar.fold_skipped(r, split.fold)
        if todo and not runner.in_process:
            bar.running(runner.describe(len(todo)))
        runner.run(rf.path, todo, task, fold_done)
    if repeats == 1:
        return finish_run(rf.path, patches=patches)
    return finish_repeats(rf.path, patches=patches)
