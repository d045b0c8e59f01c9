"""``spinedx cv --jobs N``: worker processes give the bytes of one-thread folds; resume; errors; interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runhelpers import EXECUTOR_CV_OPTIONS, executor_cv_config, executor_reference
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.evaluation.cv import run_cv
from spinedx.evaluation.executors import run_folds_processes


@pytest.fixture(scope="module")
def reference(module_tmp: Path) -> tuple[Path, Path]:
    """Patches of 18 patients and the one-process run of them."""
    return executor_reference(module_tmp)


@pytest.mark.slow
def test_jobs_give_the_one_process_bytes(tmp_path: Path, reference: tuple[Path, Path]) -> None:
    patches, local = reference
    res = CliRunner().invoke(app, ["cv", str(patches), "--out", str(tmp_path / "jobs"), *EXECUTOR_CV_OPTIONS,
                                   "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert "patient level" in res.output
    for name in ("oof_patients.csv", "oof_slices.csv"):
        assert (tmp_path / "jobs" / name).read_bytes() == (local / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "jobs" / "folds").iterdir()) == ["0", "1", "2"]


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_resume_with_jobs_trains_only_the_missing_folds(tmp_path: Path, reference: tuple[Path, Path]) -> None:
    patches, local = reference

    def stop_after_first(k: int) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        run_cv(patches, tmp_path / "run", executor_cv_config(), progress=False, on_fold_done=stop_after_first)
    first = (tmp_path / "run" / "folds" / "0" / "done.json").read_bytes()
    done: list[int] = []
    run_cv(patches, tmp_path / "run", executor_cv_config(), progress=False, jobs=2, on_fold_done=done.append)
    assert sorted(done) == [1, 2]
    assert (tmp_path / "run" / "folds" / "0" / "done.json").read_bytes() == first  # not retrained
    assert (tmp_path / "run" / "oof_patients.csv").read_bytes() == (local / "oof_patients.csv").read_bytes()


def test_a_fold_error_comes_back_as_one_spinedx_error(tmp_path: Path) -> None:
    # not a run folder: the worker's train_fold refuses it, and the parent raises that refusal (picklable)
    (tmp_path / "notarun").mkdir()
    with pytest.raises(SpinedxError) as info:
        run_folds_processes(tmp_path / "notarun", [(None, 0), (None, 1)], jobs=2)
    assert "notarun" in str(info.value)


def test_jobs_must_be_positive(tmp_path: Path, reference: tuple[Path, Path]) -> None:
    patches, _ = reference
    with pytest.raises(SpinedxError, match="--jobs"):
        run_cv(patches, tmp_path / "run", executor_cv_config(), progress=False, jobs=0)
    res = CliRunner().invoke(app, ["cv", str(patches), "--out", str(tmp_path / "r2"), *EXECUTOR_CV_OPTIONS,
                                   "--jobs", "0"])
    assert res.exit_code == 2
    assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_leaves_no_finished_fold(tmp_path: Path, reference: tuple[Path, Path]) -> None:
    patches, _ = reference
    out = tmp_path / "run"
    # many epochs: the folds are still training when the signal comes
    cmd = [sys.executable, "-m", "spinedx", "cv", str(patches), "--out", str(out), *EXECUTOR_CV_OPTIONS, "--jobs", "2",
           "--epochs", "400"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "splits.json").exists():
            time.sleep(0.2)
        assert (out / "splits.json").exists(), "the run folder was never prepared"
        time.sleep(8)  # the workers have started their folds
        children = _children(proc.pid)
        assert children, "no worker processes"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    # every worker is gone (and the spawn resource tracker, which leaves when its parent has): none left behind
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_state(pid) == "alive" for pid in children):
        time.sleep(0.2)
    assert [_cmdline(pid) for pid in children if _state(pid) == "alive"] == []
    finished = [p for p in (out / "folds").iterdir() if not p.name.startswith(".")] if (out / "folds").exists() else []
    assert finished == []
    assert not (out / "metrics.json").exists()


def _children(pid: int) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(p.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}") / "cmdline").read_text().replace("\0", " ")
    except OSError:
        return "gone"


def _state(pid: int) -> str:
    try:
        return "zombie" if (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z" else "alive"
    except OSError:
        return "gone"
