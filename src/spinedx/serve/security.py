"""One ASGI middleware for the safety rules: host names, origins, bearer tokens, body size, headers, logs.

In the order a request meets them:

* **Host.** The ``Host`` header must name the server: a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``) or
  the bind address on the server's own port, or an ``--allowed-host`` entry (``NAME`` on any port, ``NAME:PORT`` on
  that one). Anything else gets 421 with one line saying what to do: a web page of another site that points its
  own name at 127.0.0.1 (DNS rebinding) sends its name, not ours, and is refused before any route runs.
* **Origin.** A state-changing request (anything but GET, HEAD, OPTIONS) whose ``Origin`` is not this server's
  (the same host and port as its ``Host``), or whose ``Sec-Fetch-Site`` says another site sent it, gets 403:
  a form or script on another site cannot save, predict or submit, token or not.
* **Token.** ``/api/...`` needs ``Authorization: Bearer <token>`` when the server has tokens (compared in
  constant time; only the header counts, never a query parameter or a cookie). The token's name (``name:token``
  lines of ``--token-file``; ``user`` for a single token; ``local`` on a loopback server without tokens) is the
  request's user (``request.state.user``), recorded by the audit log.
* A body longer than the limit (declared or streamed) is refused with 413 before the route sees it.
* Every response carries a Content-Security-Policy that allows nothing outside this server, no framing, no
  inline script, plus ``nosniff``, ``no-referrer`` and ``no-store`` (patient images stay out of browser caches).
* The access log says method, path, status and milliseconds: paths hold opaque case keys only
  (``spinedx.serve.datastore.case_key``), and neither query strings, bodies nor error messages (which may name
  files or patients) are logged. Method and path are escaped (:func:`spinedx.serve.logsafe.escape_controls`): a
  CR/LF in a path (``%0d%0a``) cannot start a forged line.
* An exception no route handled is answered 500 with a reference number and logged with that number, its type and
  where it was raised (file, line, function), never its message: a message may quote a patient's identifier.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import traceback
from typing import Any
from urllib.parse import urlsplit

from spinedx.serve.logsafe import escape_controls
from spinedx.serve.settings import LOCAL_USER, split_host

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cache-control", b"no-store"), (b"cross-origin-resource-policy", b"same-origin")]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_DEFAULT_PORT = {"http": 80, "https": 443, "ws": 80, "wss": 443}

log = logging.getLogger("spinedx.serve")


class _TooLarge(Exception):
    pass


class HostPolicy:
    """Which ``Host`` header values name this server (see the module docstring).

    Args:
        own: names that must come with the server's own port (the loopback names, the bind address).
        extra: ``(name, port)`` entries of ``--allowed-host``; port None: any port.
        port: the configured port, used when the ASGI scope does not say which one the request reached (0: any).
    """

    def __init__(self, own: list[str], extra: list[tuple[str, int | None]], port: int = 0) -> None:
        self.own = [n.lower() for n in own]
        self.extra = [(n.lower(), p) for n, p in extra]
        self.port = port

    def allows(self, value: str, scheme: str, server_port: int | None) -> bool:
        name, port = split_host(value)
        if port == -1 or not name:
            return False
        effective = port if port is not None else _DEFAULT_PORT.get(scheme, 80)
        ours = server_port if server_port is not None else (self.port or None)
        if name in self.own and (ours is None or effective == ours):
            return True
        return any(name == n and (p is None or p == effective) for n, p in self.extra)

    def describe(self, server_port: int | None) -> str:
        """The allowed names, as a user would type them."""
        port = server_port if server_port is not None else self.port
        names = [f"{n}:{port}" if port else n for n in self.own]
        names += [f"{n}:{p}" if p is not None else n for n, p in self.extra]
        return ", ".join(dict.fromkeys(names))


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """True when an ``Origin`` header names the host and port of the request's ``Host`` header (default ports
    filled in; the scheme may differ, as behind a TLS-terminating proxy)."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return False
    o_name, o_port = split_host(parts.netloc)
    h_name, h_port = split_host(host)
    if -1 in (o_port, h_port):
        return False
    o_port = o_port if o_port is not None else _DEFAULT_PORT[parts.scheme]
    h_port = h_port if h_port is not None else _DEFAULT_PORT.get(scheme, 80)
    return o_name == h_name and o_port == h_port


def where_raised(exc: BaseException) -> str:
    """``file:line in function`` of each frame of an exception's traceback, innermost last, without its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames))


class SecurityMiddleware:
    """See the module docstring.

    Args:
        app: the ASGI app.
        token: one bearer token (user ``user``); None: see ``users``.
        users: ``{token: user name}`` (``ServeSettings.users``); with neither, ``/api`` needs no token.
        hosts: the :class:`HostPolicy`; None: loopback names only.
        max_body_bytes: larger request bodies get 413.
    """

    def __init__(self, app: Any, *, token: str | None = None, users: dict[str, str] | None = None,
                 hosts: HostPolicy | None = None, max_body_bytes: int) -> None:
        from spinedx.serve.settings import UNNAMED_USER, check_token

        users = dict(users or {})
        if token is not None:
            users[token] = UNNAMED_USER
        for tok in users:
            check_token(tok)  # also for an app built around a prebuilt state, which skips the settings' check
        self.app = app
        self.users = {tok.encode(): name for tok, name in users.items()}
        self.hosts = hosts if hosts is not None else HostPolicy(["127.0.0.1", "localhost", "[::1]"], [])
        self.max_body = int(max_body_bytes)

    async def _send_json(self, send: Any, status: int, detail: str,
                         extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *HEADERS, *extra]})
        await send({"type": "http.response.body", "body": body})

    def _user(self, auth: str) -> str | None:
        """The name of the token an ``Authorization`` header carries; None when it carries none of ours."""
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not given:
            return None
        found = None
        for tok, name in self.users.items():  # every token compared, in constant time each
            if secrets.compare_digest(given.encode(), tok):
                found = name
        return found

    def _refusal(self, scope: dict[str, Any], headers: dict[str, str], path: str) -> tuple[int, str] | None:
        """(status, reason) when the request must not reach the app."""
        server = scope.get("server") or (None, None)
        scheme = scope.get("scheme", "http")
        host = headers.get("host")
        if host is None:
            return 400, "the request has no Host header; send it as browsers do"
        if not self.hosts.allows(host, scheme, server[1]):
            return 421, (f"this server does not answer to the host name '{escape_controls(host)}' (it answers to "
                         f"{self.hosts.describe(server[1])}): open it by one of those names, or start spinedx serve "
                         "with --allowed-host NAME for the name your clients use")
        if scope.get("method", "GET").upper() not in SAFE_METHODS:
            origin = headers.get("origin")
            site = headers.get("sec-fetch-site")
            if origin is not None and not same_origin(origin, host, scheme):
                return 403, (f"a request from another web site (Origin '{escape_controls(origin)}') may not change "
                             "anything here; use the workstation's own page")
            if site is not None and site.lower() not in ("same-origin", "none"):
                return 403, (f"a request from another web site (Sec-Fetch-Site {escape_controls(site)}) may not "
                             "change anything here; use the workstation's own page")
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
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

        async def refuse(status: int, detail: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
            status_box["status"] = status
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self._send_json(send, status, detail, extra)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            refused = self._refusal(scope, headers, path)
            if refused is not None:
                await refuse(*refused)
                return
            user = LOCAL_USER
            if self.users and path.startswith("/api/"):
                found = self._user(headers.get("authorization", ""))
                if found is None:
                    await refuse(401, "a bearer token is required (Authorization: Bearer TOKEN; sign in on the page)",
                                 ((b"www-authenticate", b"Bearer"),))
                    return
                user = found
            # the user travels in the request's state (request.state.user), a copy per request
            scope = {**scope, "state": {**(scope.get("state") or {}), "user": user}}
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await refuse(413, f"request body over {self.max_body} bytes")
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
                    await refuse(413, f"request body over {self.max_body} bytes")
            except Exception as exc:  # noqa: BLE001 -- logged without its message, answered 500 (module docstring)
                ref = secrets.token_hex(4)
                log.error("%s %s: unhandled %s (reference %s) at %s", escape_controls(scope.get("method", "-")),
                          escape_controls(path), exc.__class__.__name__, ref, where_raised(exc))
                if status_box["status"] == 0:
                    await refuse(500, f"internal error (reference {ref}): the server's log says where it happened")
        finally:
            log.info("%s %s %d %.0fms", escape_controls(scope.get("method", "-")), escape_controls(path),
                     status_box["status"], (time.perf_counter() - t0) * 1e3)
