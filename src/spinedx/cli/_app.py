"""The Typer application and the error handling every command shares.

Commands live one module per command group (``cli/extract.py``, ``cli/synth.py``, ...), so
that each stays a thin layer over the Python API and heavy imports (torch, SimpleITK) happen
inside the command, keeping ``spinedx --help`` instant.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from spinedx.errors import SpinedxError
from spinedx.fsutil import Terminated, describe_os_error, interrupt_exit_code

app = typer.Typer(
    name="spinedx",
    help="Benign vs malignant vertebral fracture decision support on MRI (research use only).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Errors caused by the user's input or the machine: one line, exit code 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (SpinedxError, OSError)


def fail(message: str, code: int = 2) -> None:
    """Print one ``error:`` line on stderr and exit with ``code``."""
    typer.echo("error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(code)


def command(*args: Any, target: typer.Typer | None = None, interrupted: str | None = None,
            **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like ``app.command`` (or ``target.command`` for a sub-group such as ``spinedx readers``) but turns user errors
    into one line and exit code 2, Ctrl-C into 130 and SIGTERM into 143.

    Args:
        target: the Typer app to register on (default: the top-level ``spinedx`` app).
        interrupted: what an interrupt leaves behind, for the one line (default: the resumable commands' rule).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except SpinedxError as exc:
                fail(exc.one_line(), exc.exit_code)
            except (KeyboardInterrupt, Terminated) as exc:
                # Outputs are written to temporary siblings (spinedx.fsutil), so nothing half-written stays.
                what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
                fail(f"{what}; " + (interrupted or "finished outputs are kept, unfinished ones were removed: rerun "
                                    "the same command to resume"), interrupt_exit_code(exc))
            except BrokenPipeError:
                # the reader of our output went away (`spinedx ... | head -1`): nothing to tell it, no error line;
                # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again (Python docs,
                # "Note on SIGPIPE")
                with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(1) from None
            except OSError as exc:
                fail(describe_os_error(exc))

        (target or app).command(*args, **kwargs)(wrapper)
        return fn

    return deco


@app.command()
def version() -> None:
    """Print the spinedx version and the versions of the libraries that shape results."""
    from spinedx.provenance import package_versions

    for name, ver in package_versions().items():
        typer.echo(f"{name}: {ver}")
