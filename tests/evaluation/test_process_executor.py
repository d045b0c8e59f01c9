"""``spinedx cv --jobs N``: resume; errors; interrupts (the bytes every executor gives are compared in
test_ray_executor.py, test_the_same_bytes_however_the_folds_run)."""

from __future__ import annotations

import os
import shutil
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


#: ``python SCRIPT cv ...``: spinedx's command line, with every fold held while its folder is being written (after
#: model.pt, in the temporary sibling) and a marker file per process in ``$SPINEDX_TEST_WRITING``. Spawned
#: workers import this script as their ``__mp_main__``, so they are held too.
_HELD_WRITER = '''
import os
import sys
import time
from pathlib import Path

import spinedx.models.run as models_run

_real = models_run.save_fold_model


def _held(*args, **kwargs):
    _real(*args, **kwargs)
    (Path(os.environ["SPINEDX_TEST_WRITING"]) / str(os.getpid())).touch()
    time.sleep(600)


models_run.save_fold_model = _held

if __name__ == "__main__":
    from spinedx.cli import main

    main()
'''


@pytest.mark.slow
@pytest.mark.parametrize("jobs, sig, code", [(1, signal.SIGINT, 130), (2, signal.SIGTERM, 143)])
def test_an_interrupt_while_folds_are_written_leaves_no_temporary_folder(
        tmp_path: Path, reference: tuple[Path, Path], jobs: int, sig: int, code: int) -> None:
    """Issue 18: an interrupted ``cv --jobs 2`` left ``folds/.N.tmp-*`` folders (the killed workers were writing
    them). Every fold is held while its temporary folder exists, then the command is interrupted."""
    patches, _ = reference
    script = tmp_path / "held_writer.py"
    script.write_text(_HELD_WRITER)
    writing = tmp_path / "writing"
    writing.mkdir()
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
           "SPINEDX_TEST_WRITING": str(writing)}
    proc = subprocess.Popen([sys.executable, str(script), "cv", str(patches), "--out", str(out),
                             *EXECUTOR_CV_OPTIONS, "--jobs", str(jobs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(writing.iterdir())) < jobs:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        temporaries = [p.name for p in (out / "folds").iterdir()] if (out / "folds").is_dir() else []
        assert len(temporaries) == jobs and all(".tmp-" in n for n in temporaries), temporaries
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert list((out / "folds").iterdir()) == []  # no finished fold, and nothing a killed worker was writing
    assert not (out / "metrics.json").exists()


def test_the_next_run_removes_what_a_killed_run_left(tmp_path: Path, reference: tuple[Path, Path]) -> None:
    """A process killed outright (SIGKILL, power loss) cannot clean up: the next cv removes its temporary fold
    folders, even when every fold is finished (no fold is written then); a live process's are kept."""
    patches, local = reference
    run = tmp_path / "run"
    shutil.copytree(local, run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = run / "folds" / f".1.tmp-{dead.pid}-abc123"
    left.mkdir()
    (left / "model.pt").write_bytes(b"half a model")
    alive_elsewhere = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = run / "folds" / f".0.tmp-{alive_elsewhere.pid}-0a0b0c"
        busy.mkdir()
        done: list[int] = []
        run_cv(patches, run, executor_cv_config(), progress=False, on_fold_done=done.append)
        assert done == [] and not left.exists() and busy.exists()
    finally:
        alive_elsewhere.kill()
        alive_elsewhere.wait()
    assert (run / "oof_slices.csv").read_bytes() == (local / "oof_slices.csv").read_bytes()
