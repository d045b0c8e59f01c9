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

Run folder (see ``docs/architecture.md``): ``config.yaml``, ``splits.json``, ``oof_slices.csv``,
``oof_patients.csv``, ``metrics.json`` and ``folds/<k>/{model.pt, history.csv, curves.png,
predictions.csv, done.json}``. A fold with ``done.json`` is skipped on restart; each fold's
seeds derive from ``(seed, fold)`` only, so a resumed run gives the same results as an
uninterrupted one (same device, threads and settings).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import yaml

from spinedx.errors import SpinedxError
from spinedx.evaluation.aggregate import aggregate_patients
from spinedx.evaluation.metrics import classification_report, roc_auc
from spinedx.evaluation.splits import load_or_make_splits, patient_labels
from spinedx.training.config import OPTIMISTIC_WARNING, RESUMABLE_KEYS, CVConfig

log = logging.getLogger(__name__)

__all__ = ["CVConfig", "load_patches", "run_cv", "summary_lines"]


def load_patches(patches_dir: str | Path) -> dict[str, Any]:
    """Load ``patches.npz`` (a folder holding it, or the file) and check the architecture contract.

    Returns:
        ``{"path", "x" (N,6,64,64) float32, "patient_id" (N,) str, "slice_index" (N,) int64,
        "label" (N,) int64}``.

    Raises:
        SpinedxError: Missing file, missing keys, wrong shapes or labels other than 0/1.
    """
    path = Path(patches_dir)
    if path.is_dir():
        path = path / "patches.npz"
    if not path.is_file():
        raise SpinedxError("patches.npz not found; run spinedx extract first and pass its output folder",
                           where=str(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in ("x", "patient_id", "slice_index", "label") if k in npz.files}
    except (ValueError, OSError) as exc:
        raise SpinedxError(f"cannot read patches ({exc}); rerun spinedx extract", where=str(path)) from exc
    missing = {"x", "patient_id", "slice_index", "label"} - set(data)
    if missing:
        raise SpinedxError(f"missing arrays {sorted(missing)}; rerun spinedx extract", where=str(path))
    x = data["x"]
    n = x.shape[0] if x.ndim == 4 else -1
    if x.ndim != 4 or x.shape[1] != 6 or any(len(data[k]) != n for k in ("patient_id", "slice_index", "label")):
        raise SpinedxError(f"x must be (N, 6, H, W) with N patient ids, slice indices and labels; got x {x.shape}",
                           where=str(path))
    label = data["label"].astype(np.int64)
    if not np.isin(label, (0, 1)).all():
        raise SpinedxError("labels must be 0 (benign) or 1 (malignant)", where=str(path))
    if n == 0:
        raise SpinedxError("no patches in the file", where=str(path))
    return {"path": path.resolve(), "x": x.astype(np.float32, copy=False), "patient_id": data["patient_id"].astype(str),
            "slice_index": data["slice_index"].astype(np.int64), "label": label}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(float(obj)) else float(obj)
    return obj


def _save_curves(history: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(history["epoch"], history["train_loss"], marker="o", ms=3, label="train (augmented)")
    ax.plot(history["epoch"], history["val_loss"], marker="o", ms=3, label="validation")
    best = history["val_loss"].idxmin()
    ax.axvline(history.loc[best, "epoch"], color="grey", ls=":", label="best (restored)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _resolve_runtime(config: CVConfig) -> dict[str, Any]:
    import torch

    from spinedx.training.engine import resolve_device, use_bf16

    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = resolve_device(config.device)
    compile_on = config.compile == "on" or (config.compile == "auto" and config.profile == "paper")
    return {"device": device, "bf16": use_bf16(config.bf16, device), "compile": compile_on,
            "threads": torch.get_num_threads()}


def _check_resume(run_dir: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a run folder made with other settings or other patches."""
    path = run_dir / "config.yaml"
    if not path.is_file() or not any((run_dir / "folds").glob("*/done.json")):
        return
    old = yaml.safe_load(path.read_text()) or {}
    old_cfg = {k: v for k, v in old.get("config", {}).items() if k not in RESUMABLE_KEYS}
    new_cfg = {k: v for k, v in record["config"].items() if k not in RESUMABLE_KEYS}
    diff = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
    if diff:
        raise SpinedxError(f"this run folder was made with other settings ({', '.join(diff)}); rerun with the same "
                           "options to resume, or use a new --out folder", where=str(run_dir))
    if old.get("patches_sha256") != record["patches_sha256"]:
        raise SpinedxError("this run folder was made from other patches; use a new --out folder", where=str(run_dir))


def run_cv(
    patches_dir: str | Path,
    run_dir: str | Path,
    config: CVConfig | None = None,
    progress: bool = True,
    on_fold_done: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Cross-validate the paper's model on ``patches.npz`` and write the run folder.

    Args:
        patches_dir: Folder with ``patches.npz`` (from ``spinedx extract``) or the file itself.
        run_dir: Output run folder; an existing one is resumed (finished folds skipped).
        config: The run's configuration (default: the ``paper`` profile).
        progress: Show rich progress bars; False logs one line per epoch instead.
        on_fold_done: Called with the fold number after each fold is saved (monitoring, tests).

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        SpinedxError: Bad patches, impossible folds, a run folder made with other settings,
            or missing ImageNet weights (:class:`spinedx.errors.WeightsError`).
    """
    import torch

    from spinedx.models.net import build_model
    from spinedx.models.run import predict_patches, save_fold_model
    from spinedx.provenance import provenance, sha256_file
    from spinedx.training.engine import Trainer, fold_seed, initial_state

    config = config or CVConfig.from_profile("paper")
    config.validate()
    data = load_patches(patches_dir)
    run_dir = Path(run_dir)
    labels = patient_labels(data["patient_id"], data["label"], where=str(data["path"]))
    runtime = _resolve_runtime(config)
    device = runtime["device"]

    # Resolve the weights before any work, so a missing ImageNet file fails at once (exit 2).
    def build() -> torch.nn.Module:
        return build_model(config.backbone, config.pretrained, config.weights)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(fold_seed(config.seed, 0))
        model, weights = build_model(config.backbone, config.pretrained, config.weights)
    if weights.source == "fallback-none":
        log.warning(weights.message)

    record = {
        "config": config.to_dict(),
        "optimistic": config.optimistic,
        "warning": OPTIMISTIC_WARNING if config.optimistic else None,
        "patches_dir": str(data["path"].parent),
        "patches_file": str(data["path"]),
        "patches_sha256": sha256_file(data["path"]),
        "n_patients": len(labels),
        "n_slices": len(data["label"]),
        "weights": weights.to_dict(),
        "device": {"type": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                   "cpu", "threads": runtime["threads"], "bf16": runtime["bf16"], "compile": runtime["compile"],
                   "channels_last": config.channels_last},
        "channel_names": list(model.channel_names),
        "provenance": provenance(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(run_dir, record)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_clean(record), sort_keys=False))
    splits = load_or_make_splits(run_dir / "splits.json", labels, config.folds, config.seed, config.inner_val_fraction)

    trainer = Trainer(model, device, bf16=runtime["bf16"], channels_last=config.channels_last,
                      compile=runtime["compile"])
    pid = data["patient_id"]
    notes: list[str] = []
    bar = _Progress(progress, config.folds)
    with bar:
        for split in splits["splits"]:
            k = int(split["fold"])
            fold_dir = run_dir / "folds" / str(k)
            if (fold_dir / "done.json").is_file() and (fold_dir / "predictions.csv").is_file():
                bar.fold_skipped(k)
                continue
            fold_dir.mkdir(parents=True, exist_ok=True)
            val_mask = np.isin(pid, split["val"])
            es_mask = val_mask if config.optimistic else np.isin(pid, split["inner_val"])
            train_mask = ~val_mask & ~es_mask
            seed_k = fold_seed(config.seed, k)
            trainer.reset(initial_state(build, seed_k))
            torch.manual_seed(seed_k)
            t0 = time.perf_counter()
            n_views = int(np.where(data["label"][train_mask] == 1, config.views_malignant,
                                   config.views_benign).sum())
            bar.fold_start(k, config.epochs, n_views // config.batch_size + 1)
            fit = trainer.fit(
                data["x"][train_mask], data["label"][train_mask], data["x"][es_mask], data["label"][es_mask],
                seed=seed_k, epochs=config.epochs, patience=config.patience, views_benign=config.views_benign,
                views_malignant=config.views_malignant, batch_size=config.batch_size, lr=config.lr,
                betas=(config.betas[0], config.betas[1]), weight_decay=config.weight_decay, augment=config.augment,
                on_batch=bar.batch, on_epoch=bar.epoch,
            )
            notes.extend(n for n in fit.notes if n not in notes)
            prob = predict_patches([trainer.model], data["x"][val_mask], bf16=runtime["bf16"])[0]
            preds = pd.DataFrame({"patient_id": pid[val_mask], "slice_index": data["slice_index"][val_mask],
                                  "fold": k, "label": data["label"][val_mask], "probability": prob})
            hist = pd.DataFrame(fit.history)
            hist.to_csv(fold_dir / "history.csv", index=False)
            _save_curves(hist, fold_dir / "curves.png",
                         f"fold {k}: best epoch {fit.best_epoch}" + (" (OPTIMISTIC: outer early stop)"
                                                                     if config.optimistic else ""))
            # trainer.model is ``model`` itself, trained in place
            save_fold_model(model, fold_dir / "model.pt", k, best_epoch=fit.best_epoch,
                            best_val_loss=float(fit.best_val_loss), seed=seed_k,
                            early_stop_on=config.early_stop_on)
            preds.to_csv(fold_dir / "predictions.csv", index=False)
            done = {"fold": k, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                    "epochs_run": len(fit.history), "seconds": time.perf_counter() - t0,
                    "n_train_slices": int(train_mask.sum()), "n_early_stop_slices": int(es_mask.sum()),
                    "n_val_slices": int(val_mask.sum()), "compiled": fit.compiled, "seed": seed_k}
            (fold_dir / "done.json").write_text(json.dumps(_clean(done), indent=1))
            bar.fold_done(k, fit.best_epoch, fit.best_val_loss)
            if on_fold_done is not None:
                on_fold_done(k)

    metrics = _finish(run_dir, config, record, splits, notes)
    return metrics


def _finish(run_dir: Path, config: CVConfig, record: dict[str, Any], splits: dict[str, Any],
            notes: list[str]) -> dict[str, Any]:
    """Gather the folds' predictions into the out-of-fold tables and metrics.json."""
    frames = [pd.read_csv(run_dir / "folds" / str(s["fold"]) / "predictions.csv", dtype={"patient_id": str})
              for s in splits["splits"]]
    slices = pd.concat(frames, ignore_index=True).sort_values(["patient_id", "slice_index"], kind="stable")
    slices = slices[["patient_id", "slice_index", "fold", "label", "probability"]].reset_index(drop=True)
    slices.to_csv(run_dir / "oof_slices.csv", index=False)
    patients = aggregate_patients(slices, config.aggregation, config.threshold)
    patients = patients[["patient_id", "fold", "label", "probability", "prediction"]]
    patients.to_csv(run_dir / "oof_patients.csv", index=False)

    metrics: dict[str, Any] = classification_report(patients["label"].to_numpy(), patients["probability"].to_numpy(),
                                                    threshold=config.threshold, seed=config.seed)
    metrics["slice"] = classification_report(slices["label"].to_numpy(), slices["probability"].to_numpy(),
                                             threshold=config.threshold, seed=config.seed)
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
        "weights": record["weights"], "profile": config.profile, "backbone": config.backbone,
        "notes": notes,
    })
    (run_dir / "metrics.json").write_text(json.dumps(_clean(metrics), indent=1))
    return _clean(metrics)


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """Human-readable summary of ``metrics.json`` (used by the CLI)."""

    def fmt(m: dict[str, Any], name: str) -> str:
        v, lo, hi = m.get(name), m.get(f"{name}_low"), m.get(f"{name}_high")
        if v is None:
            return f"{name} n/a"
        return f"{name} {v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{name} {v:.3f}"

    lines = []
    if metrics.get("optimistic"):
        lines.append(metrics.get("warning") or OPTIMISTIC_WARNING)
    w = metrics.get("weights", {})
    lines.append(f"weights: {w.get('source')}" + (f" {w.get('path')} sha256 {w.get('sha256')}" if w.get("path") else "")
                 + (f" -- {w.get('message')}" if w.get("source") == "fallback-none" else ""))
    for level, m in (("patient", metrics), ("slice", metrics.get("slice", {}))):
        lines.append(
            f"{level} level (n={m.get('n')}, {metrics.get('aggregation')} aggregation, "
            f"threshold {metrics.get('threshold')}): "
            + ", ".join(fmt(m, n) for n in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"))
            + f"; tp {m.get('tp')} tn {m.get('tn')} fp {m.get('fp')} fn {m.get('fn')}")
    aucs = [a for a in metrics.get("per_fold_auc", []) if a is not None]
    if aucs:
        lines.append("per-fold patient AUC: " + " ".join(f"{a:.2f}" for a in aucs))
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    return lines


class _Progress:
    """Rich progress bars (folds; batches of the current epoch with the running loss) or log lines."""

    def __init__(self, enabled: bool, n_folds: int) -> None:
        self.enabled = enabled
        self.n_folds = n_folds
        self.fold = 0
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

    def fold_skipped(self, k: int) -> None:
        log.info("fold %d already done (done.json): skipped", k)
        if self._p is not None:
            self._p.advance(self._folds)
            self._p.console.print(f"fold {k}: already done, skipped (resume)")

    def fold_start(self, k: int, n_epochs: int, n_batches: int) -> None:
        self.fold, self.n_epochs = k, n_epochs
        if self._p is not None:
            self._p.update(self._batches, description=f"fold {k} epoch 1/{n_epochs}", total=n_batches,
                           completed=0, visible=True)

    def batch(self, epoch: int, b: int, n_batches: int, running: float) -> None:
        if self._p is not None:
            self._p.update(self._batches, completed=b, total=n_batches,
                           description=f"fold {self.fold} epoch {epoch}/{self.n_epochs} loss {running:.4f}")

    def epoch(self, row: dict[str, float]) -> None:
        msg = (f"fold {self.fold} epoch {int(row['epoch'])}/{self.n_epochs}: train_loss {row['train_loss']:.4f} "
               f"val_loss {row['val_loss']:.4f} ({row['seconds']:.1f}s)")
        if self._p is None:
            log.info(msg)

    def fold_done(self, k: int, best_epoch: int, best_loss: float) -> None:
        msg = f"fold {k} done: best epoch {best_epoch}, validation loss {best_loss:.4f}"
        if self._p is not None:
            self._p.advance(self._folds)
            self._p.console.print(msg)
        else:
            log.info(msg)
