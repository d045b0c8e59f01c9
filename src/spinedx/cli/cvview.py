"""What ``spinedx cv`` shows: the rich progress bars (:class:`RichProgress`, a
:class:`~spinedx.evaluation.progress.CVProgress`) and the summary of ``metrics.json`` (:func:`summary_lines`).

Presentation only: the cross-validation API (:func:`spinedx.evaluation.cv.run_cv`) reports its progress to the
object it is given and returns the metrics; this module turns both into text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from spinedx.common import SYNTHETIC_BANNER
from spinedx.common import format_metric as fmt
from spinedx.evaluation.progress import LogProgress, fold_done_line, fold_name
from spinedx.training.config import OPTIMISTIC_WARNING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["RichProgress", "baseline_lines", "progress_for", "repeat_lines", "summary_lines"]


class RichProgress:
    """Rich progress bars: the folds, and the batches of the current epoch with the running loss; one console line
    per skipped and finished fold."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self._folds = self._p.add_task("folds", total=None)
        self._batches = self._p.add_task("epoch", total=1, visible=False)
        self._name = ""
        self._epochs = 0

    def __enter__(self) -> Self:
        self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._p.__exit__(*exc)

    def planned(self, total: int) -> None:
        self._p.update(self._folds, total=total)

    def fold_skipped(self, repeat: int | None, fold: int) -> None:
        self._p.advance(self._folds)
        self._p.console.print(f"{fold_name(repeat, fold)}: already done, skipped (resume)")

    def running(self, how: str) -> None:
        self._p.update(self._folds, description=f"folds ({how})")
        self._p.console.print(f"training {how} (one line per finished fold)")

    def fold_start(self, repeat: int | None, fold: int, n_epochs: int, n_batches: int) -> None:
        self._name, self._epochs = fold_name(repeat, fold), n_epochs
        self._p.update(self._batches, description=f"{self._name} epoch 1/{n_epochs}", total=n_batches, completed=0,
                       visible=True)

    def batch(self, epoch: int, batch: int, n_batches: int, running: float) -> None:
        self._p.update(self._batches, completed=batch, total=n_batches,
                       description=f"{self._name} epoch {epoch}/{self._epochs} loss {running:.4f}")

    def epoch(self, row: Mapping[str, float]) -> None:
        return None  # the batch bar shows the epoch; the per-epoch line is LogProgress's (--quiet)

    def fold_done(self, repeat: int | None, fold: int, best_epoch: int, best_val_loss: float) -> None:
        self._p.advance(self._folds)
        self._p.console.print(fold_done_line(repeat, fold, best_epoch, best_val_loss))


def progress_for(quiet: bool) -> RichProgress | LogProgress:
    """The bars, or (``--quiet``) log lines."""
    return LogProgress() if quiet else RichProgress()


def baseline_lines(metrics: dict[str, Any]) -> list[str]:
    """Each baseline next to the model, then the paired comparison (or why it is absent)."""
    section = metrics.get("baselines")
    if not isinstance(section, dict):
        return []
    lines = []
    for name, b in section.items():
        label = b.get("label", name)
        if b.get("status") != "ok":
            lines.append(f"{label}: not fitted ({b.get('reason')})")
            continue
        lines.append(f"{label} (same folds): " + ", ".join(fmt(b, k) for k in ("auc", "accuracy", "sensitivity",
                                                                               "specificity")))
        if isinstance(b.get("vs_model"), dict):
            lines.append(f"  model vs {label}: {b['vs_model']['sentence']}")
    return lines


def repeat_lines(metrics: dict[str, Any]) -> list[str]:
    """The spread across repeats (empty for a single cross-validation)."""
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
    """Human-readable summary of ``metrics.json``: the model, then the baselines on the same folds with the paired
    comparison, the spread across repeats and the notes."""
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
    from spinedx.evaluation.decisioncv import decision_summary_lines  # scipy, statsmodels: only when printing

    lines.extend(decision_summary_lines(metrics))
    aucs = [a for a in metrics.get("per_fold_auc", []) if a is not None]
    if aucs:
        lines.append("per-fold patient AUC: " + " ".join(f"{a:.2f}" for a in aucs))
    lines.extend(baseline_lines(metrics))
    lines.extend(repeat_lines(metrics))
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    return lines

