"""Where the folds of a cross-validation run: :class:`InProcessExecutor` (one after the other in this process),
:class:`ProcessExecutor` (side by side in worker processes on this machine, ``spinedx cv --jobs N``) or
:class:`RayExecutor` (Ray tasks). The driver (:func:`spinedx.evaluation.cv.run_cv`) calls one interface,
:meth:`FoldExecutor.run`, with the ``(repeat, fold)`` pairs to train and the **task function** that trains one
(:data:`FoldTask`, :func:`spinedx.evaluation.fold.train_fold` or a closure over it); this module knows nothing of
the driver.

The folds of Yeh et al.'s tenfold cross-validation, and of every repeat of a repeated one, are
independent: each is a pure function of ``(run folder, fold, repeat)``, reading the run's
configuration, splits and patches from the run folder and writing its own fold folder
atomically. The executors therefore only schedule: the Ray executor makes every unfinished fold one Ray
task with the requested resources (``num_cpus``, ``num_gpus``; fractional GPUs let several
folds share one device), results are collected as tasks finish, and the driver writes the
out-of-fold tables afterwards, whichever executor ran the folds.

* Same results: a fold's seeds derive from ``(seed, fold)`` only, and every executor trains and predicts
  it with the run's configured intra-op thread count (``CVConfig.threads``, default 1; float sums depend
  on how work is split between threads) and fixed backend flags
  (:func:`spinedx.training.engine.fold_numerics`), so a fold trained by a Ray worker or a worker
  process is byte for byte the fold this process trains, given the same device type.
* Resume across executors: a fold folder exists only once its fold finished, whoever trained it.
* A worker that dies (killed, out of memory, node lost) makes Ray run the task again
  (``max_retries``); the dead attempt leaves at most a temporary folder, never a half-written
  fold. An error raised by the fold itself (bad input) is not retried: it stops the run.

On one machine, ``spinedx cv --jobs N`` trains N folds at once in spawned worker processes
(:func:`run_folds_processes`), each fold with the run's thread count (default 1). On 2 cores two one-thread folds
side by side beat one fold on two threads: on 64 x 64 patches most operators are too small for two threads to
share. A fold trained by a worker is the fold this process trains with the same configuration. Tasks given to
worker processes and Ray must be picklable by reference (a module-level function such as ``train_fold``).

On a cluster every node needs the same spinedx environment and must see the run folder and
the patches at the same path (a shared filesystem).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spinedx.errors import SpinedxError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")

#: A fold to train: ``(repeat, fold)`` (repeat None: the run itself).
FoldKey = tuple[int | None, int]
#: Called in the driver as each fold finishes: ``(repeat, fold, done record)``.
FoldDone = Callable[[int | None, int, dict[str, Any]], None]


class FoldTask(Protocol):
    """Trains one fold of a prepared run folder and returns its ``done.json`` record
    (:func:`spinedx.evaluation.fold.train_fold`'s signature)."""

    def __call__(self, run_dir: str, fold: int, *, repeat: int | None) -> dict[str, Any]: ...


def _train_fold() -> FoldTask:
    """The default task: :func:`spinedx.evaluation.fold.train_fold`."""
    from spinedx.evaluation.fold import train_fold

    return train_fold


class FoldExecutor(Protocol):
    """Runs fold tasks somewhere (this process, worker processes, Ray)."""

    #: True when the task runs in this process (it may then close over loaded patches, a trainer, a display).
    in_process: bool

    def describe(self, n_tasks: int) -> str:
        """How the folds run, for a progress line (``2 folds at a time in worker processes``)."""
        ...

    def run(self, run_dir: str | Path, tasks: Sequence[FoldKey], task: FoldTask,
            on_fold_done: FoldDone | None = None) -> dict[FoldKey, dict[str, Any]]:
        """Train ``tasks`` with ``task`` and return each one's ``done.json`` record.

        Raises:
            SpinedxError: the first error a fold raised (the others are stopped).
        """
        ...


@dataclass(frozen=True)
class InProcessExecutor:
    """The folds one after the other in this process (``spinedx cv --jobs 1``)."""

    in_process = True

    def describe(self, n_tasks: int) -> str:
        return "one fold after the other in this process"

    def run(self, run_dir: str | Path, tasks: Sequence[FoldKey], task: FoldTask,
            on_fold_done: FoldDone | None = None) -> dict[FoldKey, dict[str, Any]]:
        results: dict[FoldKey, dict[str, Any]] = {}
        for r, k in tasks:
            results[(r, k)] = done = task(str(run_dir), k, repeat=r)
            if on_fold_done is not None:
                on_fold_done(r, k, done)
        return results


@dataclass(frozen=True)
class ProcessExecutor:
    """``jobs`` folds at once in spawned worker processes on this machine (:func:`run_folds_processes`).

    Attributes:
        jobs: worker processes.
        threads: torch threads of each worker outside its folds (the folds use the run's count).
    """

    jobs: int
    threads: int | None = None
    in_process = False

    def describe(self, n_tasks: int) -> str:
        return f"{min(self.jobs, max(n_tasks, 1))} folds at a time in worker processes"

    def run(self, run_dir: str | Path, tasks: Sequence[FoldKey], task: FoldTask,
            on_fold_done: FoldDone | None = None) -> dict[FoldKey, dict[str, Any]]:
        return run_folds_processes(run_dir, tasks, self.jobs, threads=self.threads, on_fold_done=on_fold_done,
                                   task=task)


@dataclass(frozen=True)
class RayOptions:
    """How folds run on Ray.

    Attributes:
        address: ``None`` starts a local Ray instance sized to this machine (and stops it at the
            end); ``auto`` joins the cluster this node belongs to; ``ray://host:10001`` connects
            to a remote cluster's Ray client server.
        cpus_per_fold: CPUs reserved per fold task; None: the run's per-fold thread count
            (``CVConfig.threads``, which is what the fold uses whatever is reserved).
        gpus_per_fold: GPUs per fold task; 0.5 puts two folds on one GPU, 0.25 four.
        max_retries: Times a task whose worker died is run again.
    """

    address: str | None = None
    cpus_per_fold: float | None = None
    gpus_per_fold: float = 0.0
    max_retries: int = 3

    def validate(self) -> None:
        """Raise :class:`SpinedxError` for resources that cannot be scheduled."""
        if self.cpus_per_fold is not None and self.cpus_per_fold <= 0:
            raise SpinedxError(f"--cpus-per-fold must be > 0 (got {self.cpus_per_fold})", where="--cpus-per-fold")
        if self.gpus_per_fold < 0 or (self.gpus_per_fold > 1 and self.gpus_per_fold != int(self.gpus_per_fold)):
            raise SpinedxError(f"--gpus-per-fold must be a fraction of one GPU or a whole number (got "
                               f"{self.gpus_per_fold})", where="--gpus-per-fold")
        if self.max_retries < 0:
            raise SpinedxError("max_retries must be >= 0", where="max_retries")

    def resolved_cpus(self, threads: int | None = None) -> float:
        """CPUs per fold task (see :attr:`cpus_per_fold`): the given count, else ``threads`` (the run's per-fold
        thread count), else (a run written before that was recorded) 1 when the fold has a GPU or the machine up
        to 2 cores, 2 beyond."""
        if self.cpus_per_fold is not None:
            return float(self.cpus_per_fold)
        if threads is not None:
            return float(threads)
        return 1.0 if self.gpus_per_fold > 0 or (os.cpu_count() or 1) <= 2 else 2.0


def ray_available() -> bool:
    """Whether the ``ray`` extra is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _fold_task(task: FoldTask, run_dir: str, fold: int, repeat: int | None, threads: int) -> dict[str, Any]:
    """Body of one Ray task: train one fold in this worker (``threads``: the worker's own torch thread count; the
    fold itself runs with the run's, :func:`spinedx.training.engine.fold_numerics`)."""
    import torch

    torch.set_num_threads(threads)
    return task(run_dir, fold, repeat=repeat)


def _process_init(threads: int) -> None:
    """A fold worker: ``threads`` torch threads outside the folds (each fold sets the run's own), Ctrl-C left to the
    parent (which stops the pool)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _process_task(task: FoldTask, run_dir: str, fold: int,
                  repeat: int | None) -> tuple[dict[str, Any] | None, str | None]:
    """Body of one worker task: ``(done record, None)``, or ``(None, the SpinedxError's line)`` (such errors carry
    keyword arguments, which do not survive pickling)."""
    try:
        return task(run_dir, fold, repeat=repeat), None
    except SpinedxError as exc:
        return None, exc.one_line()


def run_folds_processes(
    run_dir: str | Path,
    tasks: Sequence[tuple[int | None, int]],
    jobs: int,
    *,
    threads: int | None = None,
    on_fold_done: FoldDone | None = None,
    task: FoldTask | None = None,
) -> dict[FoldKey, dict[str, Any]]:
    """Train ``(repeat, fold)`` tasks of a prepared run folder in ``jobs`` worker processes on this machine.

    Each worker is a fresh (spawned) interpreter that calls ``task`` (default
    :func:`spinedx.evaluation.fold.train_fold`, which trains with the run's per-fold thread count); fold folders are
    written atomically by the worker. Ctrl-C or SIGTERM
    stops the pool, kills the workers and removes the temporary fold folders they were writing before the exception
    goes on, so an interrupted run leaves only finished folds.

    Args:
        run_dir: A run folder prepared by :func:`spinedx.evaluation.cv.run_cv`.
        tasks: ``(repeat, fold)`` pairs to train (repeat None: the run itself).
        jobs: Worker processes (folds at once).
        threads: torch threads of each worker outside its folds (default 1; the folds use the run's count).
        on_fold_done: Called in the parent with ``(repeat, fold, done record)`` as each fold finishes.
        task: What trains one fold (picklable by reference: a module-level function).

    Returns:
        Each task's ``done.json`` record, keyed by ``(repeat, fold)``.

    Raises:
        SpinedxError: the first error a fold raised (the other folds are stopped).
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from spinedx.fsutil import stop_pool

    if jobs < 1:
        raise SpinedxError(f"--jobs must be >= 1 (got {jobs})", where="--jobs")
    task = task or _train_fold()
    run_dir = str(Path(run_dir).resolve())
    results: dict[FoldKey, dict[str, Any]] = {}
    if not tasks:
        return results
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=get_context("spawn"),
                               initializer=_process_init, initargs=(int(threads or 1),))
    try:
        pending = {pool.submit(_process_task, task, run_dir, k, r): (r, k) for r, k in tasks}
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                r, k = pending.pop(fut)
                done, error = fut.result()
                if error is not None:
                    raise SpinedxError(error)
                assert done is not None
                results[(r, k)] = done
                if on_fold_done is not None:
                    on_fold_done(r, k, done)
    except BaseException:
        stop_pool(pool)
        # A worker killed while it wrote its fold folder leaves the temporary sibling behind: the workers are gone
        # now, so remove those before the interrupt goes on (nothing a rerun would have to clean).
        _remove_fold_temporaries(run_dir, {r for r, _ in tasks})
        raise
    pool.shutdown(wait=True)
    return results


def _remove_fold_temporaries(run_dir: str | Path, repeats: set[int | None], wait: float = 0.0) -> None:
    """Remove the temporary fold folders that dead workers of this machine left in ``run_dir`` (waiting up to
    ``wait`` seconds for workers that are still being stopped)."""
    from spinedx.runfolder import RunFolder

    rf = RunFolder(run_dir)
    deadline = time.monotonic() + wait
    while True:
        for r in repeats:
            rf.remove_fold_temporaries(r)
        left = [p for r in repeats if rf.folds_dir(r).is_dir() for p in rf.folds_dir(r).iterdir()
                if p.name.startswith(".") and ".tmp-" in p.name]
        if not left or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def _start(options: RayOptions) -> bool:
    """Connect to Ray (or start a local instance); True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if options.address is None:
        import torch

        # the tasks exchange only paths and small dicts: a small object store, not 30% of the memory
        kwargs.update(num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count(),
                      object_store_memory=128 * 2**20)
    else:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SpinedxError(f"cannot start or reach Ray ({exc}); check --address (auto, ray://host:10001) and that "
                           "the cluster is up (ray status)", where=options.address or "--executor ray") from exc
    return True


def _check_fits(options: RayOptions, cpus: float) -> None:
    import ray

    total = ray.cluster_resources()
    if cpus > total.get("CPU", 0) or options.gpus_per_fold > total.get("GPU", 0):
        raise SpinedxError(f"a fold asks for {cpus:g} CPU and {options.gpus_per_fold:g} GPU but the Ray cluster has "
                           f"{total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU in all; lower "
                           "--cpus-per-fold / --gpus-per-fold", where="--executor ray")


def run_folds_ray(
    run_dir: str | Path,
    folds: Sequence[int],
    options: RayOptions | None = None,
    *,
    repeat: int | None = None,
    threads: int | None = None,
    on_fold_done: Callable[[int, dict[str, Any]], None] | None = None,
    tasks: Sequence[FoldKey] | None = None,
    task: FoldTask | None = None,
) -> dict[int, dict[str, Any]] | dict[FoldKey, dict[str, Any]]:
    """Train ``folds`` of a prepared run folder as Ray tasks, as many at once as the resources allow.

    Args:
        run_dir: A run folder prepared by :func:`spinedx.evaluation.cv.run_cv` (``config.yaml``
            and ``splits.json`` written), on a path every Ray node sees.
        folds: Folds to train (finished ones are skipped by the task itself).
        options: Ray address and per-fold resources.
        repeat: Repetition of a repeated cross-validation, if any (for every fold of ``folds``).
        tasks: ``(repeat, fold)`` pairs to train instead of ``folds`` of one ``repeat`` (the folds of every
            repeat of ``spinedx cv --repeats N`` scheduled together); the result is then keyed by those pairs.
        threads: the run's per-fold thread count (``CVConfig.threads``): the default CPUs per fold; the
            fold itself always runs with the run's count, so results match the local executor's.
        on_fold_done: Called in the driver with ``(fold, done record)`` as each fold finishes.
        task: What trains one fold (default :func:`spinedx.evaluation.fold.train_fold`; picklable by reference).

    Returns:
        Each fold's ``done.json`` record (keyed by fold, or by ``(repeat, fold)`` with ``tasks``).

    Raises:
        SpinedxError: Ray missing or unreachable, resources that no node has, or the error a fold
            raised (bad input is not retried).
    """
    pairs = [(r or None, int(k)) for r, k in tasks] if tasks is not None else [(repeat, int(k)) for k in folds]
    done_cb = (lambda _r, k, done: on_fold_done(k, done)) if on_fold_done is not None else None
    results = RayExecutor(options or RayOptions(), threads).run(run_dir, pairs, task or _train_fold(), done_cb)
    if tasks is not None:
        return results
    return {k: done for (_, k), done in results.items()}


@dataclass(frozen=True)
class RayExecutor:
    """Each fold a Ray task (``spinedx cv --executor ray``).

    Attributes:
        options: Ray address and per-fold resources.
        threads: the run's per-fold thread count: the default CPUs per fold task.
    """

    options: RayOptions
    threads: int | None = None
    in_process = False

    def describe(self, n_tasks: int) -> str:
        return "the folds as Ray tasks"

    def run(self, run_dir: str | Path, tasks: Sequence[FoldKey], task: FoldTask,
            on_fold_done: FoldDone | None = None) -> dict[FoldKey, dict[str, Any]]:
        """Train ``tasks`` as Ray tasks (see :func:`run_folds_ray`)."""
        options = self.options
        options.validate()
        if not ray_available():
            raise SpinedxError("the Ray executor needs the ray extra: pip install 'spinedx[ray]'",
                               where="--executor ray")
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError, WorkerCrashedError

        cpus = options.resolved_cpus(self.threads)
        n_threads = int(self.threads or max(1, int(cpus)))
        started = _start(options)
        refs: dict[Any, FoldKey] = {}
        results: dict[FoldKey, dict[str, Any]] = {}
        run_dir = str(Path(run_dir).resolve())
        try:
            _check_fits(options, cpus)
            remote = ray.remote(num_cpus=cpus, num_gpus=options.gpus_per_fold, max_retries=options.max_retries,
                                retry_exceptions=False)(_fold_task)
            t0 = time.perf_counter()
            refs = {remote.remote(task, run_dir, k, r, n_threads): (r, k) for r, k in tasks}
            log.info("ray: %d fold task(s), %g CPU + %g GPU each, %d thread(s)", len(refs), cpus,
                     options.gpus_per_fold, n_threads)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                r, k = refs.pop(ready[0])
                what = f"repeat {r} fold {k}" if r else f"fold {k}"
                try:
                    done = ray.get(ready[0])
                except RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    if isinstance(cause, SpinedxError):
                        raise cause from None
                    raise SpinedxError(f"{what} failed on Ray ({type(cause).__name__}: {cause})",
                                       where=what) from exc
                except (WorkerCrashedError, TaskCancelledError) as exc:
                    raise SpinedxError(f"{what}: its Ray worker died {options.max_retries + 1} time(s) ({exc}); "
                                       "rerun the same command to resume", where=what) from exc
                results[(r, k)] = done
                log.info("ray: %s done after %.0f s", what, time.perf_counter() - t0)
                if on_fold_done is not None:
                    on_fold_done(r, k, done)
        finally:
            for ref in refs:  # interrupted or failed: stop the folds still running (their folders stay unwritten)
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()
                if refs:  # this machine's workers were cancelled: remove the fold folders they were writing
                    _remove_fold_temporaries(run_dir, {r for r, _ in tasks}, wait=5.0)
        return results


def make_executor(executor: str, *, jobs: int = 1, n_tasks: int = 0, ray_options: RayOptions | None = None,
                  threads: int | None = None) -> FoldExecutor:
    """The executor ``spinedx cv`` asks for: ``ray``, or ``local`` with ``jobs`` worker processes when there is more
    than one fold to train, else this process.

    Raises:
        SpinedxError: an unknown executor.
    """
    if executor == "ray":
        return RayExecutor(ray_options or RayOptions(), threads)
    if executor != "local":
        raise SpinedxError(f"unknown executor {executor!r}; use local or ray", where="--executor")
    if jobs > 1 and n_tasks > 1:
        return ProcessExecutor(jobs, threads)
    return InProcessExecutor()
