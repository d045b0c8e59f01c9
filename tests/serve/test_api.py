"""The workstation's JSON API through FastAPI's TestClient: cases, slices, annotations, versions, mapping."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from spinedx.cohort import load_manifest, parse_box
from spinedx.io import read_image


def test_health(client) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok" and doc["version"] == "0.1.0"
    assert doc["synthetic"] is True and doc["cases"] == 8 and doc["model"] is None
    assert "research use only" in doc["research_use_only"]


def test_list_and_open_case(client, manifest: Path) -> None:
    cases = client.get("/api/cases").json()
    cohort = load_manifest(manifest, draft=True)
    assert [c["patient_id"] for c in cases] == cohort.patient_ids
    assert all(c["annotated"] and not c["predicted"] and c["images"] for c in cases)
    assert {c["label"] for c in cases} == {"benign", "malignant"}
    pid = cases[0]["patient_id"]
    r = client.get(f"/api/cases/{pid}")
    assert r.status_code == 200
    doc = r.json()
    assert r.headers["etag"] == f'"{doc["version"]}"'
    rec = cohort[pid]
    t2 = read_image(rec.t2, where="t2")
    assert (doc["t2"]["slices"], doc["t2"]["rows"], doc["t2"]["columns"]) == t2.shape
    assert doc["t2"]["spacing_mm"]["slice"] == pytest.approx(float(t2.spacing[2]), abs=1e-3)
    assert doc["annotation"]["lesion_slices"] == list(rec.lesion_slices)
    assert doc["annotation"]["box"] == list(rec.box)
    # synthetic T1 and T2 share one slice plan: T2 slice k lies on T1 slice k
    assert doc["t1_slice_for_t2"] == list(range(t2.shape[0]))
    assert client.get("/api/cases/NOPE").status_code == 404


def test_slice_png_is_the_reader_grid_windowed(client, manifest: Path) -> None:
    rec = load_manifest(manifest, draft=True).cases[0]
    t2 = read_image(rec.t2)
    k = rec.lesion_slices[1]
    r = client.get(f"/api/cases/{rec.patient_id}/t2/{k}.png", params={"wc": 500, "ww": 1000})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = np.asarray(PILImage.open(io.BytesIO(r.content)))
    expected = np.clip((t2.array[k] - 0.0) * (255.0 / 1000.0), 0, 255).astype(np.uint8)
    assert png.shape == t2.array[k].shape
    assert np.array_equal(png, expected)
    assert client.get(f"/api/cases/{rec.patient_id}/t2/{t2.shape[0]}.png").status_code == 422
    assert client.get(f"/api/cases/{rec.patient_id}/t3/0.png").status_code == 404
    assert client.get(f"/api/cases/{rec.patient_id}/t1/0.png").status_code == 200


def test_save_annotation_writes_manifest_and_audit(client, manifest: Path) -> None:
    before = load_manifest(manifest, draft=True)
    pid = before.cases[1].patient_id
    version = client.get(f"/api/cases/{pid}").json()["version"]
    body = {"label": "malignant", "lesion_slices": [5, 6, 7], "box": [200, 180, 260, 240],
            "features": {"fluid_sign": 1, "feature_dark_lines_bands": 0}, "readers": {"reader_senior": "benign"}}
    r = client.put(f"/api/cases/{pid}/annotation", json=body, headers={"If-Match": f'"{version}"'})
    assert r.status_code == 200, r.text
    new_version = r.json()["version"]
    assert new_version != version and r.headers["etag"] == f'"{new_version}"'
    after = load_manifest(manifest, draft=True)
    rec = after[pid]
    assert (rec.label, rec.lesion_slices, rec.box) == ("malignant", (5, 6, 7), (200, 180, 260, 240))
    assert rec.features["fluid_sign"] == 1 and rec.features["dark_lines_bands"] == 0
    assert rec.readers["reader_senior"] == "benign"
    # every other row, and the extra columns of this one, are unchanged
    for c in before.cases:
        if c.patient_id != pid:
            assert after[c.patient_id] == c
    assert rec.extra == before[pid].extra and rec.t1 == before[pid].t1
    audit = [json.loads(line) for line in (manifest.parent / "cohort.audit.jsonl").read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["case"] == pid
    assert audit[0]["changed"]["box"]["to"] == [200, 180, 260, 240]
    assert set(audit[0]) == {"time", "case", "changed", "version_before", "version_after"}
    # the version survives a reload from disk (the hash is of the row, not of the process)
    assert client.get(f"/api/cases/{pid}").json()["version"] == new_version


def test_stale_version_is_refused(client, manifest: Path) -> None:
    rec = load_manifest(manifest, draft=True).cases[0]
    pid = rec.patient_id
    other = "benign" if rec.label == "malignant" else "malignant"
    v0 = client.get(f"/api/cases/{pid}").json()["version"]
    assert client.put(f"/api/cases/{pid}/annotation", json={"label": other},
                      headers={"If-Match": f'"{v0}"'}).status_code == 200
    text = manifest.read_bytes()
    r = client.put(f"/api/cases/{pid}/annotation", json={"label": rec.label}, headers={"If-Match": f'"{v0}"'})
    assert r.status_code == 409 and "changed by someone else" in r.json()["detail"]
    assert manifest.read_bytes() == text  # nothing written
    # a save without a version is accepted; an empty label is allowed (not yet known)
    r = client.put(f"/api/cases/{pid}/annotation", json={"label": None})
    assert r.status_code == 200 and r.json()["annotation"]["label"] is None
    assert load_manifest(manifest, draft=True)[pid].label is None


@pytest.mark.parametrize(("body", "message"), [
    ({"box": "10,10,5,5"}, None),
    ({"box": [1, 2, 3]}, None),
    ({"lesion_slices": "7;7"}, None),
    ({"lesion_slices": [99]}, "out of range: the T2 series has"),
    ({"box": [0, 0, 600, 40]}, "lies outside the T2 image of 512 columns x 512 rows"),
    ({"label": "maybe"}, "'maybe' must be benign or malignant"),
    ({"features": {"nonsense": 1}}, "unknown feature"),
    ({"features": {"fluid_sign": 2}}, "'2' is not 0 or 1"),
    ({"readers": {"reader_r1": "yes"}}, "'yes' must be benign, malignant or empty"),
    ({"colour": "red"}, "unknown field"),
])
def test_invalid_input_gives_the_cli_message(client, manifest: Path, body: dict, message: str | None) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    text = manifest.read_bytes()
    r = client.put(f"/api/cases/{pid}/annotation", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    if message is None:  # the manifest parser's own message, word for word
        from spinedx.cohort import parse_slices

        value = next(iter(body.values()))
        text_value = value if isinstance(value, str) else ",".join(map(str, value))
        try:
            (parse_box if "box" in body else parse_slices)(text_value)
        except ValueError as exc:
            message = str(exc)
    assert message in detail
    assert manifest.read_bytes() == text


def test_mapping_follows_geometry_and_registration(client, manifest: Path) -> None:
    rec = load_manifest(manifest, draft=True).cases[0]
    k = rec.lesion_slices[1]
    box = ",".join(map(str, rec.box))
    r = client.get(f"/api/cases/{rec.patient_id}/mapping", params={"k": k, "box": box})
    doc = r.json()
    assert doc["t1_slice"] == k and doc["registration"] is None
    assert doc["t1_box"]["box"] == pytest.approx(list(rec.box), abs=0.01)  # one slice plan, one 512 x 512 grid
    r = client.get(f"/api/cases/{rec.patient_id}/mapping",
                   params={"k": k, "box": box, "slices": ";".join(map(str, rec.lesion_slices)), "register": True})
    doc = r.json()
    assert doc["registration"]["performed"] is True
    assert abs(doc["t1_slice"] - k) <= 1
    assert client.get(f"/api/cases/{rec.patient_id}/mapping", params={"k": 0, "box": "5,5,1,1"}).status_code == 422


def test_predict_without_model_is_refused(client, manifest: Path) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    r = client.post(f"/api/cases/{pid}/predict")
    assert r.status_code == 409 and "--model" in r.json()["detail"]


def test_openapi_and_docs_page(client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/cases/{patient_id}/annotation" in spec["paths"]
    assert "/api/cases/{patient_id}/predict" in spec["paths"]
    r = client.get("/docs")
    assert r.status_code == 200 and "openapi.json" in r.text


def test_serving_a_dicom_root_indexes_it_into_a_new_manifest(ws_cohort: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from spinedx.serve import ServeSettings, create_app

    manifest = tmp_path / "new" / "cohort.csv"
    with TestClient(create_app(ServeSettings(cohort=manifest, dicom_root=ws_cohort / "dicom"))) as client:
        cases = client.get("/api/cases").json()
        assert client.get("/api/health").json()["synthetic"] is True
    truth = load_manifest(ws_cohort / "cohort.csv")
    assert [c["patient_id"] for c in cases] == truth.patient_ids
    assert not any(c["annotated"] or c["predicted"] for c in cases) and all(c["images"] for c in cases)
    draft = load_manifest(manifest, require_images=False, draft=True)
    assert all(d.label is None and d.t2 == truth[d.patient_id].t2 for d in draft)
    assert (manifest.parent / "index.json").is_file()


@pytest.mark.parametrize(("params", "name"), [
    ({"wc": "nan"}, "wc"), ({"wc": "-inf"}, "wc"), ({"ww": "inf"}, "ww"), ({"ww": "nan"}, "ww"), ({"ww": 0}, "ww"),
    ({"ww": -5}, "ww"), ({"wc": "nan", "ww": "inf"}, "wc"), ({"wc": "1e999"}, "wc"),
])
def test_window_values_must_be_finite(client, manifest: Path, params: dict, name: str) -> None:
    """``?wc=nan&ww=inf`` used to return 200 with a blank PNG."""
    rec = load_manifest(manifest, draft=True).cases[0]
    r = client.get(f"/api/cases/{rec.patient_id}/t2/0.png", params=params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{rec.patient_id}: [{name}] the window ")


def test_if_match_lists_weak_tags_and_star(client, manifest: Path) -> None:
    """RFC 9110 If-Match: a list that names the current version, or *, is accepted (a list used to get 409)."""
    rec = load_manifest(manifest, draft=True).cases[0]
    pid = rec.patient_id
    url = f"/api/cases/{pid}/annotation"

    def put(*if_match: str) -> object:  # always a change: the other label
        label = client.get(f"/api/cases/{pid}").json()["annotation"]["label"]
        other = "benign" if label == "malignant" else "malignant"
        return client.put(url, json={"label": other}, headers=[("If-Match", v) for v in if_match])

    def version() -> str:
        return client.get(f"/api/cases/{pid}").json()["version"]

    for header in (['"0000", "{v}"'], ['W/"{v}"'], ["*"], ['"0000"', '"1111", "{v}"'], ['"a,b", "{v}" ,']):
        v = version()
        r = put(*[h.format(v=v) for h in header])
        assert r.status_code == 200, (header, r.text)
        assert r.json()["version"] != v
    text = manifest.read_bytes()
    r = put('"0000", W/"1111"')
    assert r.status_code == 409 and "yours 0000, 1111" in r.json()["detail"]
    for bad in ('"unclosed', "", '"a" "b"'):
        r = put(bad)
        assert r.status_code == 422 and "[If-Match] cannot read" in r.json()["detail"], (bad, r.text)
    assert manifest.read_bytes() == text  # nothing written


def test_error_bodies_name_no_server_paths(manifest: Path, settings_for, tmp_path: Path) -> None:
    """An unreadable series used to answer 422 with the absolute path of the file; now the file is named as the
    manifest names it (relative to its folder)."""
    from fastapi.testclient import TestClient

    from spinedx.cohort import write_manifest
    from spinedx.serve import create_app

    bad = manifest.parent / "junk" / "T2"
    bad.mkdir(parents=True)
    (bad / "x.dcm").write_text("not DICOM")
    cases = load_manifest(manifest, draft=True).cases
    cases[0].t2 = bad
    write_manifest(cases, manifest)
    pid = cases[0].patient_id
    with TestClient(create_app(settings_for(manifest))) as client:
        for path in (f"/api/cases/{pid}/t2/0.png", f"/api/cases/{pid}"):
            r = client.get(path)
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert detail.startswith(f"{pid} t2: junk/T2/x.dcm: not a DICOM file"), detail
            assert str(tmp_path) not in r.text and "/tmp" not in r.text


def test_public_message_takes_out_server_paths() -> None:
    from spinedx.serve.app import public_message

    roots = [("/srv/study", ""), ("/data/pacs/dicom", "dicom"), ("/opt/run", "run")]
    assert public_message("P1 t2: /srv/study/img/T2: bad", roots) == "P1 t2: img/T2: bad"
    assert public_message("P1 t1: /data/pacs/dicom/P1/T1: 2 slices", roots) == "P1 t1: dicom/P1/T1: 2 slices"
    assert public_message("(/opt/run/folds/0/model.pt) and /opt/run", roots) == "(run/folds/0/model.pt) and run"
    assert public_message("cannot read '/var/lib/x/y.nii.gz'", roots) == "cannot read 'y.nii.gz'"
    assert public_message("/srv/studyother/a: x", roots) == "a: x"  # not under /srv/study: by its name only
    kept = "http://127.0.0.1:8042/dicom-web: HTTP 404; T1/T2 swapped; lesion_slices 6;7"
    assert public_message(kept, roots) == kept


def test_a_body_with_several_problems_names_each_in_one_line(client, manifest: Path) -> None:
    """The body is a Pydantic schema now: every bad field is named at once (the old hand validator stopped at the
    first), in the CLI's words, and an unknown field is listed with the known ones."""
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    text = manifest.read_bytes()
    r = client.put(f"/api/cases/{pid}/annotation", json={"label": "maybe", "box": [1, 2, 3], "colour": "red",
                                                           "features": {"fluid_sign": 2, "nonsense": 1},
                                                           "readers": {"r1": "yes", "r!": "benign"}})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    known = "label, lesion_slices, box, features, readers"
    assert detail.startswith(f"{pid}: unknown field(s) ['colour']; known: {known}; ")
    for part in ("[label] 'maybe' must be benign or malignant", "[box] '1,2,3' is not four numbers x0,y0,x1,y1",
                 "[feature_fluid_sign] '2' is not 0 or 1", "[feature_nonsense] unknown feature; known: ",
                 "[reader_r1] 'yes' must be benign, malignant or empty",
                 "[reader_r!] reader names are letters, digits and _"):
        assert part in detail, part
    assert manifest.read_bytes() == text


@pytest.mark.parametrize(("content", "message"), [
    (b"[1, 2]", "the body must be a JSON object with label, lesion_slices, box, features, readers"),
    (b'"malignant"', "the body must be a JSON object with label, lesion_slices, box, features, readers"),
    (b'{"label": "benign",', "the body is not valid JSON"),
    (b'{"features": [1]}', "[features] must be an object feature name -> 0, 1 or null"),
    (b'{"lesion_slices": [6, true]}', "[lesion_slices] '[6, True]' is not a list of integers"),
])
def test_a_body_that_is_not_the_schema_gets_one_line(client, manifest: Path, content: bytes, message: str) -> None:
    """FastAPI's own 422 is a list of error objects; the workstation answers one line, like every other refusal."""
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    r = client.put(f"/api/cases/{pid}/annotation", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{pid}: {message}"), detail


def test_unknown_case_and_bad_if_match_come_before_a_bad_body(client, manifest: Path) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    assert client.put("/api/cases/NOPE/annotation", json={"colour": "red"}).status_code == 404
    r = client.put(f"/api/cases/{pid}/annotation", json={"colour": "red"}, headers={"If-Match": '"open'})
    assert r.status_code == 422 and "[If-Match] cannot read" in r.json()["detail"]


def test_openapi_documents_the_annotation_schema(client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/cases/{patient_id}/annotation"]["put"]["requestBody"]["content"]["application/json"]
    schema = spec["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"label", "lesion_slices", "box", "features", "readers"}
