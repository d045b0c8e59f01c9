"""Issue 8 on ``spinedx extract``: interrupts stop it, outputs are complete or untouched, messages name the problem.

Every test that runs a failing, interrupted or all-failed extraction first writes a good ``patches.npz`` and
``extract.json`` into the output folder, and checks they are byte-identical afterwards with no temporary file.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dicomfixtures import write_image_series
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.cohort import load_manifest
from spinedx.fsutil import Terminated
from spinedx.preprocess import ExtractConfig, extract_case, extract_cohort, registration

from .phantom import centered_origin, sample

REPO = Path(__file__).resolve().parents[2]
HEADER = "patient_id,label,t1,t2,lesion_slices,box"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """12 patients: the same phantom T1/T2 DICOM pair (one exam, T1 500/15, T2 3200/90), T1 moved 2 mm."""
    root = tmp_path_factory.mktemp("trust")
    sh2, sp2 = (9, 110, 90), (0.8, 0.8, 4.0)
    t2 = sample(sh2, sp2, centered_origin(sh2, sp2))
    sh1, sp1 = (8, 90, 70), (1.0, 1.1, 4.4)
    t1 = sample(sh1, sp1, centered_origin(sh1, sp1, offset=(1.0, 0, 0)), contrast="t1", shift=(0.0, 2.0, 0.0))
    ctr = t2.physical_to_index(np.zeros((1, 3)))[0]
    box = f'"{int(ctr[0] - 20)},{int(ctr[1] - 16)},{int(ctr[0] + 20)},{int(ctr[1] + 16)}"'
    rows = [HEADER]
    for p in range(12):
        pid = f"P{p:02d}"
        exam = {"study_uid": f"1.2.826.0.1.3680043.8.498.9{p}1", "frame_uid": f"1.2.826.0.1.3680043.8.498.9{p}2",
                "patient_id": pid}
        write_image_series(root / pid / "t2", t2, **exam)
        write_image_series(root / pid / "t1", t1, repetition_time=500.0, echo_time=15.0, series_number=2, **exam)
        rows.append(f"{pid},{'malignant' if p % 3 == 0 else 'benign'},{pid}/t1,{pid}/t2,3;4,{box}")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    (root / "two.csv").write_text("\n".join(rows[:3]) + "\n")
    # the signal tests need a run that outlasts the workers' start on a fast machine: the same pairs, ten times over
    long = [HEADER] + [f"Q{r:03d}," + row.split(",", 1)[1] for r, row in enumerate(rows[1:] * 10)]
    (root / "long.csv").write_text("\n".join(long) + "\n")
    return root


@pytest.fixture()
def earlier(pairs, tmp_path):
    """An output folder holding a good earlier extraction; returns (folder, {name: bytes})."""
    out = tmp_path / "out"
    extract_cohort(pairs / "two.csv", out, ExtractConfig(register=False), progress=False)
    return out, {p.name: p.read_bytes() for p in out.iterdir()}


def _untouched(out: Path, before: dict[str, bytes]) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(before), "a temporary file was left behind"
    for name, data in before.items():
        assert (out / name).read_bytes() == data, f"{name} changed"


def _cli(*args: str):
    return CliRunner().invoke(app, ["extract", *args, "--no-progress"])


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


# -- exceptions inside SimpleITK's registration callback ------------------------------------------------------
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Terminated("terminated by signal 15"), ValueError("boom")])
def test_exception_in_the_registration_callback_is_re_raised_not_a_registration_failure(pairs, monkeypatch, exc):
    calls = [0]

    def interrupted(counter):
        calls[0] += 1
        if calls[0] == 3:
            raise exc
        counter[0] += 1

    monkeypatch.setattr(registration, "_on_iteration", interrupted)
    case = load_manifest(pairs / "two.csv").cases[0]
    with pytest.raises(type(exc)):
        extract_case(case, ExtractConfig())
    assert calls[0] == 3


def test_callback_error_text_fallback():
    text = ("Exception thrown in SimpleITK ImageRegistrationMethod_Execute: sitk::ERROR: There was an error executing "
            "the Python Callable.Traceback (most recent call last): ... KeyboardInterrupt")
    assert isinstance(registration._callback_error(text), KeyboardInterrupt)
    assert isinstance(registration._callback_error(text.replace("KeyboardInterrupt", "spinedx.fsutil.Terminated: x")),
                      Terminated)
    assert registration._callback_error("ITK ERROR: too few samples") is None


def test_ctrl_c_during_registration_exits_130_and_keeps_earlier_outputs(pairs, earlier, monkeypatch):
    out, before = earlier

    def interrupted(counter):
        raise KeyboardInterrupt

    monkeypatch.setattr(registration, "_on_iteration", interrupted)
    res = _cli(str(pairs / "two.csv"), "--out", str(out), "--overwrite")  # other settings (registration) than `earlier`
    assert res.exit_code == 130
    assert "interrupted (Ctrl-C)" in _one_error_line(res)
    _untouched(out, before)


# -- SIGINT / SIGTERM to `spinedx extract --workers 2` -------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def _descendants(root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            kids.setdefault(int(st[1]), []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper does not count: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _cmdline(pid: int) -> str:
    """A process's command line; "" once it has gone (a short-lived helper, e.g. ldconfig run by ctypes, can exit
    between listing /proc and reading it)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float:
    st = _stat(pid)
    return 0.0 if st is None else (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,to_group,what", [
    (signal.SIGINT, 130, True, "interrupted (Ctrl-C)"),    # a terminal's Ctrl-C reaches the whole process group
    (signal.SIGTERM, 143, False, "terminated (SIGTERM)"),  # kill PID reaches the parent only
])
def test_signal_stops_extract_with_workers_and_leaves_no_process(pairs, earlier, sig, code, to_group, what):
    out, before = earlier
    # PYTHONFAULTHANDLER: should the command ever hang after the signal, SIGABRT below prints every thread's stack
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([sys.executable, "-m", "spinedx", "extract", str(pairs / "long.csv"), "--out", str(out),
                             "--workers", "2", "--no-progress", "--overwrite"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    seen: set[int] = set()
    try:
        # Signal it mid-run: once both workers have imported everything and are registering patients.
        busy: list[int] = []
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= _descendants(proc.pid)
            workers = [p for p in seen if "spawn_main" in _cmdline(p)]
            busy = [p for p in workers if _cpu_seconds(p) > 2.0]
            if len(busy) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None and len(busy) >= 2, "the run ended before it could be interrupted"
        seen |= _descendants(proc.pid)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # the faulthandler dump names where it hangs
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"still running 60 s after the signal:\n{err.decode(errors='replace')}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err.decode()
    lines = [ln for ln in err.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {what}"), lines
    # no worker (nor multiprocessing helper) outlives the command; give the re-parented ones a moment to exit
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen and not [p for p in seen if _alive(p)]
    _untouched(out, before)


# -- outputs complete or untouched ------------------------------------------------------------------------------
def test_all_patients_failed_writes_nothing(pairs, earlier, tmp_path):
    out, before = earlier
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\nP00,benign,{pairs}/P00/t1,{pairs}/P00/t2,3,\"500,500,560,560\"\n"
                   f"P01,benign,{pairs}/P01/t1,{pairs}/nowhere,3,\"5,5,20,20\"\n")
    res = _cli(str(bad), "--out", str(out), "--no-register", "--overwrite")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 3 and "P00" in lines[0] and "outside the T2 image" in lines[0] and "P01" in lines[1]
    assert (f"all 2 patient(s) failed, so nothing was written: the patches already in {out} (2 patient(s), "
            "4 sample(s)) were left as they were") in lines[2]
    _untouched(out, before)
    res = _cli(str(bad), "--out", str(tmp_path / "new"), "--no-register")  # no earlier result: said so
    assert res.exit_code == 2 and f"nothing was written ({tmp_path / 'new'} holds no earlier patches)" in res.stderr


def test_manifest_without_box_column_is_one_line_and_writes_nothing(pairs, earlier, tmp_path):
    out, before = earlier
    no_box = tmp_path / "nobox.csv"
    no_box.write_text("\n".join(",".join(r.split(",")[:5]) for r in (pairs / "cohort.csv").read_text().splitlines())
                      + "\n")
    line = _one_error_line(_cli(str(no_box), "--out", str(out)))
    assert "[box] required column missing" in line and "(0,0,0,0)" not in line
    _untouched(out, before)


def test_semicolon_separated_manifest_is_named(pairs, earlier, tmp_path):
    out, before = earlier
    semi = tmp_path / "semi.csv"
    semi.write_text((pairs / "two.csv").read_text().replace(",", ";").replace('"', ""))
    line = _one_error_line(_cli(str(semi), "--out", str(out)))
    assert "looks semicolon-separated" in line and "quote" not in line
    _untouched(out, before)


def test_out_naming_an_existing_file_is_one_line(pairs, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    line = _one_error_line(_cli(str(pairs / "two.csv"), "--out", str(target)))
    assert str(target) in line and "is a file, not a folder" in line
    assert target.read_text() == "keep me"


def test_missing_image_and_symlink_loop_stay_per_patient_failures(pairs, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    m = tmp_path / "m.csv"
    rows = (pairs / "two.csv").read_text().splitlines()
    m.write_text("\n".join([rows[0], rows[1].replace("P00/t1", f"{tmp_path}/loop").replace("P00/t2", f"{pairs}/P00/t2"),
                            rows[2].replace("P01/t1", f"{pairs}/P01/t1").replace("P01/t2", f"{tmp_path}/gone")]) + "\n")
    res = _cli(str(m), "--out", str(tmp_path / "o"), "--no-register")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert "P00 t1" in lines[0] and "symbolic link loop" in lines[0]
    assert "P01 t2" in lines[1] and "no such file" in lines[1]


def _limited_run(limit_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_file_too_large_is_one_line_and_leaves_no_temporary_file(pairs, earlier):
    """RLIMIT_FSIZE makes writing patches.npz fail with EFBIG, as a full or size-limited disk would."""
    out, before = earlier
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "spinedx", "extract", str(pairs / "cohort.csv"), "--out", str(out),
                           "--no-register", "--no-progress", "--overwrite"], env=env, capture_output=True, text=True,
                          timeout=300, check=False, preexec_fn=lambda: _limited_run(200_000))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "patches.npz" in lines[0] and "too large" in lines[0].lower(), lines
    _untouched(out, before)


# -- outputs never shrink or vanish without the user saying so (issue 18) -----------------------------------------
def test_patches_of_another_manifest_or_setting_are_refused_without_overwrite(pairs, earlier):
    out, before = earlier  # two.csv, no registration
    line = _one_error_line(_cli(str(pairs / "cohort.csv"), "--out", str(out), "--no-register"))
    assert line.startswith(f"error: {out}: this folder already holds patches made from another manifest")
    assert f"manifest: {pairs / 'two.csv'} there, {pairs / 'cohort.csv'} now" in line and "--overwrite" in line
    _untouched(out, before)
    line = _one_error_line(_cli(str(pairs / "two.csv"), "--out", str(out), "--no-register", "--patch-size", "32"))
    assert "(patch_size: 64 there, 32 now)" in line
    _untouched(out, before)
    res = _cli(str(pairs / "two.csv"), "--out", str(out), "--no-register", "--patch-size", "32", "--overwrite")
    assert res.exit_code == 0, res.output
    assert f"replaced the earlier patches in {out} (2 patient(s), 4 sample(s))" in res.stdout
    assert np.load(out / "patches.npz")["x"].shape == (4, 6, 32, 32)


def test_the_same_job_reruns_without_overwrite(pairs, earlier):
    out, _ = earlier
    res = _cli(str(pairs / "two.csv"), "--out", str(out), "--no-register")
    assert res.exit_code == 0, res.output
    assert "replaced the earlier patches" in res.stdout and not res.stderr


def test_failed_patients_never_replace_a_more_complete_result(pairs, tmp_path):
    """The issue's probe: a complete 12-patient result, then the same command while 7 patients' images are
    gone. It replaced the result (24 samples -> 10); now the result is kept, even with --overwrite."""
    import shutil

    root = shutil.copytree(pairs, tmp_path / "c", ignore=shutil.ignore_patterns("long.csv"))
    out = tmp_path / "out"
    res = _cli(str(root / "cohort.csv"), "--out", str(out), "--no-register")
    assert res.exit_code == 0, res.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    gone = [f"P{p:02d}" for p in range(7)]
    for pid in gone:
        shutil.rmtree(root / pid / "t2")
    for extra in ([], ["--overwrite"]):
        res = _cli(str(root / "cohort.csv"), "--out", str(out), "--no-register", *extra)
        assert res.exit_code == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 8 and [ln.split()[1].rstrip(":") for ln in lines[:7]] == gone
        assert lines[7] == (f"error: {out}: 7 of 12 patient(s) failed, so this run was not written: the patches "
                            "already here (12 patient(s), 24 sample(s)) hold 7 of the failed patients (P00, P01, P02, "
                            "P03, P04, ...) and were kept as they were; fix the failures and rerun, or choose a new "
                            "--out folder to keep a partial result")
        _untouched(out, before)
    # into a new folder the partial result is written, as before (exit 2, each failure named)
    res = _cli(str(root / "cohort.csv"), "--out", str(tmp_path / "partial"), "--no-register")
    assert res.exit_code == 2 and "extracted 5 patient(s), 10 sample(s)" in res.stdout
    # failures the earlier result does not hold do not stop the replacement (two.csv's result: P00 and P01)
    small = tmp_path / "small"
    assert _cli(str(pairs / "two.csv"), "--out", str(small), "--no-register").exit_code == 0
    rows = (root / "cohort.csv").read_text().splitlines()
    later = [rows[0], *[r.replace(f"P{p:02d}/", f"{pairs}/P{p:02d}/") for p, r in enumerate(rows[1:3])], rows[7]]
    (root / "later.csv").write_text("\n".join(later) + "\n")  # P00, P01 (images intact) and P06 (t2 gone)
    res = _cli(str(root / "later.csv"), "--out", str(small), "--no-register", "--overwrite")
    assert res.exit_code == 2 and "extracted 2 patient(s)" in res.stdout and "P06" in res.stderr
    assert "replaced the earlier patches" in res.stdout


def test_patches_without_extract_json_are_refused_without_overwrite(pairs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "patches.npz", x=np.zeros((1, 6, 8, 8), np.float32))  # made by hand, say
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = _one_error_line(_cli(str(pairs / "two.csv"), "--out", str(out), "--no-register"))
    assert f"{out}: holds patches.npz without extract.json" in line and "--overwrite" in line
    _untouched(out, before)
    (out / "extract.json").write_text("{not json")
    line = _one_error_line(_cli(str(pairs / "two.csv"), "--out", str(out), "--no-register"))
    assert "holds an extract.json that cannot be read (JSONDecodeError" in line
    assert _cli(str(pairs / "two.csv"), "--out", str(out), "--no-register", "--overwrite").exit_code == 0
    assert np.load(out / "patches.npz")["x"].shape == (4, 6, 64, 64)
