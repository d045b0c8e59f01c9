"""Outputs that are complete or untouched, and interrupts that stop cleanly.

Every file or folder spinedx writes goes through this module:

* :func:`atomic_path` / :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_write_json`
  write a file into a hidden temporary sibling (``.NAME.tmp-PID-XXXX``) in the same folder and rename it over
  the final name only when writing finished. A failure or an interrupt (any exception, ``KeyboardInterrupt``
  and :class:`Terminated` included) removes the temporary file and leaves the old file byte-identical.
* :func:`atomic_dir` does the same for a whole folder: the command fills a temporary sibling folder, which
  replaces the final one on success (the two renames of the swap hold Ctrl-C and SIGTERM back, so an interrupt
  never leaves the final name empty).
* :class:`DeferredSignals` holds Ctrl-C and SIGTERM back while a few renames must happen together.
* :func:`install_signal_handlers` turns SIGTERM into a :class:`Terminated` exception in the main thread, so
  that ``kill PID`` runs the same cleanup as Ctrl-C; the CLI turns them into exit codes 143 and 130.

Only the standard library is imported here (the CLI imports this module for ``spinedx --help``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

#: Marker in the names of temporary siblings (``.patches.npz.tmp-1234-ab12cd``).
TMP_MARK = ".tmp-"


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see :func:`install_signal_handlers`).

    A ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception`` blocks (per-patient error handling,
    SimpleITK callbacks) do not swallow it.
    """

    exit_code = 143


def _raise_terminated(signum: int, frame: Any) -> None:  # noqa: ARG001 -- signal handler signature
    raise Terminated(f"terminated by signal {signum}")


def install_signal_handlers() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (SIGINT already raises ``KeyboardInterrupt``).

    Call once, from the main thread of a command-line entry point; library code never installs handlers.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # e.g. started in the background by a shell
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupt_exit_code(exc: BaseException) -> int:
    """The conventional exit code of an interrupt: 130 for SIGINT (Ctrl-C), 143 for SIGTERM."""
    return 143 if isinstance(exc, Terminated) else 130


class DeferredSignals:
    """Once armed, hold Ctrl-C and SIGTERM back until the block ends, then deliver them.

    Used around renames that must happen together (a folder's swap, ``patches.npz`` with its ``extract.json``), so
    an interrupt never lands between them. A signal's Python handler always runs in the main thread; replacing it
    there is what keeps the interrupt out of the block (blocking the signal in one thread would not). Elsewhere
    (a server's worker thread) it does nothing.

    Example::

        with DeferredSignals() as hold:
            hold.arm()
            os.replace(a_tmp, a)
            os.replace(b_tmp, b)      # Ctrl-C pressed above is raised here, after both renames
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}
        self._got: list[int] = []

    def arm(self) -> None:
        """Start holding the signals back (from the main thread; a no-op elsewhere)."""
        if threading.current_thread() is threading.main_thread() and not self._old:
            self._old = {s: signal.signal(s, lambda signum, frame: self._got.append(signum)) for s in self._SIGNALS}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        old, self._old = self._old, {}
        for s, handler in old.items():
            signal.signal(s, handler)
        if self._got:
            handler = old[self._got[0]]
            if callable(handler):
                handler(self._got[0], None)  # raises KeyboardInterrupt / Terminated now that the renames are done
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), self._got[0])


def tmp_sibling(path: str | Path) -> Path:
    """A fresh hidden name beside ``path`` for writing it: ``.NAME.tmp-PID-RANDOM`` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}"


def is_tmp_name(name: str) -> bool:
    """True for names made by :func:`tmp_sibling`."""
    return name.startswith(".") and TMP_MARK in name


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a file system that cannot is skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_parent(path: str | Path) -> Path:
    """Create the parent folder of ``path``; refuse (``NotADirectoryError``) when a file stands in the way."""
    path = Path(path)
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file stands where a folder is needed", str(p))
        if p.is_dir():
            break
    parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; it replaces ``path`` when the block ends without an exception.

    On any exception (interrupts included) the temporary file is removed and ``path`` is left as it was.
    The file is flushed to disk before the rename, so a crash never leaves a truncated ``path``.

    Example::

        with atomic_path(out / "patches.npz") as tmp:
            np.savez(tmp, x=x)          # np.savez would add ".npz" to a name without it: pass a file object
    """
    path = check_parent(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder stands where a file is to be written", str(path))
    tmp = tmp_sibling(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, default: Any = None) -> Path:
    """Write ``obj`` as JSON (NaN refused: it is not JSON) to ``path`` atomically, with a final newline."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=default, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; it replaces the folder ``path`` when the block succeeds.

    On success the old folder (if any) is moved aside, the new one renamed into place (Ctrl-C and SIGTERM held
    back for these two renames, then delivered) and the old one removed; on any exception (interrupts included)
    the temporary folder is removed and ``path`` is left untouched.

    Args:
        path: the final folder.
        keep: names of entries of the old folder that are moved into the new one before the swap when the
            new one lacks them (e.g. a run folder's ``stats/`` when only the model outputs are rebuilt).

    Raises:
        NotADirectoryError: ``path`` exists and is a file.
    """
    path = check_parent(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    tmp = tmp_sibling(path)
    tmp.mkdir()
    old: Path | None = None
    kept: list[str] = []
    placed = False
    try:
        yield tmp
        # Between the two renames the final name is empty: an interrupt there used to remove the new folder and
        # leave the earlier one under a hidden temporary name, to be deleted as a leftover by the next run.
        with DeferredSignals() as hold:
            hold.arm()
            try:
                if path.exists():
                    for name in keep:
                        if (path / name).exists() and not (tmp / name).exists():
                            os.replace(path / name, tmp / name)
                            kept.append(name)
                    old = tmp_sibling(path)
                    os.replace(path, old)
                os.replace(tmp, path)
                placed = True
            except BaseException:
                if old is not None and not path.exists():
                    os.replace(old, path)  # put the earlier folder back
                    old = None
                for name in kept if path.is_dir() else ():
                    with contextlib.suppress(OSError):
                        os.replace(tmp / name, path / name)
                raise
        fsync_dir(path.parent)
    except BaseException:
        if not placed:
            _remove(tmp)
        elif old is not None:
            _remove(old)  # the new folder is in place (an interrupt delivered after the swap)
        raise
    if old is not None:
        _remove(old)


def remove_stale_tmp(folder: str | Path, prefix: str = ".", *, keep_own: bool = False) -> list[Path]:
    """Remove temporary siblings that a killed process (SIGKILL, power loss) left in ``folder``.

    Only names made by :func:`tmp_sibling` (and starting with ``prefix``) whose process no longer runs are removed:
    the one place this rule lives (the run folder's fold temporaries and synth's output use it too).

    Args:
        folder: where the temporaries lie.
        prefix: only names starting with it (e.g. ``".3.tmp-"``: fold 3's).
        keep_own: keep this process's own temporaries (a caller that may be writing one right now).

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        if not is_tmp_name(p.name) or not p.name.startswith(prefix):
            continue
        try:
            pid = int(p.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() and keep_own:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        _remove(p)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: What to do about OS errors, by errno (used by the CLI's one-line messages).
OS_ERROR_HINTS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device; free some space or choose another output folder",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another output folder",
    errno.EFBIG: "file too large for this file system; choose another output folder",
    errno.EACCES: "permission denied; check the file's permissions or choose another path",
    errno.EPERM: "operation not permitted; check the file's permissions or choose another path",
    errno.EROFS: "read-only file system; choose another output folder",
    errno.ENOTDIR: "a file stands where a folder is needed; remove it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed; choose another path",
    errno.EEXIST: "already exists; remove it or choose another path",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop); fix the link",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer workers",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error: the file, what happened and what to do."""
    name = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        name = f"{name} -> {exc.filename2}"
    what = exc.strerror or str(exc)
    hint = OS_ERROR_HINTS.get(exc.errno or -1)
    text = f"{what}; {hint}" if hint and not hint.startswith(what.lower()) else (hint or what)
    return f"{name}: {text}" if name else text


def stop_pool(pool: Any) -> None:
    """Cancel what a :class:`concurrent.futures.ProcessPoolExecutor` has queued and kill its workers now.

    An interrupt must not wait for the running work (a patient being extracted, a fold being trained): the
    workers are terminated, then killed if they do not stop within 3 s, and joined, so none is left behind;
    then the pool's manager thread is let go (see below), so the process can exit.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())
    # shutdown() forgets these: keep them for the end
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(timeout=3)
            if p.is_alive():
                p.kill()
                p.join(timeout=3)
    # A worker killed while it sent a result leaves half a message in the result pipe: the pool's manager thread
    # then waits for the rest forever, and so does the interpreter's exit, which joins that thread. With every
    # worker gone, closing our own copy of the pipe's writing end turns that wait into an end of file.
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()
    if manager is not None:
        with contextlib.suppress(Exception):
            manager.join(timeout=10)
