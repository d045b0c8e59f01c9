"""The workstation (``spinedx serve``): a local web app to view cases, draw the lesion box, annotate and predict.

Use :func:`create_app` with a :class:`ServeSettings` (tests, embedding) or :func:`serve` (the CLI). Research use
only, not for clinical decisions.
"""

from spinedx.serve.app import create_app
from spinedx.serve.server import serve
from spinedx.serve.settings import ServeSettings, is_loopback

__all__ = ["ServeSettings", "create_app", "is_loopback", "serve"]
