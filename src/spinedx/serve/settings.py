"""Settings of the workstation server (one typed object; the CLI fills it, tests build their own).

Who may ask what:

* **Tokens** come from a file (``--token-file``: one ``name:token`` per line, or a single bare token, called
  ``user``) or the environment (``SPINEDX_TOKEN``, one token called ``user``), never from the command line (every
  user of the machine can read it in the process list) and never from a URL or a cookie. :func:`load_token_file`
  reads the file; :meth:`ServeSettings.users` maps each token to the name the audit log records.
* **Host names** the server answers to: the loopback names (``127.0.0.1``, ``localhost``, ``[::1]``) on its port, the
  address it binds, and each ``--allowed-host`` (:func:`parse_allowed_host`); any other ``Host`` header is refused
  (``spinedx.serve.security``), so a web page of another site cannot reach the server through DNS rebinding.
* **TLS** with ``--ssl-certfile``/``--ssl-keyfile`` (uvicorn's), checked by loading them before anything listens.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from spinedx.common import redact_url
from spinedx.errors import SpinedxError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
#: the names a browser on this machine uses for a loopback server (``Host`` header values, without the port)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
#: the user name recorded for requests of a server without tokens (loopback only) and for a token without a name
LOCAL_USER = "local"
UNNAMED_USER = "user"
TOKEN_ENV = "SPINEDX_TOKEN"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HOSTNAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_HOW = "use a long random secret (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"


def check_token(token: str, *, where: str = TOKEN_ENV) -> None:
    """Refuse a token that is short, blank, or holds characters an ``Authorization`` header cannot carry as given.

    Raises:
        SpinedxError: naming ``where`` (the file line or ``SPINEDX_TOKEN``) and what to use instead.
    """
    if not token.strip():
        raise SpinedxError(f"the token is blank; {_HOW}", where=where)
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        # HTTP trims spaces around a header value and carries only ASCII as given: such a token could never match
        raise SpinedxError(f"the token holds spaces, control or non-ASCII characters; {_HOW}", where=where)
    if len(token) < 16:
        raise SpinedxError(f"the token is shorter than 16 characters; {_HOW}", where=where)


def parse_token_line(line: str, *, where: str) -> tuple[str, str]:
    """``(name, token)`` of one ``name:token`` line, or ``("user", token)`` for a bare token.

    A line is ``name:token`` when the text before its first ``:`` is a name (letters, digits, ``_ . @ -``, up to
    64 characters); a token that holds a ``:`` itself must therefore be given with a name.

    Raises:
        SpinedxError: a token :func:`check_token` refuses.
    """
    text = line.strip()
    name, sep, rest = text.partition(":")
    if sep and _NAME.fullmatch(name):
        check_token(rest, where=where)
        return name, rest
    check_token(text, where=where)
    return UNNAMED_USER, text


def load_token_file(path: str | Path) -> dict[str, str]:
    """The tokens of a ``--token-file``: ``{token: name}``.

    The file holds one ``name:token`` per line (``#`` comments and blank lines ignored), or a single bare token
    (called ``user``). It must not be readable by other users (``chmod 600``), names and tokens must be unique.

    Raises:
        SpinedxError: naming the file (and line) and what to do.
    """
    p = Path(path)
    where = str(path)
    if not p.is_file():
        raise SpinedxError("token file not found; write one 'name:token' per line (chmod 600)", where=where)
    if os.name == "posix" and stat.S_IMODE(p.stat().st_mode) & 0o077:
        raise SpinedxError(f"the token file can be read by other users (mode {stat.S_IMODE(p.stat().st_mode):03o}); "
                           f"make it private: chmod 600 {p}", where=where)
    users: dict[str, str] = {}
    unnamed = 0
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpinedxError(f"cannot read the token file ({exc.__class__.__name__})", where=where) from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, token = parse_token_line(line, where=f"{where}:{n}")
        unnamed += not line.strip().startswith(f"{name}:")
        if name in users.values():
            raise SpinedxError(f"the name {name!r} is given twice; give each user one line 'name:token'",
                               where=f"{where}:{n}")
        if token in users:
            raise SpinedxError("this token is already another user's; give each user a token of their own",
                               where=f"{where}:{n}")
        users[token] = name
    if not users:
        raise SpinedxError("the token file holds no token; write one 'name:token' per line", where=where)
    if unnamed and len(users) > 1:
        raise SpinedxError("a file of several tokens names each one: write 'name:token' on every line", where=where)
    return users


def parse_allowed_host(entry: str) -> tuple[str, int | None]:
    """``(name, port)`` of an ``--allowed-host`` value: ``NAME`` (any port) or ``NAME:PORT``; a name is a DNS name,
    an IPv4 address or a bracketed IPv6 address (``[fd00::1]``), compared in lower case.

    Raises:
        SpinedxError: a wildcard or anything that is not such a name.
    """
    text = entry.strip().lower()
    if "*" in text:
        raise SpinedxError("a wildcard would let any web site reach the server through DNS rebinding; name each host "
                           "(repeat --allowed-host)", where=f"--allowed-host {entry}")
    name, port = split_host(text)
    if port == -1 or not name or not (_HOSTNAME.fullmatch(name) or _is_bracketed_ip6(name)):
        raise SpinedxError("not a host name: give NAME or NAME:PORT (e.g. spine.hospital.example, 10.1.2.3:8765, "
                           "[fd00::5])", where=f"--allowed-host {entry}")
    return name, port


def _is_bracketed_ip6(name: str) -> bool:
    if not (name.startswith("[") and name.endswith("]")):
        return False
    try:
        ipaddress.IPv6Address(name[1:-1])
    except ValueError:
        return False
    return True


def split_host(value: str) -> tuple[str, int | None]:
    """``(name, port)`` of a ``Host`` header value (``name``, ``name:port``, ``[v6]``, ``[v6]:port``), the name in
    lower case; port None when absent, -1 when it is not a port number."""
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return text, -1
        name, rest = text[:end + 1], text[end + 1:]
        if not rest:
            return name, None
        if not rest.startswith(":"):
            return name, -1
        port_text = rest[1:]
    else:
        name, sep, port_text = text.partition(":")
        if not sep:
            return name, None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return name, -1
    return name, int(port_text)


def host_name(host: str) -> str:
    """A bind address as a ``Host`` header names it: IPv6 in brackets, lower case."""
    h = host.strip().lower()
    return f"[{h.strip('[]')}]" if ":" in h else h


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """What ``spinedx serve`` serves and how.

    Attributes:
        cohort: the manifest read and written (created from ``dicom_root`` by indexing when absent).
        dicom_root: a DICOM tree whose studies are indexed and added to the manifest (optional).
        model: a ``spinedx cv`` run folder whose fold models predict (optional; no Predict without it).
        host: interface to bind; anything but loopback needs a token.
        port: TCP port (0: any free port; the URL printed names the one chosen).
        token: one bearer token (user ``user``) required on every ``/api`` request (the CLI takes it from
            ``SPINEDX_TOKEN``); None: see ``token_file``, else no token (loopback only).
        token_file: a file of ``name:token`` lines (:func:`load_token_file`): several users, each named in the
            audit log.
        allowed_hosts: host names the server answers to besides the loopback names and the bind address
            (``--allowed-host``: ``NAME`` or ``NAME:PORT``), e.g. the name clients or a reverse proxy use.
        ssl_certfile: a PEM certificate (chain): the server speaks HTTPS (uvicorn's ``ssl_certfile``).
        ssl_keyfile: its private key (None: the key is in ``ssl_certfile``).
        max_body_bytes: larger request bodies are refused with 413.
        cache_bytes: memory bound of the decoded-volume cache.
        register: T2->T1 registration for the T1 pane and prediction; None: as the run (or on without a run).
        dicomweb: a DICOMweb server browsed instead of a folder: its studies are indexed into the manifest (as
            ``spinedx index --dicomweb``) and a case's two series are retrieved (WADO-RS) when first opened.
        dicomweb_user: basic-auth user of that server (password in ``SPINEDX_DICOMWEB_PASSWORD``; a bearer token
            in ``SPINEDX_DICOMWEB_TOKEN``).
        allow_modality: DICOM image modalities read (and indexed) besides MR (``--allow-modality CT``).
        study: a reader study folder (``spinedx readers plan``): reader mode, where only the reader page and its
            API (``/reader/...``, per-reader tokens) are served; the annotation page and ``/api`` are not.
        expect_digest: the digest ``model`` must have (a bundle; ``spinedx export`` prints it), checked before the
            server starts.
        store: browsing ``dicomweb``, store each prediction's DICOM results into its study (STOW-RS;
            :func:`spinedx.interop.publish.store_workstation_prediction`); False keeps them local (``--no-store``).
    """

    cohort: Path | None = None
    dicom_root: Path | None = None
    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    max_body_bytes: int = 64 * 1024
    cache_bytes: int = 1024 * 1024 * 1024
    register: bool | None = None
    dicomweb: str | None = None
    dicomweb_user: str | None = None
    allow_modality: tuple[str, ...] = ()
    study: Path | None = None
    expect_digest: str | None = None
    store: bool = True

    @property
    def tls(self) -> bool:
        """True when the server speaks HTTPS."""
        return self.ssl_certfile is not None

    def users(self) -> dict[str, str]:
        """``{token: user name}`` of every token that may use ``/api`` (empty: no token needed).

        Raises:
            SpinedxError: an unusable token or token file.
        """
        if self.token is not None:
            check_token(self.token)
            return {self.token: UNNAMED_USER}
        if self.token_file is not None:
            return load_token_file(self.token_file)
        return {}

    def own_hosts(self) -> list[str]:
        """The host names that must come with the server's own port: the loopback names and the bind address
        (unless it is a wildcard such as 0.0.0.0, which no client names)."""
        names = list(LOOPBACK_HOSTS)
        if not _is_wildcard(self.host):
            names.append(host_name(self.host))
        return list(dict.fromkeys(names))

    def extra_hosts(self) -> list[tuple[str, int | None]]:
        """The ``--allowed-host`` entries, parsed (:func:`parse_allowed_host`)."""
        return [parse_allowed_host(h) for h in self.allowed_hosts]

    def check(self) -> None:
        """Refuse unsafe or unusable settings before anything listens.

        Raises:
            SpinedxError: a non-loopback host without a token, an unusable token or token file, both a token and
                a token file, a bad ``--allowed-host``, an unloadable certificate, a port outside 0-65535, nothing to
                serve.
        """
        if self.study is not None:
            self._check_study()
        if self.token is not None and self.token_file is not None:
            raise SpinedxError(f"give the tokens either in --token-file or in {TOKEN_ENV}, not both",
                               where="--token-file")
        users = self.users()
        # reader mode serves only /reader/..., where every request needs a reader's or the coordinator's token
        if not is_loopback(self.host) and not users and self.study is None:
            raise SpinedxError(
                f"refusing to listen on {self.host} without a token: any machine on the network could read and "
                f"change the cohort. Bind 127.0.0.1 (the default) or give --token-file FILE (or {TOKEN_ENV}) with a "
                "long random secret", where="--host")
        self.extra_hosts()
        self._check_tls()
        if not 0 <= self.port <= 65535:
            raise SpinedxError(f"port {self.port} is not a TCP port; give 1-65535 (or 0 for any free port)",
                               where="--port")
        if self.cohort is None and self.dicom_root is None and self.dicomweb is None:
            raise SpinedxError("nothing to serve: give a DICOM_ROOT to index, --dicomweb URL, --cohort cohort.csv, "
                               "or a source and --cohort", where="spinedx serve")
        if self.dicom_root is not None and self.dicomweb is not None:
            raise SpinedxError("give either a DICOM_ROOT or --dicomweb URL, not both", where="spinedx serve")
        if self.dicomweb is not None and not self.dicomweb.lower().startswith(("http://", "https://")):
            raise SpinedxError("a DICOMweb URL starts with http:// or https://", where=redact_url(self.dicomweb))
        if self.dicom_root is not None and not Path(self.dicom_root).is_dir():
            raise SpinedxError("DICOM_ROOT is not a folder", where=str(self.dicom_root))
        if (self.cohort is not None and not Path(self.cohort).is_file() and self.dicom_root is None
                and self.dicomweb is None):
            raise SpinedxError("manifest not found; give a DICOM_ROOT to index into it, or the path of an existing "
                               "cohort.csv", where=str(self.cohort))
        if self.model is not None and not (Path(self.model) / "config.yaml").is_file():
            raise SpinedxError("not a spinedx cv run folder (config.yaml missing); run spinedx cv first",
                               where=str(self.model))
        if self.expect_digest is not None:
            if self.model is None:
                raise SpinedxError("--expect-digest pins the model bundle: give --model BUNDLE",
                                   where="--expect-digest")
            from spinedx.interop.bundle import check_bundle_digest

            check_bundle_digest(self.model, self.expect_digest)

    def _check_tls(self) -> None:
        """Load the certificate and key as uvicorn will, so a bad file is one line before anything listens."""
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise SpinedxError("a key without a certificate: give --ssl-certfile too", where="--ssl-keyfile")
        if self.ssl_certfile is None:
            return
        import ssl

        for option, path in (("--ssl-certfile", self.ssl_certfile), ("--ssl-keyfile", self.ssl_keyfile)):
            if path is not None and not Path(path).is_file():
                raise SpinedxError("file not found", where=f"{option} {path}")
        try:
            # an empty password: an encrypted key fails here instead of prompting on the terminal
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                str(self.ssl_certfile), None if self.ssl_keyfile is None else str(self.ssl_keyfile),
                password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SpinedxError(f"cannot use this certificate and key ({exc.__class__.__name__}: "
                               f"{getattr(exc, 'reason', None) or exc}); give a PEM certificate and its private key "
                               "(an encrypted key is not supported)", where="--ssl-certfile") from None

    def _check_study(self) -> None:
        if self.cohort is None or self.model is None:
            raise SpinedxError("a reader study needs --cohort (the manifest it was planned on) and --model (the run "
                               "whose answer the aided reads show)", where="--study")
        if self.dicom_root is not None or self.dicomweb is not None:
            raise SpinedxError("a reader study reads the cases of its manifest only: drop DICOM_ROOT/--dicomweb (they "
                               "would add studies to the manifest)", where="--study")
