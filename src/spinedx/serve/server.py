"""Running the app under uvicorn (``spinedx serve``).

The port is bound before anything is printed or loaded: a port in use is one :class:`SpinedxError` naming it (and
``--port``), never a URL printed for a server that then fails to start while another program answers there. uvicorn
serves on that very socket, so no other program can take the port in between. Every log line goes through
:class:`spinedx.serve.logsafe.SafeFormatter` (control characters escaped, patient identifiers replaced by case
keys), Python warnings included. With ``ssl_certfile`` the server speaks HTTPS (uvicorn's TLS) and prints an
``https://`` URL. Cases whose images cannot be shown are counted in one warning at start (the page lists each one
with its reason).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from spinedx.errors import SpinedxError
from spinedx.serve.settings import ServeSettings

if TYPE_CHECKING:
    from spinedx.serve.datastore import LocalDatastore

config_backlog = 2048  # uvicorn's default backlog


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (not yet listening), as uvicorn would bind it.

    Raises:
        SpinedxError: the port is in use or not allowed, or the host is not an address of this machine.
    """
    addr = host.strip("[]")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as uvicorn: a port left in TIME_WAIT by a server just stopped can be bound again; a listening one cannot
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SpinedxError(f"port {port} on {host} is already in use (another spinedx serve or another program "
                               f"listens there); stop that program, or choose another port with --port (e.g. --port "
                               f"{port + 1 if port < 65535 else 8765}, or --port 0 for any free port)",
                               where="--port") from None
        if exc.errno == errno.EACCES:
            raise SpinedxError(f"no permission to listen on port {port} (ports below 1024 need privileges); choose "
                               "another port with --port", where="--port") from None
        if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            raise SpinedxError(f"{host} is not an address of this machine; give one of its addresses with --host "
                               "(default 127.0.0.1)", where="--host") from None
        raise SpinedxError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port",
                           where="--port") from None
    return sock


def _configure_log() -> None:
    from spinedx.serve.logsafe import SafeFormatter

    log = logging.getLogger("spinedx.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    # warnings (a reader's ImageReadWarning names a file, which may lie in a patient's folder) become log records
    # of "py.warnings", written through the same formatter (uvicorn_log_config)
    logging.captureWarnings(True)


def _warn_unreadable_cases(store: LocalDatastore) -> None:
    """One log line counting the cases whose images cannot be shown, with the commonest reason (no identifiers)."""
    problems = store.image_problems()
    if not problems:
        return
    from collections import Counter

    reason, n = Counter(problems.values()).most_common(1)[0]
    total = len(store.cohort.cases)
    logging.getLogger("spinedx.serve").warning(
        "warning: %d of %d cases cannot be shown (the page lists each with its reason); %s: %s",
        len(problems), total, "all of them" if n == len(problems) else f"{n} of them", reason)


def freeze_loaded_objects() -> None:
    """Collect the garbage of start-up, then keep every object alive now (the fold models: hundreds of thousands
    of Python objects) out of the garbage collector's full passes (``gc.freeze``), one of which, falling inside a
    request, took 0.6 s. For a server process: what is frozen is never collected, so a process that builds and
    drops apps (the tests) must not call it."""
    import gc

    gc.collect()
    gc.freeze()


def serve(settings: ServeSettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Check the settings, bind the port, build the app (loading the models once) and serve it until Ctrl-C /
    SIGTERM (which, once the server has stopped, are raised again as ``KeyboardInterrupt`` / ``Terminated`` by the
    handlers in place, ``spinedx.fsutil.install_signal_handlers`` for the CLI).

    Args:
        settings: what to serve.
        on_ready: called with the URL once the port is bound and the app is built (the CLI prints it).

    Raises:
        SpinedxError: unsafe or unusable settings, a port in use, an unreadable manifest or run.
    """
    import uvicorn

    from spinedx.serve.app import create_app
    from spinedx.serve.logsafe import uvicorn_log_config

    _configure_log()
    settings.check()
    sock = bind_socket(settings.host, settings.port)
    try:
        app = create_app(settings)
        freeze_loaded_objects()
        if settings.study is None:
            _warn_unreadable_cases(app.state.ws.store)
        port = sock.getsockname()[1]  # the one chosen for --port 0
        host = f"[{settings.host.strip('[]')}]" if ":" in settings.host else settings.host
        # listening now, so a request sent as soon as the URL is printed waits for uvicorn instead of being refused
        sock.listen(config_backlog)
        if on_ready is not None:
            on_ready(f"{'https' if settings.tls else 'http'}://{host}:{port}/")
        # uvicorn's own access log would print query strings; the app's middleware logs method, path, status.
        config = uvicorn.Config(
            app, host=settings.host, port=port, log_level="warning", access_log=False, log_config=uvicorn_log_config(),
            ssl_certfile=None if settings.ssl_certfile is None else str(settings.ssl_certfile),
            ssl_keyfile=None if settings.ssl_keyfile is None else str(settings.ssl_keyfile))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
