"""Outputs are complete or untouched: atomic files and folders, interrupts, OS errors (spinedx.fsutil)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spinedx.fsutil import (
    Terminated,
    atomic_dir,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    describe_os_error,
    is_tmp_name,
    remove_stale_tmp,
    stop_pool,
)


def test_atomic_file_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), Terminated("sigterm")])
def test_atomic_file_untouched_on_failure(tmp_path: Path, exc: BaseException) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise exc
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_file_refuses_folder_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "a.txt", "x")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError):
        atomic_write_text(blocker / "sub" / "a.txt", "x")
    assert blocker.read_text() == "x"


def test_atomic_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "m.json", {"auc": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_swaps_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "stats").mkdir()
    with atomic_dir(out, keep=("stats",)) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # not visible before success
    assert sorted(p.name for p in out.iterdir()) == ["new.txt", "stats"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_untouched_on_interrupt(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_ctrl_c_between_the_two_renames_keeps_a_complete_folder(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C right after the earlier folder was moved aside (before the new one took its name) used to remove the
    new folder and leave the earlier one under a hidden temporary name: the output vanished. Now the interrupt
    waits for the swap, then stops the command, and the new folder is in place."""
    import spinedx.fsutil as fsutil

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real_replace = os.replace

    def replace_then_ctrl_c(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        real_replace(src, dst)
        if Path(src) == out:  # the earlier folder moved aside: the final name is empty now
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(fsutil.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_puts_the_earlier_folder_back_when_the_swap_fails(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import spinedx.fsutil as fsutil

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "stats").mkdir()
    real_replace = os.replace
    failed: list[Path] = []

    def fail_on_the_new_folder(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        if Path(dst) == out and not failed:  # the new folder's rename fails (the rollback's does not)
            failed.append(Path(src))
            raise OSError(errno.EIO, "I/O error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", fail_on_the_new_folder)
    with pytest.raises(OSError):
        with atomic_dir(out, keep=("stats",)) as tmp:
            (tmp / "new.txt").write_text("new")
    assert failed and sorted(p.name for p in out.iterdir()) == ["old.txt", "stats"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_remove_stale_tmp_only_dead_owners(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".x.npz.tmp-{dead_pid}-abcdef"
    stale.write_text("half")
    live = tmp_path / f".y.npz.tmp-{os.getppid()}-abcdef"
    live.write_text("being written")
    keep = tmp_path / "x.npz"
    keep.write_text("done")
    removed = remove_stale_tmp(tmp_path)
    assert removed == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "x.npz"])
    assert is_tmp_name(live.name) and not is_tmp_name("x.npz")


def test_remove_stale_tmp_prefix_and_own(tmp_path: Path) -> None:
    """The one rule for dead temporaries, as the run folder (one fold's prefix) and synth (its own kept) use it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    fold3 = tmp_path / f".3.tmp-{dead_pid}-abcdef"
    fold4 = tmp_path / f".4.tmp-{dead_pid}-abcdef"
    own = tmp_path / f".3.tmp-{os.getpid()}-abcdef"
    for p in (fold3, fold4, own):
        p.mkdir()
    assert remove_stale_tmp(tmp_path, ".3.tmp-", keep_own=True) == [fold3]
    assert own.is_dir() and fold4.is_dir()
    assert remove_stale_tmp(tmp_path, ".3.tmp-") == [own]  # this process's own, when the caller is not writing it
    assert remove_stale_tmp(tmp_path) == [fold4]


def test_describe_os_error_names_file_and_remedy() -> None:
    msg = describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/patches.npz"))
    assert msg.startswith("/data/out/patches.npz: ")
    assert "free some space" in msg
    assert "\n" not in msg


def _run_cli_script(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    """A tiny CLI command registered on spinedx's app, run in a subprocess with its real entry point."""
    header = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from spinedx.cli import main
        from spinedx.cli._app import command
        from spinedx.fsutil import atomic_path

        @command("fsutil-probe")
        def probe(out: Path) -> None:
    """)
    footer = textwrap.dedent("""
        sys.argv = ["spinedx", "fsutil-probe", sys.argv[1]]
        main()
    """)
    script = tmp_path / "cmd.py"
    script.write_text(header + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n" + footer)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "target.txt")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_interrupt_leaves_old_output_and_exits(tmp_path: Path, sig: int, code: int) -> None:
    target = tmp_path / "target.txt"
    target.write_text("finished earlier")
    proc = _run_cli_script(tmp_path, """
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == code
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert target.read_text() == "finished earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmd.py", "target.txt"]


def test_cli_os_error_is_one_line(tmp_path: Path) -> None:
    proc = _run_cli_script(tmp_path, """
        import errno, os
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(out))
    """)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().startswith("error: ") and "target.txt" in err and "too large" in err.lower()
    assert len(err.strip().splitlines()) == 1


def _nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_stop_pool_frees_a_manager_thread_stuck_on_half_a_result() -> None:
    """A worker killed while sending its result leaves half a message in the result pipe; the pool's manager
    thread then waited for the rest forever, and the interpreter's exit with it (extract hung after SIGTERM)."""
    import struct
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    pool = ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"))
    futures = [pool.submit(_nap, 30) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(pool._processes or {}) < 2 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    procs = list(pool._processes.values())  # type: ignore[attr-defined]
    manager = pool._executor_manager_thread  # type: ignore[attr-defined]
    writer = pool._result_queue._writer  # type: ignore[attr-defined]
    # what a torn send looks like from the reading end: a header promising 1000 bytes, then only 3 of them
    writer._send(struct.pack("!i", 1000) + b"abc")
    time.sleep(0.5)
    assert manager.is_alive()  # reading the rest of the message
    try:
        stop_pool(pool)
        assert not manager.is_alive(), "the pool's manager thread still waits: the interpreter could not exit"
    finally:
        if not writer.closed:  # on failure, free the thread so this test run can still end
            writer.close()
    assert not any(p.is_alive() for p in procs)
    assert all(f.done() for f in futures)
