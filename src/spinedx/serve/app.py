"""The FastAPI application, built by a factory so that every test and every server process makes its own.

Layout after FastAPI's "bigger applications": one router per resource (``routers/``), the shared state behind a
dependency (``deps.get_state``), settings in one typed object (:class:`ServeSettings`). Errors map onto HTTP:
no such case or file 404, invalid input 422 (the CLI's message), a stale version or no model 409, unreadable
images 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import ImageReadError, PreprocessError, SpinedxError
from spinedx.serve.datastore import Conflict, InvalidInput, NotFound
from spinedx.serve.security import SecurityMiddleware
from spinedx.serve.settings import ServeSettings
from spinedx.serve.state import AppState, build_state

_STATUS: list[tuple[type[SpinedxError], int]] = [
    (NotFound, 404), (Conflict, 409), (InvalidInput, 422), (PreprocessError, 422), (ImageReadError, 422),
]


def create_app(settings: ServeSettings, state: AppState | None = None) -> FastAPI:
    """Build the workstation app.

    Args:
        settings: what to serve (checked: a non-loopback host without a token is refused).
        state: an already built state (tests share one between apps); None builds it from ``settings``.

    Raises:
        SpinedxError: unsafe or unusable settings, an unreadable manifest or run.
    """
    state = state if state is not None else build_state(settings)
    app = FastAPI(title="spinedx workstation", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None if settings.study is not None else "/openapi.json",
                  description=f"Index, view, annotate and predict sagittal spine MRI cases ({RESEARCH_USE_ONLY}).")
    app.state.ws = state

    @app.exception_handler(SpinedxError)
    async def _spinedx_error(request: Request, exc: SpinedxError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": exc.one_line()}, status_code=status)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Any) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

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
    app.add_middleware(SecurityMiddleware, token=settings.token, max_body_bytes=settings.max_body_bytes)
    return app
