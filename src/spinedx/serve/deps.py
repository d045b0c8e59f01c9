"""FastAPI dependencies: the app's state."""

from __future__ import annotations

from fastapi import Request

from spinedx.serve.state import AppState


def get_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving this request."""
    return request.app.state.ws
