"""The Ray executor: same bytes as the local executor, resume across executors, a killed worker is retried."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from runhelpers import EXECUTOR_CV_OPTIONS, REFERENCE_PROCESS_THREADS, executor_cv_config, executor_reference, run_bytes
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.evaluation.cv import run_cv
from spinedx.evaluation.executors import RayOptions, run_folds_ray


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module (starting one takes seconds); stopped at the end."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(module_tmp: Path) -> tuple[Path, Path]:
    """Patches of 18 patients and the local executor run of them."""
    return executor_reference(module_tmp)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_the_same_bytes_however_the_folds_run(tmp_path: Path, local_ray: None, reference: tuple[Path, Path]) -> None:
    """Issue 18: ``--jobs 1`` (this process, two torch threads) and ``--executor ray`` (one thread per worker) gave
    out-of-fold probabilities up to 1e-3 apart. The run's per-fold thread count (default 1) now holds everywhere:
    this process (the reference, which runs :data:`REFERENCE_PROCESS_THREADS` threads), ``--jobs 2`` worker processes,
    Ray tasks and a resume after a fold folder was deleted give the same bytes, fold predictions included."""
    patches, local = reference
    want = run_bytes(local)
    assert len(want) == 5  # two out-of-fold tables and three folds' predictions

    def threads_of(run: Path) -> list[int]:
        return [json.loads((run / "folds" / str(k) / "done.json").read_text())["numerics"]["threads"]
                for k in range(3)]

    assert threads_of(local) == [1, 1, 1]
    for name, extra in (("jobs", ["--jobs", "2"]), ("ray", ["--executor", "ray"])):
        res = CliRunner().invoke(app, ["cv", str(patches), "--out", str(tmp_path / name), *EXECUTOR_CV_OPTIONS,
                                       *extra])
        assert res.exit_code == 0, res.output
        assert "patient level" in res.output
        assert run_bytes(tmp_path / name) == want, name
        assert threads_of(tmp_path / name) == [1, 1, 1]
        shutil.rmtree(tmp_path / name)  # the fold models are tens of MB: keep the suite's disk use small
    # a resume in this process (REFERENCE_PROCESS_THREADS threads) after fold 1's folder was deleted
    resumed = tmp_path / "resumed"
    shutil.copytree(local, resumed)
    shutil.rmtree(resumed / "folds" / "1")
    for name in ("oof_slices.csv", "oof_patients.csv", "metrics.json"):
        (resumed / name).unlink()
    before = torch.get_num_threads()
    torch.set_num_threads(REFERENCE_PROCESS_THREADS)
    try:
        res = CliRunner().invoke(app, ["cv", str(patches), "--out", str(resumed), *EXECUTOR_CV_OPTIONS])
        assert torch.get_num_threads() == REFERENCE_PROCESS_THREADS
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    assert run_bytes(resumed) == want
    assert threads_of(resumed) == [1, 1, 1]


@pytest.mark.slow
def test_resume_across_executors(tmp_path: Path, local_ray: None, reference: tuple[Path, Path]) -> None:
    patches, local = reference

    def stop_after_first(k: int) -> None:
        raise _Stop

    with pytest.raises(_Stop):  # a local run stopped after one fold ...
        run_cv(patches, tmp_path / "mixed", executor_cv_config(), progress=False, on_fold_done=stop_after_first)
    assert [p.name for p in (tmp_path / "mixed" / "folds").iterdir() if not p.name.startswith(".")] == ["0"]
    resumed: list[int] = []  # ... finished by Ray: the same bytes
    run_cv(patches, tmp_path / "mixed", executor_cv_config(), progress=False, executor="ray",
           ray_options=RayOptions(cpus_per_fold=1), on_fold_done=resumed.append)
    assert sorted(resumed) == [1, 2]
    assert (tmp_path / "mixed" / "oof_patients.csv").read_bytes() == (local / "oof_patients.csv").read_bytes()
    # extended to 2 repeats on Ray: repeat 1's three (repeat, fold) tasks run, repeat 0 stays as it is
    again: list[int] = []
    metrics = run_cv(patches, tmp_path / "mixed", executor_cv_config(), progress=False, executor="ray",
                     ray_options=RayOptions(cpus_per_fold=1), on_fold_done=again.append, repeats=2)
    assert sorted(again) == [0, 1, 2] and metrics["repeats"]["n"] == 2
    assert sorted(p.name for p in (tmp_path / "mixed" / "repeats" / "1" / "folds").iterdir()) == ["0", "1", "2"]
    assert (tmp_path / "mixed" / "oof_patients.csv").read_bytes() == (local / "oof_patients.csv").read_bytes()


def test_unknown_executor_and_bad_resources_are_user_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["cv", str(tmp_path), "--out", str(tmp_path / "run"), "--executor", "slurm"])
    assert res.exit_code == 2 and "error:" in res.output and "use local or ray" in res.output
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(app, ["cv", str(tmp_path), "--out", str(tmp_path / "run"), "--executor", "ray",
                                   "--gpus-per-fold", "1.5"])
    assert res.exit_code == 2 and "--gpus-per-fold" in res.output and "Traceback" not in res.output
    with pytest.raises(SpinedxError, match="--cpus-per-fold must be > 0"):
        RayOptions(cpus_per_fold=0).validate()


def _fold_workers() -> list[int]:
    """PIDs of Ray worker processes now running a fold task (Ray titles them ``ray::_fold_task``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::_fold_task"):
            found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_killed_worker_is_retried_and_leaves_no_half_written_fold(tmp_path: Path, local_ray: None,
                                                                   reference: tuple[Path, Path]) -> None:
    patches, local = reference
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        # kill the first worker seen training a fold, once it has trained for a moment
        while not stop.is_set() and not killed:
            workers = _fold_workers()
            if workers:
                time.sleep(1.0)
                try:
                    os.kill(workers[0], signal.SIGKILL)
                    killed.append(workers[0])
                except ProcessLookupError:
                    continue
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        run_cv(patches, tmp_path / "ray", executor_cv_config(), progress=False, executor="ray",
               ray_options=RayOptions(cpus_per_fold=1, max_retries=2))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert killed, "no fold worker was seen and killed"
    assert not _alive(killed[0])
    folds = sorted(p.name for p in (tmp_path / "ray" / "folds").iterdir())
    assert folds == ["0", "1", "2"]  # no temporary folder of the killed attempt is left behind
    for k in folds:
        assert {p.name for p in (tmp_path / "ray" / "folds" / k).iterdir()} >= {"model.pt", "predictions.csv",
                                                                               "done.json", "history.csv"}
    assert (tmp_path / "ray" / "oof_patients.csv").read_bytes() == (local / "oof_patients.csv").read_bytes()


@pytest.mark.slow
def test_fold_errors_are_not_retried_and_resources_are_checked(tmp_path: Path, local_ray: None) -> None:
    with pytest.raises(SpinedxError, match="config.yaml|run folder"):
        run_folds_ray(tmp_path / "not-a-run", [0], RayOptions(cpus_per_fold=1, max_retries=3))
    with pytest.raises(SpinedxError, match="lower --cpus-per-fold"):
        run_folds_ray(tmp_path, [0], RayOptions(cpus_per_fold=64))
