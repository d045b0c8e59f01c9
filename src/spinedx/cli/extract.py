"""`spinedx extract` (placeholder until implemented)."""

from spinedx.cli._app import app, command  # noqa: F401
