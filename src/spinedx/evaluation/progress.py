"""What a cross-validation reports while it runs: the :class:`CVProgress` protocol, and :class:`LogProgress`.

The API draws nothing itself: :func:`spinedx.evaluation.cv.run_cv` and :func:`spinedx.evaluation.fold.train_fold`
report to a :class:`CVProgress`. ``spinedx cv`` passes its rich progress bars (:mod:`spinedx.cli.cvview`); a caller
that passes none gets :class:`LogProgress` (one log line per epoch and per fold, at INFO).

Between folds the driver reports (:meth:`~CVProgress.fold_skipped`, :meth:`~CVProgress.running`,
:meth:`~CVProgress.fold_done`); within a fold trained in this process, :func:`~spinedx.evaluation.fold.train_fold`
reports (:meth:`~CVProgress.fold_start`, :meth:`~CVProgress.batch`, :meth:`~CVProgress.epoch`). Folds trained in
worker processes or Ray tasks report only when they finish.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, Self

log = logging.getLogger("spinedx.evaluation.cv")

__all__ = ["CVProgress", "LogProgress", "fold_name"]


def fold_name(repeat: int | None, fold: int) -> str:
    """``fold 3``, or ``repeat 1 fold 3`` in a repeat of a repeated cross-validation."""
    return f"repeat {repeat} fold {fold}" if repeat else f"fold {fold}"


class CVProgress(Protocol):
    """Receives a cross-validation's progress; entered while the folds are trained (a context manager)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: Any) -> None: ...

    def planned(self, total: int) -> None:
        """The run has ``total`` folds in all (every repeat's), finished or not."""

    def fold_skipped(self, repeat: int | None, fold: int) -> None:
        """A fold finished in an earlier session: not trained again (resume)."""

    def running(self, how: str) -> None:
        """The folds are trained elsewhere (``how``: e.g. ``2 folds at a time in worker processes``)."""

    def fold_start(self, repeat: int | None, fold: int, n_epochs: int, n_batches: int) -> None:
        """Training of a fold starts in this process: at most ``n_epochs`` epochs of about ``n_batches`` batches."""

    def batch(self, epoch: int, batch: int, n_batches: int, running: float) -> None:
        """A training batch ended (``running``: the epoch's running loss)."""

    def epoch(self, row: Mapping[str, float]) -> None:
        """An epoch ended (``row``: its line of ``history.csv``)."""

    def fold_done(self, repeat: int | None, fold: int, best_epoch: int, best_val_loss: float) -> None:
        """A fold's folder was written (whoever trained it)."""


class LogProgress:
    """:class:`CVProgress` as log lines (INFO): one per epoch, finished fold, skipped fold."""

    def __init__(self) -> None:
        self._name = ""
        self._epochs = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def planned(self, total: int) -> None:
        return None

    def fold_skipped(self, repeat: int | None, fold: int) -> None:
        log.info("%s already done: skipped", fold_name(repeat, fold))

    def running(self, how: str) -> None:
        log.info("training %s (one line per finished fold)", how)

    def fold_start(self, repeat: int | None, fold: int, n_epochs: int, n_batches: int) -> None:
        self._name, self._epochs = fold_name(repeat, fold), n_epochs

    def batch(self, epoch: int, batch: int, n_batches: int, running: float) -> None:
        return None

    def epoch(self, row: Mapping[str, float]) -> None:
        log.info(epoch_line(self._name, self._epochs, row))

    def fold_done(self, repeat: int | None, fold: int, best_epoch: int, best_val_loss: float) -> None:
        log.info(fold_done_line(repeat, fold, best_epoch, best_val_loss))


def epoch_line(name: str, n_epochs: int, row: Mapping[str, float]) -> str:
    """``fold 0 epoch 3/14: train_loss 0.6812 val_loss 0.6703 (4.1s)``."""
    return (f"{name} epoch {int(row['epoch'])}/{n_epochs}: train_loss {row['train_loss']:.4f} "
            f"val_loss {row['val_loss']:.4f} ({row['seconds']:.1f}s)")


def fold_done_line(repeat: int | None, fold: int, best_epoch: int, best_val_loss: float) -> str:
    """``fold 0 done: kept epoch 9, validation loss 0.4123``."""
    return f"{fold_name(repeat, fold)} done: kept epoch {best_epoch}, validation loss {best_val_loss:.4f}"
