"""Running the app under uvicorn (``spinedx serve``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from spinedx.serve.settings import ServeSettings


def serve(settings: ServeSettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Build the app (checking the settings, loading the models once) and serve it until Ctrl-C / SIGTERM.

    Args:
        settings: what to serve.
        on_ready: called with the URL once the app is built (the CLI prints it).
    """
    import uvicorn

    from spinedx.serve.app import create_app

    log = logging.getLogger("spinedx.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    app = create_app(settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if on_ready is not None:
        on_ready(f"http://{host}:{settings.port}/")
    # uvicorn's own access log would print query strings; the app's middleware logs method, path, status.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
