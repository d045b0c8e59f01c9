"""Results into the PACS: a repeated prediction's SR names the one it supersedes (set by hand as PS3.3 C.17.2.3
says, found on the server or in the workstation's prediction store), the workstation stores its complete results
(STOW-RS, ``--no-store`` to keep them local), and ``spinedx serve --purge-cache`` removes the WADO copies."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from spinedx.errors import SpinedxError
from spinedx.interop import dciodvfy, read_sr, write_dicom_results
from spinedx.interop.dicomweb import DicomWebClient
from spinedx.interop.publish import latest_spinedx_sr, previous_sr, purge_dicomweb_cache, set_predecessor
from spinedx.interop.sr import SRReference

from .orthanc import orthanc_server
from .resultcontent import make_content


def _sr(case: dict, out: Path, **kw: object) -> tuple[Path, SRReference]:
    res = write_dicom_results(None, case["t1"], case["t2"], out, content=make_content(case["slices"], case["box"],
                                                                                      heat=False), **kw)
    return res.sr, SRReference.of(pydicom.dcmread(res.sr, stop_before_pixels=True))


def test_set_predecessor_names_the_superseded_sr(case: dict, tmp_path: Path) -> None:
    _, first = _sr(case, tmp_path / "a")
    path, second = _sr(case, tmp_path / "b")
    set_predecessor(path, first)
    ds = pydicom.dcmread(path)
    item = ds.PredecessorDocumentsSequence[0]
    assert item.StudyInstanceUID == first.study_instance_uid
    assert item.ReferencedSeriesSequence[0].SeriesInstanceUID == first.series_instance_uid
    sop = item.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID) == (first.sop_class_uid, first.sop_instance_uid)
    assert str(ds.SOPInstanceUID) == second.sop_instance_uid  # the same document, amended before it left
    assert dciodvfy(path).errors == [] and read_sr(path).predecessors == [first.sop_instance_uid]
    # highdicom's own predecessor support writes the same sequence
    path3, _ = _sr(case, tmp_path / "c", predecessor=first)
    assert pydicom.dcmread(path3).PredecessorDocumentsSequence == ds.PredecessorDocumentsSequence


def test_set_predecessor_refuses_another_study_and_itself(case: dict, tmp_path: Path) -> None:
    path, own = _sr(case, tmp_path / "a")
    before = path.read_bytes()
    other = SRReference("1.2.3", "1.2.3.4", "1.2.3.4.5")
    with pytest.raises(SpinedxError, match="belongs to study 1.2.3, not to this SR's study"):
        set_predecessor(path, other)
    with pytest.raises(SpinedxError, match="cannot supersede itself"):
        set_predecessor(path, own)
    assert path.read_bytes() == before


def test_previous_sr_from_the_prediction_store() -> None:
    a = SRReference("1.2", "1.2.3", "1.2.3.1").to_dict()
    b = SRReference("1.2", "1.2.4", "1.2.4.1").to_dict()
    own = {"study_instance_uid": "1.2", "sr_series_uid": "1.2.5", "sr_sop_instance_uid": "1.2.5.1"}
    stored = {"dicom_results": {**own, "supersedes": a, "stored": {"sr": b}}}
    preview = {"dicom_results": {**own, "supersedes": a, "stored": None}}  # a prediction without heatmaps
    assert previous_sr(None, store=True) is None
    assert previous_sr(stored, store=True) == SRReference.from_dict(b)  # the last one stored
    assert previous_sr(preview, store=True) == SRReference.from_dict(a)  # carried over a preview
    assert previous_sr(preview, store=False) == SRReference("1.2", "1.2.5", "1.2.5.1")  # the last one written
    assert previous_sr({"dicom_results": {}}, store=False) is None  # before this field existed


def test_the_server_names_the_latest_spinedx_sr(case: dict, synth_study: Path, tmp_path: Path) -> None:
    """Of the study's SRs, spinedx's that no other supersedes, the latest; another vendor's SR is ignored."""
    with orthanc_server() as pacs:
        pacs.upload(sorted((synth_study / "dicom" / case["patient_id"]).rglob("*.dcm")))
        client = DicomWebClient(pacs.dicomweb)
        study = str(pydicom.dcmread(next(case["t2"].iterdir()), stop_before_pixels=True).StudyInstanceUID)
        assert latest_spinedx_sr(client, study) is None
        p1, r1 = _sr(case, tmp_path / "1")
        p2, r2 = _sr(case, tmp_path / "2", predecessor=r1)
        p3, _ = _sr(case, tmp_path / "3")
        foreign = pydicom.dcmread(p3)
        foreign.Manufacturer = "another vendor"
        foreign.save_as(p3)
        pacs.upload([p2, p1, p3])
        got = latest_spinedx_sr(client, study)
        assert got == r2  # r1 is superseded by r2; the other vendor's SR is not spinedx's


def test_purge_cache_removes_only_retrieved_series(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinedx.cli import app

    cache = tmp_path / "server.dicomweb"
    for study, series, n in (("1.2.3", "1.2.3.4", 3), ("1.2.3", "1.2.3.5", 2), ("1.9", "1.9.1", 1)):
        (cache / study / series).mkdir(parents=True)
        for i in range(n):
            (cache / study / series / f"{series}.{i}.dcm").write_bytes(b"DICM")
    (cache / ".tmp-1.9.2").mkdir()  # an interrupted retrieval
    (tmp_path / "server.csv").write_text("patient_id\n")
    stray = cache / "1.9" / "notes.txt"
    stray.write_text("mine")
    with pytest.raises(SpinedxError, match="unexpected entry '1.9/notes.txt'.*nothing was removed"):
        purge_dicomweb_cache(cache)
    assert stray.is_file() and len(list(cache.rglob("*.dcm"))) == 6
    stray.unlink()
    res = CliRunner().invoke(app, ["serve", "--cohort", str(tmp_path / "server.csv"), "--purge-cache"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"removed {cache}: 3 series, 6 files (the server's copies are untouched)"
    assert not cache.exists() and (tmp_path / "server.csv").is_file()
    res = CliRunner().invoke(app, ["serve", "--cohort", str(tmp_path / "server.csv"), "--purge-cache"])
    assert res.exit_code == 0 and res.output.strip() == f"nothing to remove: {cache} does not exist"
    (tmp_path / "x.dicomweb").write_text("a file")
    res = CliRunner().invoke(app, ["serve", "--cohort", str(tmp_path / "x.csv"), "--purge-cache"])
    assert res.exit_code == 2 and res.output.startswith(f"error: {tmp_path / 'x.dicomweb'}: not a folder")


def _series_of(pacs, study: str) -> dict[str, list[str]]:
    """Modality -> SeriesInstanceUIDs of a study on the server."""
    out: dict[str, list[str]] = {}
    for row in DicomWebClient(pacs.dicomweb).search_series(study):
        mod = row["00080060"]["Value"][0]
        out.setdefault(mod, []).append(row["0020000E"]["Value"][0])
    return out


@pytest.mark.slow
def test_the_workstation_stores_each_prediction_superseding_the_last(tiny_run: Path, case: dict, synth_study: Path,
                                                                    tmp_path: Path) -> None:
    """``spinedx serve --dicomweb``: Predict stores the SR, the heatmap map and the overlays into the study; a
    second Predict's SR supersedes the first (the prediction store remembers it); the quick answer without
    heatmaps and ``--no-store`` store nothing."""
    from fastapi.testclient import TestClient

    from spinedx.serve import ServeSettings, create_app

    with orthanc_server() as pacs:
        pacs.upload(sorted((synth_study / "dicom" / case["patient_id"]).rglob("*.dcm")))
        study = str(pydicom.dcmread(next(case["t2"].iterdir()), stop_before_pixels=True).StudyInstanceUID)
        key = case["patient_id"]
        body = {"lesion_slices": list(case["slices"]), "box": list(case["box"])}
        settings = ServeSettings(cohort=tmp_path / "server.csv", dicomweb=pacs.dicomweb, model=tiny_run)
        with TestClient(create_app(settings)) as client:
            assert client.put(f"/api/cases/{key}/annotation", json=body).status_code == 200
            r = client.post(f"/api/cases/{key}/predict")  # the page's quick answer: kept locally
            assert r.status_code == 200, r.text
            assert set(_series_of(pacs, study)) == {"MR"}
            doc = json.loads((tmp_path / "server.predictions" / key / "prediction.json").read_text())
            assert doc["dicom_results"]["stored"] is None and "kept locally" in doc["dicom_results"]["not_stored"]
            assert client.post(f"/api/cases/{key}/explain").status_code == 200
            doc1 = json.loads((tmp_path / "server.predictions" / key / "prediction.json").read_text())
            first = doc1["dicom_results"]["stored"]["sr"]
            series = _series_of(pacs, study)
            assert len(series["SR"]) == 1 and len(series["OT"]) == 2 and len(series["MR"]) == 2  # OT: map, overlays
            assert doc1["dicom_results"]["supersedes"] is None
            assert client.post(f"/api/cases/{key}/explain").status_code == 200
            doc2 = json.loads((tmp_path / "server.predictions" / key / "prediction.json").read_text())
            assert doc2["dicom_results"]["supersedes"] == first
            assert len(_series_of(pacs, study)["SR"]) == 2
            second = doc2["dicom_results"]["stored"]["sr"]
            got = DicomWebClient(pacs.dicomweb).retrieve_series(study, second["series_instance_uid"],
                                                               tmp_path / "got")
            assert read_sr(got[0]).predecessors == [first["sop_instance_uid"]]
        # --no-store: the results stay local, still naming the SR they would supersede
        local = ServeSettings(cohort=tmp_path / "server.csv", dicomweb=pacs.dicomweb, model=tiny_run, store=False)
        with TestClient(create_app(local)) as client:
            assert client.post(f"/api/cases/{key}/explain").status_code == 200
            doc3 = json.loads((tmp_path / "server.predictions" / key / "prediction.json").read_text())
            assert doc3["dicom_results"]["stored"] is None and doc3["dicom_results"]["not_stored"] == \
                "spinedx serve --no-store"
            assert len(_series_of(pacs, study)["SR"]) == 2
            sr = tmp_path / "server.predictions" / key / "dicom" / "sr.dcm"
            assert read_sr(sr).predecessors == [doc2["dicom_results"]["sr_sop_instance_uid"]]
