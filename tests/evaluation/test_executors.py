"""Executors take a task function (issue 19): this process, worker processes and Ray behind one interface; the
driver reports progress to the object it is given and draws nothing itself (the bars are spinedx.cli.cvview's)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runhelpers import write_patches

from spinedx.cli.cvview import RichProgress
from spinedx.errors import SpinedxError
from spinedx.evaluation.cv import run_cv
from spinedx.evaluation.executors import (
    InProcessExecutor,
    ProcessExecutor,
    RayExecutor,
    RayOptions,
    make_executor,
)
from spinedx.training.config import CVConfig


def test_make_executor_picks_where_the_folds_run() -> None:
    assert isinstance(make_executor("local", jobs=1, n_tasks=4), InProcessExecutor)
    assert isinstance(make_executor("local", jobs=2, n_tasks=1), InProcessExecutor)  # one fold: no pool
    assert make_executor("local", jobs=2, n_tasks=4, threads=1) == ProcessExecutor(2, 1)
    ray = make_executor("ray", ray_options=RayOptions(gpus_per_fold=0.5), threads=2)
    assert isinstance(ray, RayExecutor) and ray.options.gpus_per_fold == 0.5 and not ray.in_process
    with pytest.raises(SpinedxError, match="unknown executor 'dask'"):
        make_executor("dask")


def test_in_process_executor_runs_the_task_it_is_given_in_order(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int | None]] = []
    done: list[tuple[int | None, int, dict[str, Any]]] = []

    def task(run_dir: str, fold: int, *, repeat: int | None) -> dict[str, Any]:
        calls.append((run_dir, fold, repeat))
        return {"fold": fold}

    out = InProcessExecutor().run(tmp_path, [(None, 1), (2, 0)], task, lambda r, k, d: done.append((r, k, d)))
    assert calls == [(str(tmp_path), 1, None), (str(tmp_path), 0, 2)]
    assert done == [(None, 1, {"fold": 1}), (2, 0, {"fold": 0})]
    assert out == {(None, 1): {"fold": 1}, (2, 0): {"fold": 0}}


def pid_task(run_dir: str, fold: int, *, repeat: int | None) -> dict[str, Any]:
    """A fold task that trains nothing: which process ran it (module level, so worker processes can unpickle it)."""
    return {"fold": fold, "repeat": repeat, "pid": os.getpid()}


@pytest.mark.slow
def test_process_executor_runs_any_task_in_worker_processes(tmp_path: Path) -> None:
    out = ProcessExecutor(jobs=1).run(tmp_path, [(None, 0), (1, 1)], pid_task)
    assert {k: (v["fold"], v["repeat"]) for k, v in out.items()} == {(None, 0): (0, None), (1, 1): (1, 1)}
    assert os.getpid() not in {v["pid"] for v in out.values()}  # a worker process ran them, not this one


class _Recorder:
    """A :class:`~spinedx.evaluation.progress.CVProgress` that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.entered = False

    def __enter__(self) -> _Recorder:
        self.entered = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.events.append(("exit",))

    def planned(self, total: int) -> None:
        self.events.append(("planned", total))

    def fold_skipped(self, repeat: int | None, fold: int) -> None:
        self.events.append(("skipped", repeat, fold))

    def running(self, how: str) -> None:
        self.events.append(("running", how))

    def fold_start(self, repeat: int | None, fold: int, n_epochs: int, n_batches: int) -> None:
        self.events.append(("start", repeat, fold, n_epochs))

    def batch(self, epoch: int, batch: int, n_batches: int, running: float) -> None:
        if ("batch",) not in self.events:
            self.events.append(("batch",))

    def epoch(self, row: Any) -> None:
        self.events.append(("epoch", int(row["epoch"])))

    def fold_done(self, repeat: int | None, fold: int, best_epoch: int, best_val_loss: float) -> None:
        self.events.append(("done", repeat, fold, best_epoch))


@pytest.mark.slow
def test_the_driver_reports_to_the_progress_it_is_given(tmp_path: Path) -> None:
    patches = write_patches(tmp_path / "p", [f"P{i:02d}" for i in range(12)], np.arange(12) % 2, size=16)
    config = CVConfig.from_profile("quick", folds=2, backbone="resnet18", pretrained="none", epochs=1, threads=1,
                                   compile="off")
    bar = _Recorder()
    run_cv(patches, tmp_path / "run", config, progress=bar)
    assert bar.entered and bar.events == [("planned", 2), ("start", None, 0, 1), ("batch",), ("epoch", 1),
                                          ("done", None, 0, 1), ("start", None, 1, 1), ("epoch", 1),
                                          ("done", None, 1, 1), ("exit",)]
    again = _Recorder()
    run_cv(patches, tmp_path / "run", config, progress=again)  # resumed: nothing left to train
    assert again.events == [("planned", 2), ("skipped", None, 0), ("skipped", None, 1), ("exit",)]


def test_rich_progress_prints_one_line_per_fold() -> None:
    out = io.StringIO()
    from rich.console import Console

    bar = RichProgress(console=Console(file=out, width=200))
    with bar:
        bar.planned(3)
        bar.fold_skipped(None, 0)
        bar.running("2 folds at a time in worker processes")
        bar.fold_start(1, 1, 5, 10)
        bar.batch(1, 3, 10, 0.6931)
        bar.fold_done(1, 1, 4, 0.5)
    text = out.getvalue()
    for line in ("fold 0: already done, skipped (resume)",
                 "training 2 folds at a time in worker processes (one line per finished fold)",
                 "repeat 1 fold 1 done: kept epoch 4, validation loss 0.5000"):
        assert line in text, text
