"""One ASGI middleware for the safety rules: bearer token, body size limit, security headers, an access log.

* ``/api/...`` needs ``Authorization: Bearer <token>`` when the server has a token (compared in constant time; a
  blank token is refused before the comparison, and no server starts with one).
* A body longer than the limit (declared or streamed) is refused with 413 before the route sees it.
* Every response carries a Content-Security-Policy that allows nothing outside this server, no framing, no
  inline script, plus ``nosniff``, ``no-referrer`` and ``no-store`` (patient images stay out of browser caches).
* The access log says method, path, status and milliseconds: paths hold case keys only, and neither query
  strings, bodies nor error messages (which may name files) are logged. Method and path are escaped
  (:func:`spinedx.serve.logsafe.escape_controls`): a CR/LF in a path (``%0d%0a``) cannot start a forged line.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from spinedx.serve.logsafe import escape_controls

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cache-control", b"no-store"), (b"cross-origin-resource-policy", b"same-origin")]

log = logging.getLogger("spinedx.serve")


class _TooLarge(Exception):
    pass


class SecurityMiddleware:
    """See the module docstring."""

    def __init__(self, app: Any, *, token: str | None, max_body_bytes: int) -> None:
        if token is not None:
            from spinedx.serve.settings import check_token

            check_token(token)  # also for an app built around a prebuilt state, which skips the settings' check
        self.app = app
        self.token = token
        self.max_body = int(max_body_bytes)

    async def _send_json(self, send: Any, status: int, detail: str,
                         extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *HEADERS, *extra]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        status_box = {"status": 0}

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in HEADERS if k not in names]]}
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if self.token and path.startswith("/api/"):
                auth = headers.get("authorization", "")
                given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
                if not given or not secrets.compare_digest(given.encode(), self.token.encode()):
                    status_box["status"] = 401
                    await self._send_json(send, 401, "a bearer token is required (Authorization: Bearer TOKEN)",
                                          ((b"www-authenticate", b"Bearer"),))
                    return
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                status_box["status"] = 413
                await self._send_json(send, 413, f"request body over {self.max_body} bytes")
                return
            seen = 0

            async def receive_limited() -> dict[str, Any]:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.max_body:
                        raise _TooLarge
                return message

            try:
                await self.app(scope, receive_limited, send_wrapped)
            except _TooLarge:
                if status_box["status"] == 0:
                    status_box["status"] = 413
                    await self._send_json(send, 413, f"request body over {self.max_body} bytes")
        finally:
            log.info("%s %s %d %.0fms", escape_controls(scope.get("method", "-")), escape_controls(path),
                     status_box["status"], (time.perf_counter() - t0) * 1e3)
