"""The FastAPI application, built by a factory so that every test and every server process makes its own.

Layout after FastAPI's "bigger applications": one router per resource (``routers/``), the shared state behind a
dependency (``deps.get_state``), settings in one typed object (:class:`ServeSettings`). Errors map onto HTTP:
no such case or file 404, invalid input 422 (the CLI's message), a stale version or no model 409, unreadable
images 422. An error body names files relative to the served roots (:func:`public_message`): the message of a
file under the manifest's folder names it as the manifest does, and no absolute server path leaves the server.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import ImageReadError, PreprocessError, SpinedxError
from spinedx.serve.datastore import Conflict, InvalidInput, NotFound
from spinedx.serve.security import HostPolicy, SecurityMiddleware
from spinedx.serve.settings import ServeSettings
from spinedx.serve.state import AppState, build_state

_STATUS: list[tuple[type[SpinedxError], int]] = [
    (NotFound, 404), (Conflict, 409), (InvalidInput, 422), (PreprocessError, 422), (ImageReadError, 422),
]


# an absolute POSIX path not inside a URL or a word ("http://h/x", "T1/T2" stay): up to a space, quote or bracket
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"`,;:()\[\]{}<>|]+")


def public_message(text: str, roots: list[tuple[str, str]]) -> str:
    """``text`` with the server's absolute paths taken out.

    Args:
        text: an error message.
        roots: (absolute folder, name to show for it) pairs; a path under a folder is shown relative to it, after
            the name (an empty name: relative to the folder itself). Any other absolute path is shown by its last
            component only.
    """
    for folder, name in sorted(roots, key=lambda r: len(r[0]), reverse=True):
        folder = folder.rstrip(os.sep)
        if not folder:
            continue
        shown = f"{name}/" if name else ""
        text = text.replace(folder + os.sep, shown)
        text = re.sub(re.escape(folder) + r"(?![^\s'\"`,;:()\[\]{}<>|])", name or ".", text)
    return _ABS_PATH.sub(lambda m: Path(m.group(0)).name or "/", text)


def _public_roots(settings: ServeSettings, state: AppState) -> list[tuple[str, str]]:
    """The folders an error message may name, each as its absolute and resolved forms, with the name to show."""
    pairs: list[tuple[Path, str]] = [(state.store.manifest.parent, "")]
    pairs += [(root, root.name) for root in state.store.roots[1:]]
    if settings.model is not None:
        pairs.append((Path(settings.model), Path(settings.model).name))
    pairs += [(Path(tempfile.gettempdir()), "tmp"), (Path.home(), "~"), (Path.cwd(), ".")]
    out: list[tuple[str, str]] = []
    for path, name in pairs:
        for form in {os.path.abspath(path), os.path.realpath(path)}:
            if form != os.sep:
                out.append((form, name))
    return out


def create_app(settings: ServeSettings, state: AppState | None = None) -> FastAPI:
    """Build the workstation app.

    Args:
        settings: what to serve (checked: a non-loopback host without a token is refused); its tokens, host names and
            body limit configure :class:`spinedx.serve.security.SecurityMiddleware`.
        state: an already built state (tests share one between apps); None builds it from ``settings``.

    Raises:
        SpinedxError: unsafe or unusable settings, an unreadable manifest or run.
    """
    state = state if state is not None else build_state(settings)
    app = FastAPI(title="spinedx workstation", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None if settings.study is not None else "/openapi.json",
                  description=f"Index, view, annotate and predict sagittal spine MRI cases ({RESEARCH_USE_ONLY}).")
    app.state.ws = state
    roots = _public_roots(settings, state)

    @app.exception_handler(SpinedxError)
    async def _spinedx_error(request: Request, exc: SpinedxError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": public_message(exc.one_line(), roots)}, status_code=status)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Any) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # a query or path parameter FastAPI could not convert (k=abc): one line naming it, like every refusal
        parts = [f"[{(e.get('loc') or ('', '?'))[-1]}] {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(dict.fromkeys(parts))}, status_code=422)

    if settings.study is not None:
        # reader mode: the reader page and API only; the annotation API and page (labels, features) are not mounted
        from spinedx.serve.routers import reading

        reading.mount(app, settings, state)
    else:
        from spinedx.serve.routers import cases, health, images, page, predict

        app.include_router(health.router)
        app.include_router(cases.router)
        app.include_router(images.router)
        app.include_router(predict.router)
        app.include_router(page.router)
    app.add_middleware(SecurityMiddleware, users=settings.users(), max_body_bytes=settings.max_body_bytes,
                       hosts=HostPolicy(settings.own_hosts(), settings.extra_hosts(), settings.port))
    return app
