"""DICOMweb against a real PACS (Debian's Orthanc with its DICOMweb plugin): query, retrieve, predict, store;
authentication; unreachable, silent and failing servers and missing studies/series as clean errors."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pydicom
import pytest

from spinedx.interop import dciodvfy, read_sr
from spinedx.interop.dicomweb import DicomWebAuth, DicomWebClient, DicomWebError
from spinedx.interop.pacs import index_server, predict_study, write_server_index
from spinedx.io import read_image
from spinedx.studyindex import index_tree

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

    # the server now holds two more series, both in the source study
    studies = pacs.get("/studies")
    assert len(studies) == 2
    new = [pacs.get(f"/series/{sid}") for sid in set(pacs.get("/series")) - before]
    assert sorted(s["MainDicomTags"]["Modality"] for s in new) == ["OT", "SR"]
    for s in new:
        assert pacs.get(f"/studies/{s['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"] == study
    # what the server holds validates and reads back to the prediction
    client = DicomWebClient(pacs.dicomweb)
    got = client.retrieve_series(study, res.results.sr_series_uid, tmp_path / "sr")
    assert dciodvfy(got[0]).errors == []
    assert read_sr(got[0]).probability == res.prediction.probability
    overlays = client.retrieve_series(study, res.results.overlay_series_uid, tmp_path / "sc")
    assert len(overlays) == len(case["slices"]) and all(dciodvfy(p).errors == [] for p in overlays)


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
    with pytest.raises(DicomWebError, match=r"series 1\.2\.3\.5: HTTP 404") as e:
        client.retrieve_series(study, "1.2.3.5", tmp_path / "x")
    assert pacs.dicomweb in str(e.value)
    assert not (tmp_path / "x").exists()


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
    """Answers every GET with the class's status and an empty JSON list, and records the headers."""

    status = 200
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        body = b"[]"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {"seen": [], "status": 200})
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
