"""Settings of the workstation server (one typed object; the CLI fills it, tests build their own)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from spinedx.common import redact_url
from spinedx.errors import SpinedxError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def check_token(token: str) -> None:
    """Refuse a token that is short, blank, or holds characters an ``Authorization`` header cannot carry as given.

    Raises:
        SpinedxError: naming ``--token`` and what to use instead.
    """
    how = "use a long random secret (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
    if not token.strip():
        raise SpinedxError(f"the token is blank; {how}", where="--token")
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        # HTTP trims spaces around a header value and carries only ASCII as given: such a token could never match
        raise SpinedxError(f"the token holds spaces, control or non-ASCII characters; {how}", where="--token")
    if len(token) < 16:
        raise SpinedxError(f"the token is shorter than 16 characters; {how}", where="--token")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """What ``spinedx serve`` serves and how.

    Attributes:
        cohort: the manifest read and written (created from ``dicom_root`` by indexing when absent).
        dicom_root: a DICOM tree whose studies are indexed and added to the manifest (optional).
        model: a ``spinedx cv`` run folder whose fold models predict (optional; no Predict without it).
        host: interface to bind; anything but loopback needs ``token``.
        port: TCP port (0: any free port; the URL printed names the one chosen).
        token: bearer token required on every ``/api`` request (None: no token, loopback only).
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
    max_body_bytes: int = 64 * 1024
    cache_bytes: int = 1024 * 1024 * 1024
    register: bool | None = None
    dicomweb: str | None = None
    dicomweb_user: str | None = None
    allow_modality: tuple[str, ...] = ()
    study: Path | None = None
    expect_digest: str | None = None
    store: bool = True

    def check(self) -> None:
        """Refuse unsafe or unusable settings before anything listens.

        Raises:
            SpinedxError: a non-loopback host without a token, a too-short or blank token, a port outside
                0-65535, nothing to serve.
        """
        if self.study is not None:
            self._check_study()
        # reader mode serves only /reader/..., where every request needs a reader's or the coordinator's token
        if not is_loopback(self.host) and not self.token and self.study is None:
            raise SpinedxError(
                f"refusing to listen on {self.host} without --token: any machine on the network could read and "
                "change the cohort. Bind 127.0.0.1 (the default) or give --token with a long random secret",
                where="--host")
        if self.token is not None:
            check_token(self.token)
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

    def _check_study(self) -> None:
        if self.cohort is None or self.model is None:
            raise SpinedxError("a reader study needs --cohort (the manifest it was planned on) and --model (the run "
                               "whose answer the aided reads show)", where="--study")
        if self.dicom_root is not None or self.dicomweb is not None:
            raise SpinedxError("a reader study reads the cases of its manifest only: drop DICOM_ROOT/--dicomweb (they "
                               "would add studies to the manifest)", where="--study")
