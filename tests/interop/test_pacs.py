"""DICOMweb against a real PACS (Debian's Orthanc with its DICOMweb plugin): query, retrieve, predict, store;
authentication (URL user-info, environment, ~/.netrc) with the password never shown, logged or written;
unreachable, silent and failing servers, a wrong service URL and missing studies/series as clean errors."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import numpy as np
import pandas as pd
import pydicom
import pytest

from spinedx.common import redact_url
from spinedx.interop import dciodvfy, read_sr
from spinedx.interop.dicomweb import DicomWebAuth, DicomWebClient, DicomWebError, split_credentials
from spinedx.interop.pacs import index_server, predict_study
from spinedx.io import read_image
from spinedx.studyindex import index_tree
from spinedx.studyindex import write_index as write_server_index

from .orthanc import free_port, orthanc_server


@pytest.fixture(scope="module")
def pacs(synth_study: Path) -> Iterator:
    """Orthanc holding the two synthetic studies."""
    with orthanc_server() as server:
        server.upload(sorted((synth_study / "dicom").rglob("*.dcm")))
        yield server


def _study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)


def test_qido_lists_the_studies(pacs, synth_study: Path) -> None:
    studies = DicomWebClient(pacs.dicomweb).list_studies()
    assert sorted(s.patient_id for s in studies) == ["SYN0001", "SYN0002"]
    assert all(s.n_series == 2 and s.modalities == ("MR",) for s in studies)
    assert {s.study_uid for s in studies} == {_study_uid(synth_study / "dicom" / p / "T2") for p in ("SYN0001",
                                                                                                      "SYN0002")}


def test_selection_is_the_one_of_spinedx_index(pacs, synth_study: Path) -> None:
    """DICOM JSON from the server and the files on disk give the same T1W/T2W choice (same select_series)."""
    local = {st.study_uid: st.selection for st in index_tree(synth_study / "dicom", progress=False).studies}
    client = DicomWebClient(pacs.dicomweb)
    for study_uid, sel in local.items():
        remote = client.select(study_uid)
        assert remote.status == sel.status == "ok"
        assert (remote.t1.series_uid, remote.t2.series_uid) == (sel.t1.series_uid, sel.t2.series_uid)
        assert [v.reasons for v in remote.verdicts] == [v.reasons for v in sel.verdicts]


def test_wado_retrieves_the_same_series(pacs, case: dict, tmp_path: Path) -> None:
    client = DicomWebClient(pacs.dicomweb)
    study = _study_uid(case["t2"])
    series = str(pydicom.dcmread(next(case["t2"].iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    files = client.retrieve_series(study, series, tmp_path / "t2")
    assert len(files) == len(list(case["t2"].iterdir()))
    a, b = read_image(tmp_path / "t2"), read_image(case["t2"])
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)


@pytest.mark.slow
def test_round_trip_query_retrieve_predict_store(tiny_run: Path, case: dict, synth_study: Path, tmp_path: Path) -> None:
    """Orthanc -> prediction -> SR and overlays -> Orthanc, in the same study, and they validate there."""
    with orthanc_server() as pacs:  # its own server: storing changes what the other tests would see
        pacs.upload(sorted((synth_study / "dicom").rglob("*.dcm")))
        _round_trip(pacs, tiny_run, case, tmp_path)


def _round_trip(pacs, tiny_run: Path, case: dict, tmp_path: Path) -> None:
    study = _study_uid(case["t2"])
    before = set(pacs.get("/series"))  # Orthanc's identifiers of the series it holds
    res = predict_study(tiny_run, pacs.dicomweb, study, case["slices"], case["box"], tmp_path / "out", store=True)
    assert res.stored == [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in res.results.files]
    doc = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert doc["inputs"]["dicomweb"]["study_uid"] == study and doc["inputs"]["dicomweb"]["series_chosen_by"] == \
        "select_series"
    assert doc["dicom_results"]["stored"]["sop_instance_uids"] == res.stored

    # the server now holds three more series, all in the source study: the SR, the heatmap map and its overlays
    studies = pacs.get("/studies")
    assert len(studies) == 2
    new = [pacs.get(f"/series/{sid}") for sid in set(pacs.get("/series")) - before]
    assert sorted(s["MainDicomTags"]["Modality"] for s in new) == ["OT", "OT", "SR"]  # OT: the map, the overlays
    for s in new:
        assert pacs.get(f"/studies/{s['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"] == study
    # what the server holds validates and reads back to the prediction
    client = DicomWebClient(pacs.dicomweb)
    got = client.retrieve_series(study, res.results.sr_series_uid, tmp_path / "sr")
    assert dciodvfy(got[0]).errors == []
    first = read_sr(got[0])
    assert first.probability == res.prediction.probability and first.predecessors == [] and res.supersedes is None
    overlays = client.retrieve_series(study, res.results.overlay_series_uid, tmp_path / "sc")
    assert len(overlays) == len(case["slices"]) and all(dciodvfy(p).errors == [] for p in overlays)
    pmap = client.retrieve_series(study, res.results.pmap_series_uid, tmp_path / "pm")
    assert len(pmap) == 1 and dciodvfy(pmap[0]).errors == []

    # predicted again (another output folder): its SR supersedes the first, found on the server (QIDO-RS)
    again = predict_study(tiny_run, pacs.dicomweb, study, case["slices"], case["box"], tmp_path / "out2",
                          store=True, engine="torch")
    first_uid = pydicom.dcmread(res.results.sr, stop_before_pixels=True).SOPInstanceUID
    assert again.supersedes is not None and again.supersedes.sop_instance_uid == first_uid
    second = client.retrieve_series(study, again.results.sr_series_uid, tmp_path / "sr2")
    assert read_sr(second[0]).predecessors == [first_uid] and dciodvfy(second[0]).errors == []
    doc2 = json.loads((tmp_path / "out2" / "prediction.json").read_text())
    assert doc2["dicom_results"]["supersedes"]["sop_instance_uid"] == first_uid
    assert doc2["dicom_results"]["stored"]["sr"]["sop_instance_uid"] == again.results.sr_sop_instance_uid
    from spinedx.interop.publish import latest_spinedx_sr

    assert latest_spinedx_sr(client, study).sop_instance_uid == again.results.sr_sop_instance_uid


def test_index_server_writes_a_draft_manifest(pacs, synth_study: Path, tmp_path: Path) -> None:
    idx = index_server(pacs.dicomweb)
    assert [st.case_key for st in idx.studies] == ["SYN0001", "SYN0002"] and idx.synthetic
    local = {st.study_uid: st.selection for st in index_tree(synth_study / "dicom", progress=False).studies}
    manifest, index_json = write_server_index(idx, tmp_path / "cohort.csv")
    df = pd.read_csv(manifest, dtype=str)
    assert list(df.patient_id) == ["SYN0001", "SYN0002"] and set(df.synthetic) == {"1"}
    for row in df.itertuples():
        assert (row.t1_series_uid, row.t2_series_uid) == (local[row.study_uid].t1.series_uid,
                                                          local[row.study_uid].t2.series_uid)
    doc = json.loads(index_json.read_text())
    assert doc["dicomweb"] == pacs.dicomweb and doc["counts"]["complete"] == 2


def test_missing_study_and_series_are_clean_errors(pacs, case: dict, tmp_path: Path) -> None:
    client = DicomWebClient(pacs.dicomweb)
    with pytest.raises(DicomWebError, match=r"study 1\.2\.3\.4 not found") as e:
        client.fetch_for_prediction("1.2.3.4", tmp_path)
    assert pacs.dicomweb in str(e.value)
    study = _study_uid(case["t2"])
    with pytest.raises(DicomWebError, match=r"series 1\.2\.3\.5: HTTP 404 Not Found; not found on the server: check "
                       r"the UID") as e:
        client.retrieve_series(study, "1.2.3.5", tmp_path / "x")
    assert pacs.dicomweb in str(e.value)
    assert not (tmp_path / "x").exists()


def _finishes(fn: Callable[[], Any], seconds: float = 60) -> Any:
    """``fn()``'s result or exception, failing the test when it runs longer than ``seconds`` (a request loop)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds:g} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_a_wrong_service_url_is_told_apart_from_a_missing_uid(pacs, case: dict, tmp_path: Path) -> None:
    """A 404 on the service root says "check the URL", not "check the UID" (it used to blame the UID); a URL that
    reaches Orthanc's REST API instead of its DICOMweb root is refused at once (it used to ask for pages forever)."""
    study = _study_uid(case["t2"])
    wrong = DicomWebClient(f"{pacs.url}/dicomweb")  # the root is /dicom-web
    for call in (wrong.list_studies, lambda: wrong.fetch_for_prediction(study, tmp_path / "a"),
                 lambda: wrong.retrieve_series(study, "1.2.3.5", tmp_path / "b")):
        with pytest.raises(DicomWebError, match=r"HTTP 404 Not Found; the DICOMweb service is not at this URL: check "
                           r"the URL \(the DICOMweb service root") as e:
            call()
        assert "UID" not in str(e.value) and str(e.value).startswith(f"{pacs.url}/dicomweb: ")
    with pytest.raises(DicomWebError, match="QIDO-RS search for studies: the answer is not DICOM JSON; check the URL"):
        _finishes(DicomWebClient(pacs.url).list_studies)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_dead_server_is_a_clean_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(DicomWebError, match="cannot connect") as e:
        DicomWebClient(url, timeout=2).list_studies()
    assert url in str(e.value)


def test_bad_url_is_refused() -> None:
    with pytest.raises(DicomWebError, match="starts with http"):
        DicomWebClient("127.0.0.1:8042/dicom-web")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/dicom-web"
    finally:
        sock.close()


def test_silent_server_times_out(silent_server: str) -> None:
    with pytest.raises(DicomWebError, match="no answer within") as e:
        DicomWebClient(silent_server, timeout=0.5, retries=0).list_studies()
    assert silent_server in str(e.value)


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the class's status and body (an empty JSON list), and records the headers."""

    status = 200
    body = b"[]"
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        body = self.body
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {"seen": [], "status": 200, "body": b"[]"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_bearer_token_is_sent(stub) -> None:
    url, handler = stub
    assert DicomWebClient(url, auth=DicomWebAuth(token="tok-123")).list_studies() == []
    assert handler.seen[-1]["Authorization"] == "Bearer tok-123"


def test_bearer_token_is_not_replaced_by_a_netrc_entry(stub, tmp_path: Path, monkeypatch) -> None:
    """requests fills in ~/.netrc credentials when the session has no auth of its own: a token sent as a plain
    header used to be replaced by the netrc entry's basic auth."""
    url, handler = stub
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert DicomWebClient(url, auth=DicomWebAuth(token="tok-123")).list_studies() == []
    assert handler.seen[-1]["Authorization"] == "Bearer tok-123"
    client = DicomWebClient(url)  # no credentials given: the netrc entry is used (and named in messages)
    assert client.list_studies() == [] and client.auth_source == "~/.netrc"
    assert handler.seen[-1]["Authorization"] == "Basic " + base64.b64encode(b"bob:from-netrc").decode()


def test_a_server_that_ignores_offset_is_read_once(stub) -> None:
    """dicomweb-client's paging asks until a page is empty: a server answering the same page whatever the offset
    used to be asked forever."""
    url, handler = stub
    row = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00100020": {"vr": "LO", "Value": ["P1"]}}
    handler.body = json.dumps([row]).encode()
    studies = _finishes(DicomWebClient(url).list_studies)
    assert [s.study_uid for s in studies] == ["1.2.3"] and len(handler.seen) == 2


def test_http_errors_are_clean_and_gateway_errors_retried(stub) -> None:
    url, handler = stub
    handler.status = 500
    with pytest.raises(DicomWebError, match="HTTP 500"):
        DicomWebClient(url, retries=2).list_studies()
    assert len(handler.seen) == 1  # a server error is not retried
    handler.status, handler.seen = 503, []
    with pytest.raises(DicomWebError, match="HTTP 503"):
        DicomWebClient(url, retries=2).list_studies()
    assert len(handler.seen) == 3  # one try and two bounded retries


def test_basic_auth_against_orthanc(synth_study: Path) -> None:
    with orthanc_server(users={"alice": "s3cret"}) as server:
        ok = DicomWebClient(server.dicomweb, auth=DicomWebAuth("alice", "s3cret"))
        assert ok.list_studies() == []
        for auth in (None, DicomWebAuth("alice", "wrong")):
            with pytest.raises(DicomWebError, match="HTTP 401.*authentication failed") as e:
                DicomWebClient(server.dicomweb, auth=auth).list_studies()
            assert server.dicomweb in str(e.value) and "wrong" not in str(e.value)


def test_auth_from_environment_keeps_secrets_out_of_reprs(monkeypatch) -> None:
    monkeypatch.setenv("SPINEDX_DICOMWEB_PASSWORD", "pw-xyz")
    auth = DicomWebAuth.from_env("bob")
    assert auth == DicomWebAuth("bob", "pw-xyz") and "pw-xyz" not in repr(auth)
    monkeypatch.delenv("SPINEDX_DICOMWEB_PASSWORD")
    monkeypatch.setenv("SPINEDX_DICOMWEB_TOKEN", "tok")
    assert DicomWebAuth.from_env() == DicomWebAuth(token="tok") and "tok" not in repr(DicomWebAuth(token="tok"))
    with pytest.raises(Exception, match="SPINEDX_DICOMWEB_PASSWORD is not set"):
        DicomWebAuth.from_env("bob")


def test_index_cli_with_dicomweb(pacs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinedx.cli import app

    res = CliRunner().invoke(app, ["index", "--dicomweb", pacs.dicomweb, "--out", str(tmp_path / "cohort.csv")])
    assert res.exit_code == 0, res.output
    assert "2 studies" in res.output and "T1W and T2W found: 2 studies" in res.output
    assert "synthetic cohort, simulated readers" in res.output
    assert len(pd.read_csv(tmp_path / "cohort.csv")) == 2
    res = CliRunner().invoke(app, ["index", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "either a DICOM folder (ROOT) or --dicomweb URL" in res.output
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    res = CliRunner().invoke(app, ["index", "--dicomweb", dead, "--out", str(tmp_path / "y.csv")])
    assert res.exit_code == 2 and res.output.startswith(f"error: {dead}: ") and "cannot connect" in res.output
    assert "Traceback" not in res.output


# -- credentials: used for the requests, never shown, logged or written -------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("http://alice:s3cret@pacs:8042/dicom-web", "http://pacs:8042/dicom-web"),
    ("https://al%40ice:p%3Aw%2F@pacs/dicom-web?x=1", "https://pacs/dicom-web?x=1"),
    ("http://alice@[::1]:8042/dicom-web", "http://[::1]:8042/dicom-web"),
    ("http://u:p@ss@pacs/", "http://pacs/"),                    # an unencoded @ in the password
    ("http://alice:pa/ss@pacs/dicom-web", "http://pacs/dicom-web"),  # an unencoded / ends the authority early
    ("http://alice:pw?x@pacs/dicom-web", "http://pacs/dicom-web"),
    ("http://pacs:8042/dicom-web", "http://pacs:8042/dicom-web"),
    ("http://pacs:8042/studies/a@b", "http://pacs:8042/studies/a@b"),  # an @ in the path is no user-info
    ("127.0.0.1:8042/dicom-web", "127.0.0.1:8042/dicom-web"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_credentials_are_taken_out_of_the_url(monkeypatch) -> None:
    clean, auth = split_credentials("http://al%40ice:p%3Aw@127.0.0.1:8042/dicom-web")
    assert clean == "http://127.0.0.1:8042/dicom-web" and auth == DicomWebAuth("al@ice", "p:w")
    client = DicomWebClient("http://alice:pw-1@127.0.0.1:1/dicom-web/")
    assert client.url == "http://127.0.0.1:1/dicom-web" == client._client.base_url  # requests go without user-info
    assert client.auth_source == "the URL's user-info"
    with pytest.raises(DicomWebError, match="credentials given twice, in the URL and in SPINEDX_DICOMWEB_TOKEN") as e:
        monkeypatch.setenv("SPINEDX_DICOMWEB_TOKEN", "tok-9")
        DicomWebClient("http://alice:pw-1@127.0.0.1:1/dicom-web", auth=DicomWebAuth.from_env())
    assert "pw-1" not in str(e.value)
    with pytest.raises(DicomWebError, match="names user 'alice' but no password"):
        DicomWebClient("http://alice@127.0.0.1:1/dicom-web")
    with pytest.raises(DicomWebError, match="not a usable URL") as e:
        DicomWebClient("http://alice:Secr3t/x@127.0.0.1:1/dicom-web")
    assert "Secr3t" not in str(e.value) and str(e.value).startswith("http://127.0.0.1:1/dicom-web: ")


#: Registered in the authenticated Orthanc; "/", "%" and ":" must be percent-encoded in a URL.
PASSWORD = "Pw-7Zq/x%9:k"
URL_PASSWORD = quote(PASSWORD, safe="")


@pytest.fixture(scope="module")
def auth_pacs(synth_study: Path) -> Iterator:
    """Orthanc with authentication on (one registered user) holding the two synthetic studies."""
    with orthanc_server(users={"alice": PASSWORD}) as server:
        server.upload(sorted((synth_study / "dicom").rglob("*.dcm")))
        yield server


@pytest.fixture
def no_ambient_credentials(tmp_path: Path, monkeypatch) -> None:
    """No SPINEDX_DICOMWEB_* variables and no netrc file but the test's own."""
    for var in ("SPINEDX_DICOMWEB_USER", "SPINEDX_DICOMWEB_PASSWORD", "SPINEDX_DICOMWEB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _assert_no_secret(texts: list[str], folders: list[Path], *secrets: str) -> None:
    blobs = [t.encode() for t in texts] + [p.read_bytes() for f in folders for p in f.rglob("*") if p.is_file()]
    assert blobs and len(blobs) > len(texts)  # there were output files to look into
    for secret in secrets:
        found = [i for i, b in enumerate(blobs) if secret.encode() in b]
        assert not found, f"{secret!r} found"


def test_credentials_from_url_environment_and_netrc_are_never_shown(
        auth_pacs, case: dict, tmp_path: Path, monkeypatch, caplog, no_ambient_credentials) -> None:
    """Against Orthanc with authentication: a URL with user-info, SPINEDX_DICOMWEB_USER/_PASSWORD and a netrc
    file each get in; the password is in no output file, no printed line, no log record (urllib3 and
    dicomweb-client debug included), no answer of the workstation and not in Orthanc's log."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from spinedx.cli import app
    from spinedx.serve import ServeSettings, create_app

    caplog.set_level(logging.DEBUG)
    secret_url = f"http://alice:{URL_PASSWORD}@127.0.0.1:{auth_pacs.port}/dicom-web"
    outputs = []
    out_dir = tmp_path / "out"  # everything written; the netrc file, the credentials' store, lies beside it

    def index(url: str, out: Path, code: int = 0) -> str:
        res = CliRunner().invoke(app, ["index", "--dicomweb", url, "--out", str(out / "cohort.csv")])
        outputs.append(res.output)
        assert res.exit_code == code, res.output
        return res.output

    # 1. user-info in the URL: used, shown without it
    out = index(secret_url, out_dir / "url")
    assert f"indexed {auth_pacs.dicomweb} in" in out and "T1W and T2W found: 2 studies" in out
    assert json.loads((out_dir / "url" / "index.json").read_text())["dicomweb"] == auth_pacs.dicomweb
    # 2. the environment
    monkeypatch.setenv("SPINEDX_DICOMWEB_USER", "alice")
    monkeypatch.setenv("SPINEDX_DICOMWEB_PASSWORD", PASSWORD)
    index(auth_pacs.dicomweb, out_dir / "env")
    monkeypatch.delenv("SPINEDX_DICOMWEB_USER")
    monkeypatch.delenv("SPINEDX_DICOMWEB_PASSWORD")
    # 3. a netrc file (requests reads it when no other credentials are set)
    netrc = tmp_path / "secrets" / "netrc"
    netrc.parent.mkdir()
    netrc.write_text(f"machine 127.0.0.1 login alice password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    index(auth_pacs.dicomweb, out_dir / "netrc")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    # a wrong password: one line naming where the credentials came from, and neither password
    wrong = f"http://alice:{URL_PASSWORD}x@127.0.0.1:{auth_pacs.port}/dicom-web"
    out = index(wrong, out_dir / "wrong", code=2)
    assert out.startswith(f"error: {auth_pacs.dicomweb}: QIDO-RS search for studies: HTTP 401 Unauthorized; "
                          "authentication failed with the credentials from the URL's user-info: check them")
    out = index(auth_pacs.dicomweb, out_dir / "none", code=2)
    assert "authentication failed: the server needs credentials and none were given" in out
    # the workstation on the server, the URL with user-info: series retrieved, the URL shown without it
    texts = []
    with TestClient(create_app(ServeSettings(cohort=out_dir / "ws" / "cohort.csv", dicomweb=secret_url)),
                    base_url="http://127.0.0.1:8765") as client:  # the workstation answers to its own host name
        health = client.get("/api/health")
        assert health.json()["dicomweb"] == auth_pacs.dicomweb
        key = next(c["case"] for c in client.get("/api/cases").json() if c["patient_id"] == case["patient_id"])
        r = client.get(f"/api/cases/{key}")
        assert r.status_code == 200, r.text
        texts += [health.text, r.text, client.get("/api/cases").text]
    n_files = sum(1 for which in ("t1", "t2") for _ in case[which].iterdir())
    assert len(list((out_dir / "ws" / "cohort.dicomweb").rglob("*.dcm"))) == n_files
    assert caplog.records and any(rec.name.startswith("urllib3") for rec in caplog.records)
    _assert_no_secret([*outputs, *texts, caplog.text, auth_pacs.log()], [out_dir], PASSWORD, URL_PASSWORD)


@pytest.mark.slow
def test_predict_and_store_with_url_credentials_write_no_password(
        auth_pacs, tiny_run: Path, case: dict, tmp_path: Path, caplog, no_ambient_credentials) -> None:
    """``spinedx predict --dicomweb http://user:password@.../dicom-web --store``: prediction.json, the SR and the
    overlays record the server without user-info; nothing printed or logged holds the password."""
    from typer.testing import CliRunner

    from spinedx.cli import app

    caplog.set_level(logging.DEBUG)
    study = _study_uid(case["t2"])
    secret_url = f"http://alice:{URL_PASSWORD}@127.0.0.1:{auth_pacs.port}/dicom-web"
    res = CliRunner().invoke(app, [
        "predict", "--model", str(tiny_run), "--dicomweb", secret_url, "--study", study, "--lesion-slices",
        ";".join(map(str, case["slices"])), "--box", ",".join(map(str, case["box"])), "--out", str(tmp_path / "pred"),
        "--store"])
    assert res.exit_code == 0, res.output
    assert f"study {study} on {auth_pacs.dicomweb}: T1W" in res.output
    assert f"into the study on {auth_pacs.dicomweb} (STOW-RS" in res.output
    doc = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    assert doc["inputs"]["dicomweb"]["url"] == auth_pacs.dicomweb == doc["dicom_results"]["stored"]["url"]
    assert list((tmp_path / "pred" / "dicom").glob("*.dcm"))
    _assert_no_secret([res.output, caplog.text, auth_pacs.log()], [tmp_path], PASSWORD, URL_PASSWORD)
