"""Command-line interface: ``spinedx <command>``. See ``spinedx --help``."""

from __future__ import annotations

from spinedx.cli._app import app

# Each module registers its commands on ``app``.
from spinedx.cli import synth as _synth  # noqa: F401,E402
from spinedx.cli import extract as _extract  # noqa: F401,E402
from spinedx.cli import cv as _cv  # noqa: F401,E402
from spinedx.cli import stats as _stats  # noqa: F401,E402
from spinedx.cli import predict as _predict  # noqa: F401,E402
from spinedx.cli import report as _report  # noqa: F401,E402
from spinedx.cli import demo as _demo  # noqa: F401,E402
from spinedx.cli import index as _index  # noqa: F401,E402
from spinedx.cli import weights as _weights  # noqa: F401,E402
from spinedx.cli import serve as _serve  # noqa: F401,E402
from spinedx.cli import export as _export  # noqa: F401,E402
from spinedx.cli import readers as _readers  # noqa: F401,E402


def main() -> None:
    """Console-script entry point: SIGTERM stops a command like Ctrl-C (exit 143 instead of 130)."""
    from spinedx.fsutil import install_signal_handlers

    install_signal_handlers()
    app()


__all__ = ["app", "main"]
