"""`spinedx synth` outputs are complete or untouched (issue 8 item 9): refusal, --overwrite, interrupts."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import spinedx
from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.fsutil import TMP_MARK
from spinedx.synth import generate_cohort

pytestmark = pytest.mark.slow


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (synth.json included) -> sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tmp_siblings(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if TMP_MARK in p.name]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-patient cohort (the output an interrupted or refused synth must leave alone)."""
    out = tmp_path_factory.mktemp("earlier") / "cohort"
    generate_cohort(out, n_patients=1, n_malignant=1, seed=5, progress=False)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_non_empty_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["synth", str(out), "--patients", "1", "--malignant", "0"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0] and "--overwrite" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(SpinedxError, match="not empty"):
        generate_cohort(out, n_patients=1, n_malignant=0, progress=False)
    assert not _tmp_siblings(out)
    # a file where the folder should be is refused too
    res = CliRunner().invoke(app, ["synth", str(out / "notes.txt"), "--patients", "1", "--malignant", "0"])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_overwrite_replaces_content_and_stale_patients(earlier: Path, tmp_path: Path) -> None:
    out = _copy(earlier, tmp_path / "c")
    (out / "dicom" / "SYN0099" / "T1").mkdir(parents=True)  # a stale patient of an older, larger cohort
    (out / "dicom" / "SYN0099" / "T1" / "IM0001.dcm").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["synth", str(out), "--patients", "1", "--malignant", "0", "--seed", "6",
                                   "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["cohort.csv", "dicom", "synth.json"]
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["SYN0001"]
    assert "benign" in (out / "cohort.csv").read_text()  # the new cohort (seed 6, no malignant patient)
    assert not _tmp_siblings(out)


def _children(pid: int) -> set[int]:
    """Process ids of the direct children of ``pid`` (Linux /proc)."""
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.update(int(k) for k in (task / "children").read_text().split())
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how,code", [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupt_leaves_earlier_cohort_and_no_worker(earlier: Path, tmp_path: Path, how: str, code: int) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to the command while two
    workers render: exit 130/143 with one line, the earlier cohort byte-identical, no temporary folder, and
    every worker process gone."""
    out = _copy(earlier, tmp_path / "c")
    before = _tree(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(spinedx.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spinedx", "synth", str(out), "--patients", "6", "--malignant", "3", "--workers", "2",
         "--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        started = False
        while time.monotonic() < deadline and proc.poll() is None:
            workers |= _children(proc.pid)
            tmps = [tmp_path / n for n in _tmp_siblings(out)]
            if any(any(t.glob("dicom/*/T2/IM0001.dcm")) for t in tmps):
                started = True
                break
            time.sleep(0.2)
        assert started and proc.poll() is None, "synth did not start rendering in time"
        workers |= _children(proc.pid)
        assert len(workers) >= 2  # the two workers (and multiprocessing's helper)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion above: do not leave the command running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "━" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"nothing was written: {out} holds what it held before, unchanged" in lines[0], err
    assert "Traceback" not in err
    assert _tree(out) == before
    assert not _tmp_siblings(out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "orphaned worker processes"


def _interrupt_after_first_patient(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """The second patient's rendering raises ``exc`` (what Ctrl-C or SIGTERM raise in the main thread)."""
    import spinedx.synth.cohort as cohort_mod

    real = cohort_mod.render_patient

    def render(out_dir: str, seed: int, index: int, label: int, difficulty: str) -> dict:
        if index == 1:
            raise exc
        return real(out_dir, seed, index, label, difficulty)

    monkeypatch.setattr(cohort_mod, "render_patient", render)


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip() and "━" not in ln and not ln.startswith("synth")]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_interrupt_says_nothing_was_written_into_a_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted synth said "finished outputs are kept ... rerun the same command to resume" although it keeps
    nothing and never resumes (issue 18): it now says what exists afterwards."""
    out = tmp_path / "new"
    _interrupt_after_first_patient(monkeypatch, KeyboardInterrupt())
    res = CliRunner().invoke(app, ["synth", str(out), "--patients", "2", "--malignant", "1"])
    assert res.exit_code == 130
    line = _one_error_line(res.output)
    assert line.startswith("error: interrupted (Ctrl-C); nothing was written") and f"({out} does not exist)" in line
    assert "no temporary folder is left" in line and "does not resume" in line and "kept" not in line
    assert not out.exists() and not _tmp_siblings(out)
    (tmp_path / "empty").mkdir()
    from spinedx.fsutil import Terminated

    _interrupt_after_first_patient(monkeypatch, Terminated("terminated by signal 15"))
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "empty"), "--patients", "2", "--malignant", "1"])
    assert res.exit_code == 143
    assert f"error: terminated (SIGTERM); nothing was written ({tmp_path / 'empty'} is empty)" in res.output


def test_interrupt_after_the_swap_says_the_cohort_is_complete(earlier: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the final swap is held back until the new cohort is in place; the line says so."""
    import signal as sig

    import spinedx.fsutil as fsutil

    out = _copy(earlier, tmp_path / "c")
    real_replace = os.replace

    def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        real_replace(src, dst)
        if Path(dst) == out:  # the new cohort took the folder's name
            sig.raise_signal(sig.SIGINT)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    res = CliRunner().invoke(app, ["synth", str(out), "--patients", "1", "--malignant", "0", "--seed", "6",
                                   "--overwrite"])
    assert res.exit_code == 130
    line = _one_error_line(res.output)
    assert f"the cohort was complete before the interrupt arrived: {out} holds it" in line
    assert "benign" in (out / "cohort.csv").read_text() and (out / "synth.json").is_file()
    assert not _tmp_siblings(out)
