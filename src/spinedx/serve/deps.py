"""FastAPI dependencies: the app's state, the user, a case key resolved to its manifest row."""

from __future__ import annotations

from fastapi import Request

from spinedx.serve.settings import LOCAL_USER
from spinedx.serve.state import AppState


def get_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving this request."""
    return request.app.state.ws


def get_user(request: Request) -> str:
    """Who sends the request: the name of the bearer token (``spinedx.serve.security``); ``local`` without tokens."""
    return str(getattr(request.state, "user", LOCAL_USER))


def patient_of(request: Request, case: str) -> str:
    """The ``patient_id`` of the case key in the URL (404 for anything else, a patient identifier included)."""
    return get_state(request).store.patient_of(case)
