"""`spinedx serve --dicomweb URL`: the workstation browses a PACS (a real Orthanc) instead of a folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from spinedx.errors import SpinedxError
from spinedx.io import read_image
from spinedx.predict import predict_case
from spinedx.serve import ServeSettings, create_app

from .orthanc import orthanc_server


@pytest.mark.slow
def test_serve_browses_a_dicomweb_server(tiny_run: Path, case: dict, synth_study: Path, tmp_path: Path) -> None:
    with orthanc_server() as pacs:
        pacs.upload(sorted((synth_study / "dicom").rglob("*.dcm")))
        manifest = tmp_path / "server.csv"
        settings = ServeSettings(cohort=manifest, dicomweb=pacs.dicomweb, model=tiny_run)
        # the workstation answers to its own host name only, and names cases by key (GET /api/cases lists them)
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
            # the server's studies became draft rows: study and series UIDs, no paths, nothing fetched yet
            rows = pd.read_csv(manifest, dtype=str)
            assert sorted(rows.patient_id) == ["SYN0001", "SYN0002"] and rows.study_uid.notna().all()
            cache = tmp_path / "server.dicomweb"
            assert not cache.exists()
            cases = client.get("/api/cases").json()
            assert sorted(c["patient_id"] for c in cases) == ["SYN0001", "SYN0002"]
            assert all(c["images"] for c in cases)  # on the server, so the page can open them
            assert client.get("/api/health").json()["synthetic"] is True

            key = next(c["case"] for c in cases if c["patient_id"] == case["patient_id"])
            r = client.get(f"/api/cases/{key}")
            assert r.status_code == 200, r.text
            detail = r.json()
            # both series were retrieved (WADO-RS) into the cache and read as the local files read
            local_t2, local_t1 = read_image(case["t2"]), read_image(case["t1"])
            assert (detail["t2"]["slices"], detail["t2"]["rows"], detail["t2"]["columns"]) == local_t2.shape
            assert (detail["t1"]["slices"], detail["t1"]["rows"], detail["t1"]["columns"]) == local_t1.shape
            assert len(list(cache.rglob("*.dcm"))) == sum(1 for _ in case["t2"].iterdir()) + sum(
                1 for _ in case["t1"].iterdir())
            png = client.get(f"/api/cases/{key}/t2/{case['slices'][0]}.png")
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

            body = {"lesion_slices": list(case["slices"]), "box": list(case["box"])}
            assert client.put(f"/api/cases/{key}/annotation", json=body).status_code == 200
            r = client.post(f"/api/cases/{key}/predict")
            assert r.status_code == 200, r.text
            got = r.json()
            # a case on the server gets the answer the same files on disk get, and its DICOM results
            ref = predict_case(tiny_run, case["t1"], case["t2"], case["slices"], case["box"], explain=False)
            assert got["probability"] == pytest.approx(ref.decision.probability, abs=1e-4)  # calibrated
            assert got["probability_uncalibrated"] == pytest.approx(ref.probability, abs=1e-4)
            assert got["call"] == ref.call and got["decision"] == ref.decision.decision
            assert (tmp_path / "server.predictions" / case["patient_id"] / "dicom" / "sr.dcm").is_file()
            # the annotation went into the manifest beside the server's UIDs
            saved = pd.read_csv(manifest, dtype=str).set_index("patient_id").loc[case["patient_id"]]
            assert saved.lesion_slices == ";".join(map(str, case["slices"])) and saved.study_uid
            assert saved.t2_series_uid == detail["t2"]["series_uid"]

        # a later start adds the server's studies the manifest lacks and keeps what was annotated
        rows = pd.read_csv(manifest, dtype=str)
        rows[rows.patient_id == case["patient_id"]].to_csv(manifest, index=False)
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
            assert sorted(c["patient_id"] for c in client.get("/api/cases").json()) == ["SYN0001", "SYN0002"]
            ann = client.get(f"/api/cases/{key}").json()["annotation"]
            assert ann["lesion_slices"] == list(case["slices"]) and ann["box"] == list(case["box"])


def test_serve_settings_refuse_two_sources_and_a_bad_url(tmp_path: Path) -> None:
    with pytest.raises(SpinedxError, match="not both"):
        ServeSettings(cohort=tmp_path / "c.csv", dicom_root=tmp_path, dicomweb="http://127.0.0.1:1/dicom-web").check()
    with pytest.raises(SpinedxError, match="http:// or https://"):
        ServeSettings(cohort=tmp_path / "c.csv", dicomweb="127.0.0.1:8042").check()
    with pytest.raises(SpinedxError, match="http:// or https://") as e:  # named without its password
        ServeSettings(cohort=tmp_path / "c.csv", dicomweb="ftp://alice:Secr3t@127.0.0.1/dicom-web").check()
    assert str(e.value).startswith("ftp://127.0.0.1/dicom-web: ") and "Secr3t" not in str(e.value)
