"""A DICOMweb client for spinedx (PS3.18): find studies and series (QIDO-RS), fetch series (WADO-RS), store
results (STOW-RS), built on dicomweb-client with explicit timeouts and bounded retries.

Every request has a connect and a read timeout, and connection failures are retried at most ``retries`` times
with a short backoff, so an unreachable server is a clean :class:`DicomWebError` within seconds (dicomweb-client's
own retry loop, about 30 s against a dead server, is switched off). Errors name the URL and the study or series
UID and say what to do; a 404 is told apart as a wrong service URL or a missing study/series.

Credentials (HTTP basic or a bearer token) come from one place, in this order:

1. the URL's user-info (``http://user:password@pacs/dicom-web``): taken out of the URL, sent as basic auth;
2. or :class:`DicomWebAuth` (``SPINEDX_DICOMWEB_USER``/``SPINEDX_DICOMWEB_PASSWORD`` or ``SPINEDX_DICOMWEB_TOKEN``,
   :meth:`DicomWebAuth.from_env`); giving both 1 and 2 is refused;
3. else ``~/.netrc`` (or the file named by ``NETRC``), which requests reads when no other auth is set.

A URL is never shown, logged or written with its user-info (:func:`spinedx.common.redact_url`): the requests go to
the URL without it, so not even a library's debug log can show the password.

T1W/T2W series are chosen with :func:`spinedx.studyindex.select_t1_t2_series`, the rule of ``spinedx index``, applied
to each series' DICOM JSON metadata (the first instance of the series, from WADO-RS).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.common import redact_url
from spinedx.errors import SpinedxError

#: Environment variables read by :meth:`DicomWebAuth.from_env` (never a command-line password).
ENV_USER = "SPINEDX_DICOMWEB_USER"
ENV_PASSWORD = "SPINEDX_DICOMWEB_PASSWORD"
ENV_TOKEN = "SPINEDX_DICOMWEB_TOKEN"

#: QIDO-RS study attributes listed by :meth:`DicomWebClient.list_studies`.
STUDY_FIELDS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")


#: What a 404 on the service root, or an answer that is not DICOM JSON, asks the user to check.
_NOT_DICOMWEB = "check the URL (the DICOMweb service root, e.g. http://pacs:8042/dicom-web for Orthanc)"


class DicomWebError(SpinedxError):
    """A DICOMweb request failed (unreachable server, timeout, HTTP error, missing study or series)."""


@dataclass(frozen=True)
class DicomWebAuth:
    """Credentials for a DICOMweb server: HTTP basic (``username``/``password``) or a bearer ``token``.

    The ``repr`` hides the secrets, so an auth object in a log or an error message leaks nothing.
    """

    username: str | None = None
    password: str | None = None
    token: str | None = None
    #: where the credentials came from, named in an authentication failure (never the secret itself)
    source: str = field(default="the caller", compare=False)

    def __post_init__(self) -> None:
        if self.token and self.username:
            raise SpinedxError("give either a user (basic auth) or a bearer token, not both", where="DICOMweb auth")
        if (self.username is None) != (self.password is None):
            raise SpinedxError(f"basic auth needs both a user and a password (set {ENV_PASSWORD})",
                               where="DICOMweb auth")

    def __repr__(self) -> str:
        kind = "bearer" if self.token else "basic" if self.username else "none"
        return f"DicomWebAuth({kind}{f', user={self.username!r}' if self.username else ''})"

    @classmethod
    def from_env(cls, username: str | None = None) -> DicomWebAuth | None:
        """Credentials from ``SPINEDX_DICOMWEB_USER``/``_PASSWORD`` or ``SPINEDX_DICOMWEB_TOKEN`` (None: no auth).

        Args:
            username: the user name when given on the command line (the password still comes from the
                environment, so it never appears in a process list or a shell history).
        """
        user = username or os.environ.get(ENV_USER) or None
        token = os.environ.get(ENV_TOKEN) or None
        if user:
            password = os.environ.get(ENV_PASSWORD)
            if password is None:
                raise SpinedxError(f"user {user!r} given but {ENV_PASSWORD} is not set; export the password in "
                                   "that variable", where="DICOMweb auth")
            where = "--user and " + ENV_PASSWORD if username else f"{ENV_USER} and {ENV_PASSWORD}"
            return cls(username=user, password=password, source=where)
        if token:
            return cls(token=token, source=ENV_TOKEN)
        return None


@dataclass(frozen=True)
class StudyInfo:
    """One study as QIDO-RS lists it."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    description: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None


@dataclass
class FetchedStudy:
    """The two series of a study fetched for prediction.

    Attributes:
        study_uid: StudyInstanceUID.
        t1: folder holding the T1W series' files.
        t2: folder holding the T2W series' files.
        t1_series_uid: the T1W series.
        t2_series_uid: the T2W series.
        selection: the ``select_t1_t2_series`` verdicts when the series were chosen automatically (else None).
    """

    study_uid: str
    t1: Path
    t2: Path
    t1_series_uid: str
    t2_series_uid: str
    selection: Any = None


def split_credentials(url: str) -> tuple[str, DicomWebAuth | None]:
    """``url`` without its user-info, and the credentials it held (basic auth; None without user-info).

    Raises:
        DicomWebError: not an http(s) URL, no host, a port that is not a number, a user without a password (all
            named by the redacted URL).
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    shown = redact_url(url)
    if not url.lower().startswith(("http://", "https://")):
        raise DicomWebError("a DICOMweb URL starts with http:// or https:// (e.g. http://pacs:8042/dicom-web)",
                            where=shown)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = -1, None
    if parts is None or port == -1 or not parts.hostname:
        raise DicomWebError("not a usable URL (host or port unreadable); write it as http://HOST:PORT/PATH, with "
                            "the credentials percent-encoded or, better, outside the URL (see docs/interop.md)",
                            where=shown)
    if "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    if parts.password is None:
        raise DicomWebError(f"the URL names user {unquote(parts.username or '')!r} but no password; give the "
                            f"password in {ENV_PASSWORD} with --user (or {ENV_USER}), or in ~/.netrc", where=shown)
    return clean, DicomWebAuth(unquote(parts.username or ""), unquote(parts.password), source="the URL's user-info")


def _bearer(token: str) -> Any:
    """requests auth sending ``Authorization: Bearer``: set as the session's auth (not as a header) so that
    requests does not replace it with a ``~/.netrc`` entry for the same host."""
    import requests

    class _Bearer(requests.auth.AuthBase):
        def __call__(self, r: Any) -> Any:
            r.headers["Authorization"] = f"Bearer {token}"
            return r

        def __repr__(self) -> str:
            return "Bearer(...)"

    return _Bearer()


def _timeout_session(timeout: tuple[float, float], retries: int, auth: DicomWebAuth | None) -> Any:
    """A requests session with default timeouts, bounded connection retries and the credentials (none: requests
    reads ``~/.netrc``)."""
    import requests
    import requests.auth
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class _Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:  # a default timeout for every call
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(*args, **kwargs)

    session = _Session()
    # Connection errors (refused, reset before a response) are retried for every method: nothing reached the
    # server. Gateway errors are retried for idempotent reads only, never for STOW-RS.
    retry = Retry(total=retries, connect=retries, read=0, status=retries, backoff_factor=0.2,
                  status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET", "HEAD"}),
                  raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if auth is not None and auth.username is not None:
        session.auth = (auth.username, auth.password or "")
    elif auth is not None and auth.token:
        session.auth = _bearer(auth.token)
    return session


class DicomWebClient:
    """QIDO-RS, WADO-RS and STOW-RS against one DICOMweb service.

    Args:
        url: the service root, e.g. ``http://pacs:8042/dicom-web`` (user-info in it is used as basic auth and
            never shown).
        auth: credentials (None: those of the URL, else ``~/.netrc``, else anonymous).
        timeout: seconds to connect and to wait for each response (a float sets both).
        retries: extra attempts after a connection failure or a 502/503/504 on a read.

    Attributes:
        url: the service root as requested, shown and recorded: without user-info.
    """

    def __init__(self, url: str, *, auth: DicomWebAuth | None = None,
                 timeout: float | tuple[float, float] = (5.0, 30.0), retries: int = 1) -> None:
        from dicomweb_client.api import DICOMwebClient
        from requests.utils import get_netrc_auth

        clean, url_auth = split_credentials(url)
        self.url = clean.rstrip("/")
        if url_auth is not None and auth is not None:
            raise DicomWebError(f"credentials given twice, in the URL and in {auth.source}; give them in one place",
                                where=self.url)
        auth = auth or url_auth
        self.auth_source = auth.source if auth is not None else "~/.netrc" if get_netrc_auth(self.url) else None
        self.timeout = (float(timeout), float(timeout)) if isinstance(timeout, (int, float)) else tuple(timeout)
        self._client = DICOMwebClient(self.url, session=_timeout_session(self.timeout, retries, auth),  # type: ignore[arg-type]
                                      timeout=self.timeout)
        self._client.set_http_retry_params(retry=False)  # the session retries (bounded); see the module docstring

    # -- error handling ----------------------------------------------------------------------------------
    def _root_answers(self) -> bool | None:
        """Whether the service root answers a QIDO-RS study search with DICOM JSON (False: a 404 there too, a 400
        or 405 to that standard search, or an answer that is not DICOM JSON; None: cannot tell)."""
        import requests

        try:
            page = self._client.search_for_studies(limit=1)
        except requests.exceptions.HTTPError as exc:
            return False if exc.response is not None and exc.response.status_code in (400, 404, 405) else None
        except requests.exceptions.JSONDecodeError:
            return False
        except requests.exceptions.RequestException:
            return None
        return isinstance(page, list) and all(isinstance(r, dict) for r in page)

    def _auth_hint(self) -> str:
        if self.auth_source is None:
            return (f"authentication failed: the server needs credentials and none were given; set {ENV_USER} and "
                    f"{ENV_PASSWORD} (or {ENV_TOKEN}), or add the host to ~/.netrc (docs/interop.md)")
        return f"authentication failed with the credentials from {self.auth_source}: check them"

    @contextlib.contextmanager
    def _request(self, what: str, uid: str | None = None, *, root: bool = False) -> Iterator[None]:
        """Turn transport and HTTP failures of ``what`` into one :class:`DicomWebError` naming the URL and UID.

        Args:
            what: the request, as the message names it.
            uid: the study or series asked for.
            root: the request is the service's own study search, so a 404 means a wrong URL, not a missing UID.
        """
        import requests

        about = f"{what}{f' {uid}' if uid else ''}"
        try:
            yield
        except requests.exceptions.HTTPError as exc:
            resp = exc.response
            code = resp.status_code if resp is not None else 0
            reason = f"HTTP {code} {resp.reason if resp is not None else ''}".strip()
            if code == 404:
                # the same status for a wrong service root and a missing study: ask the root to tell them apart
                found = False if root else self._root_answers()
                hint = (f"the DICOMweb service is not at this URL: {_NOT_DICOMWEB}" if found is False else
                        "not found on the server: check the UID (spinedx index --dicomweb URL lists the studies)"
                        if found else "not found on the server: check the URL and the UID")
            else:
                denied = (f"access denied for the credentials from {self.auth_source}" if self.auth_source
                          else "access denied without credentials")
                hint = {401: self._auth_hint(), 403: denied}.get(code, "the server refused the request; see its log")
            raise DicomWebError(f"{about}: {reason}; {hint}", where=self.url) from None
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            cause = str(exc.args[0] if exc.args else exc)
            # urllib3 reports a read timeout after its (bounded) retries as a connection error: sort by cause
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in cause.lower():
                raise DicomWebError(f"{about}: no answer within {self.timeout[0]:g} s (connect) / {self.timeout[1]:g} "
                                    "s (response); check that the server runs and the URL is right",
                                    where=self.url) from None
            short = "connection refused" if "refused" in cause.lower() else cause.split(":")[-1].strip() or "failed"
            raise DicomWebError(f"{about}: cannot connect ({short}); check that the server runs and the URL is right",
                                where=self.url) from None
        except requests.exceptions.JSONDecodeError:
            raise DicomWebError(f"{about}: the answer is not JSON; {_NOT_DICOMWEB}", where=self.url) from None
        except requests.exceptions.RequestException as exc:
            raise DicomWebError(f"{about}: {type(exc).__name__}: {exc}", where=self.url) from None

    # -- QIDO-RS -------------------------------------------------------------------------------------------
    def list_studies(self, **filters: Any) -> list[StudyInfo]:
        """Every study the server lists (QIDO-RS ``/studies``), optionally filtered (e.g. ``PatientID="P1"``)."""
        what = "QIDO-RS search for studies"
        with self._request(what, root=True):
            rows = self._search_all(self._client.search_for_studies, "0020000D", what, fields=list(STUDY_FIELDS),
                                    search_filters=filters or None)
        return [_study_info(r) for r in rows]

    def _search_all(self, search: Any, uid_tag: str, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every result of a QIDO-RS search, page by page (``offset``), each page checked to be DICOM JSON.

        dicomweb-client's own ``get_remaining`` asks for pages until one is empty, forever when the URL reaches a
        service that ignores ``offset`` (Orthanc's REST root answers its own JSON, the same, on every page); here a
        page that brings no new UID ends the search.
        """
        rows: list[dict[str, Any]] = []
        seen: set[Any] = set()
        while True:
            page = search(offset=len(rows) or None, get_remaining=False, **kwargs)
            if not isinstance(page, list) or not all(isinstance(r, dict) for r in page):
                raise DicomWebError(f"{what}: the answer is not DICOM JSON; {_NOT_DICOMWEB}", where=self.url)
            new = [r for r in page if _json_first(r, uid_tag) not in seen]
            if not new:
                return rows
            seen.update(_json_first(r, uid_tag) for r in new)
            rows += new

    def list_series(self, study_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS results (DICOM JSON) of a study's series.

        Raises:
            DicomWebError: the study has no series on the server (or does not exist).
        """
        with self._request("QIDO-RS search for series of study", study_uid):
            rows = self._search_all(self._client.search_for_series, "0020000E",
                                    f"QIDO-RS search for series of study {study_uid}", study_instance_uid=study_uid)
        if not rows:
            raise DicomWebError(f"study {study_uid} not found (no series): check the StudyInstanceUID "
                                "(spinedx index --dicomweb URL lists the studies)", where=self.url)
        return list(rows)

    def search_series(self, study_uid: str, **filters: Any) -> list[dict[str, Any]]:
        """QIDO-RS results (DICOM JSON) of a study's series matching ``filters`` (e.g. ``Modality="SR"``); an
        empty list when none match (or the study does not exist)."""
        with self._request("QIDO-RS search for series of study", study_uid):
            return self._search_all(self._client.search_for_series, "0020000E",
                                    f"QIDO-RS search for series of study {study_uid}", study_instance_uid=study_uid,
                                    search_filters=filters or None)

    def series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """WADO-RS metadata (DICOM JSON) of every instance of a series."""
        with self._request("WADO-RS metadata of series", series_uid):
            return list(self._client.retrieve_series_metadata(study_uid, series_uid))

    def series_headers(self, study_uid: str) -> list[Any]:
        """One :class:`spinedx.studyindex.SeriesHeader` per series of the study, from WADO-RS instance metadata."""
        from spinedx.studyindex import SeriesHeader

        headers = []
        for row in self.list_series(study_uid):
            series_uid = _json_first(row, "0020000E")
            if not series_uid:
                continue
            with self._request("WADO-RS metadata of series", series_uid):
                meta = self._client.retrieve_series_metadata(study_uid, series_uid)
            if meta:
                headers.append(SeriesHeader.from_json(meta[0], n_instances=len(meta)))
        return headers

    def select(self, study_uid: str, options: Any = None) -> Any:
        """``select_t1_t2_series`` over the study's series (the rule of ``spinedx index``)."""
        from spinedx.studyindex import select_t1_t2_series

        return select_t1_t2_series(self.series_headers(study_uid), options)

    # -- WADO-RS -------------------------------------------------------------------------------------------
    def retrieve_series(self, study_uid: str, series_uid: str, folder: str | Path) -> list[Path]:
        """Write every instance of a series into ``folder`` (``<SOPInstanceUID>.dcm``), whole or not at all.

        Raises:
            DicomWebError: the series is not on the server, or a request fails.
        """
        from spinedx.fsutil import atomic_dir

        folder = Path(folder)
        names = []
        with atomic_dir(folder) as tmp, self._request("WADO-RS retrieve series", series_uid):
            for ds in self._client.iter_series(study_uid, series_uid):
                name = f"{ds.SOPInstanceUID}.dcm"
                _ensure_file_meta(ds)
                ds.save_as(tmp / name, enforce_file_format=True)
                names.append(name)
            if not names:
                raise DicomWebError(f"series {series_uid} of study {study_uid} has no instances on the server",
                                    where=self.url)
        return [folder / n for n in names]

    # -- STOW-RS -------------------------------------------------------------------------------------------
    def store(self, files: Sequence[str | Path]) -> list[str]:
        """Send DICOM files with STOW-RS; returns the stored SOPInstanceUIDs.

        Raises:
            DicomWebError: the request failed or the server refused an instance (FailedSOPSequence).
        """
        import pydicom

        datasets = [pydicom.dcmread(p) for p in files]
        if not datasets:
            return []
        study = str(datasets[0].StudyInstanceUID)
        with self._request("STOW-RS store into study", study):
            resp = self._client.store_instances(datasets, study_instance_uid=study)
        failed = resp.get("FailedSOPSequence") if resp is not None else None
        if failed:
            uids = ", ".join(str(it.get("ReferencedSOPInstanceUID", "?")) for it in failed)
            raise DicomWebError(f"STOW-RS: the server refused {len(failed)} instance(s) of study {study}: {uids}",
                                where=self.url)
        return [str(ds.SOPInstanceUID) for ds in datasets]

    # -- the prediction's inputs -----------------------------------------------------------------------------
    def fetch_for_prediction(self, study_uid: str, folder: str | Path, *, t1_series: str | None = None,
                             t2_series: str | None = None, options: Any = None) -> FetchedStudy:
        """Fetch a study's T1W and T2W series into ``folder/t1`` and ``folder/t2``.

        Series not given are chosen with ``select_t1_t2_series`` (as ``spinedx index``); an ambiguous or missing
        role is an error that lists the candidates, never a guess.
        """
        selection = None
        if t1_series is None or t2_series is None:
            selection = self.select(study_uid, options)
            picks = {"t1": t1_series, "t2": t2_series}
            for role in ("t1", "t2"):
                if picks[role] is not None:
                    continue
                chosen = getattr(selection, role)
                if chosen is None:
                    flag = f"--{role}-series"
                    if role in selection.ambiguous:
                        raise DicomWebError(f"study {study_uid}: {role.upper()}W is ambiguous between series "
                                            f"{', '.join(selection.ambiguous[role])}; choose one with {flag}",
                                            where=self.url)
                    raise DicomWebError(f"study {study_uid}: no sagittal {role.upper()}W series found "
                                        f"({selection.summary()}); give its UID with {flag}", where=self.url)
                picks[role] = chosen.series_uid
            t1_series, t2_series = picks["t1"], picks["t2"]
        assert t1_series is not None and t2_series is not None
        folder = Path(folder)
        self.retrieve_series(study_uid, t1_series, folder / "t1")
        self.retrieve_series(study_uid, t2_series, folder / "t2")
        return FetchedStudy(study_uid, folder / "t1", folder / "t2", t1_series, t2_series, selection)


def _ensure_file_meta(ds: Any) -> None:
    """Give a dataset from WADO-RS a File Meta Information group (PS3.10) when it lacks one."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _json_first(obj: dict[str, Any], tag: str) -> Any:
    vals = (obj.get(tag) or {}).get("Value") or []
    return vals[0] if vals else None


def _study_info(row: dict[str, Any]) -> StudyInfo:
    def text(tag: str) -> str:
        v = _json_first(row, tag)
        if isinstance(v, dict):  # PN: {"Alphabetic": "..."}
            v = v.get("Alphabetic", "")
        return "" if v is None else str(v)

    def num(tag: str) -> int | None:
        v = _json_first(row, tag)
        try:
            return None if v is None else int(v)
        except (TypeError, ValueError):
            return None

    mods = (row.get("00080061") or {}).get("Value") or []
    return StudyInfo(study_uid=text("0020000D"), patient_id=text("00100020"), patient_name=text("00100010"),
                     study_date=text("00080020"), description=text("00081030"), modalities=tuple(map(str, mods)),
                     n_series=num("00201206"), n_instances=num("00201208"))
