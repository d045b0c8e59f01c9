"""The page (``/``), its static files (``/static/...``), a favicon, and ``/docs`` (the OpenAPI description rendered
by a local script: Swagger UI would load its code from a CDN, which the Content-Security-Policy forbids)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from spinedx.serve.datastore import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}

router = APIRouter(include_in_schema=False)


def static_file(name: str) -> FileResponse:
    """A file of the package's ``static/`` folder; anything resolving outside it (``..``, absolute paths,
    symlinks) is 404."""
    root = Path(os.path.realpath(STATIC))
    if not name or name.startswith(("/", "\\")) or "\x00" in name:
        raise NotFound("no such file", where="static")
    real = Path(os.path.realpath(root / name))
    if root not in real.parents or not real.is_file() or real.suffix not in _TYPES:
        raise NotFound("no such file", where="static")
    return FileResponse(real, media_type=_TYPES[real.suffix])


@router.get("/")
def index() -> FileResponse:
    return static_file("index.html")


@router.get("/docs")
def docs() -> FileResponse:
    return static_file("docs.html")


@router.get("/favicon.ico")
def favicon() -> Response:
    return static_file("favicon.svg")


@router.get("/static/{name:path}")
def static(name: str) -> FileResponse:
    return static_file(name)
