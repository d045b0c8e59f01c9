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

from .conftest import BASE_URL, key_of


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
    assert all(c["annotated"] and not c["predicted"] and c["images"] and c["problem"] is None for c in cases)
    assert {c["label"] for c in cases} == {"benign", "malignant"}
    # every case has an opaque key: 16 hex digits, one per case, never the patient's identifier
    keys = [c["case"] for c in cases]
    assert len(set(keys)) == len(keys) and all(len(k) == 16 and int(k, 16) >= 0 for k in keys)
    assert not any(c["patient_id"] in k for c in cases for k in keys)
    pid, key = cases[0]["patient_id"], cases[0]["case"]
    r = client.get(f"/api/cases/{key}")
    assert r.status_code == 200
    doc = r.json()
    assert doc["case"] == key and doc["patient_id"] == pid
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
    # a patient identifier is not a key: the URL that used to work is 404 now
    r = client.get(f"/api/cases/{pid}")
    assert r.status_code == 404 and "its key from the case list" in r.json()["detail"]


def test_slice_png_is_the_reader_grid_windowed(client, manifest: Path) -> None:
    rec = load_manifest(manifest, draft=True).cases[0]
    key = key_of(client, rec.patient_id)
    t2 = read_image(rec.t2)
    k = rec.lesion_slices[1]
    r = client.get(f"/api/cases/{key}/t2/{k}.png", params={"wc": 500, "ww": 1000})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = np.asarray(PILImage.open(io.BytesIO(r.content)))
    expected = np.clip((t2.array[k] - 0.0) * (255.0 / 1000.0), 0, 255).astype(np.uint8)
    assert png.shape == t2.array[k].shape
    assert np.array_equal(png, expected)
    assert client.get(f"/api/cases/{key}/t2/{t2.shape[0]}.png").status_code == 422
    assert client.get(f"/api/cases/{key}/t3/0.png").status_code == 404
    assert client.get(f"/api/cases/{key}/t1/0.png").status_code == 200


def test_save_annotation_writes_manifest_and_audit(client, manifest: Path) -> None:
    before = load_manifest(manifest, draft=True)
    pid = before.cases[1].patient_id
    key = key_of(client, pid)
    version = client.get(f"/api/cases/{key}").json()["version"]
    body = {"label": "malignant", "lesion_slices": [5, 6, 7], "box": [200, 180, 260, 240],
            "features": {"fluid_sign": 1, "feature_dark_lines_bands": 0}, "readers": {"reader_senior": "benign"}}
    r = client.put(f"/api/cases/{key}/annotation", json=body, headers={"If-Match": f'"{version}"'})
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
    audit_text = (manifest.parent / "cohort.audit.jsonl").read_text()
    audit = [json.loads(line) for line in audit_text.splitlines()]
    # who did what to which case: the user (no token: "local"), the action, the case's key, never its patient ID
    assert len(audit) == 1 and audit[0]["case"] == key and pid not in audit_text
    assert audit[0]["user"] == "local" and audit[0]["action"] == "annotate"
    assert audit[0]["changed"]["box"]["to"] == [200, 180, 260, 240]
    assert set(audit[0]) == {"time", "user", "action", "case", "changed", "version_before", "version_after"}
    # the version survives a reload from disk (the hash is of the row, not of the process)
    assert client.get(f"/api/cases/{key}").json()["version"] == new_version


def test_stale_version_is_refused(client, manifest: Path) -> None:
    rec = load_manifest(manifest, draft=True).cases[0]
    pid = rec.patient_id
    key = key_of(client, pid)
    other = "benign" if rec.label == "malignant" else "malignant"
    v0 = client.get(f"/api/cases/{key}").json()["version"]
    assert client.put(f"/api/cases/{key}/annotation", json={"label": other},
                      headers={"If-Match": f'"{v0}"'}).status_code == 200
    text = manifest.read_bytes()
    r = client.put(f"/api/cases/{key}/annotation", json={"label": rec.label}, headers={"If-Match": f'"{v0}"'})
    assert r.status_code == 409 and "changed by someone else" in r.json()["detail"]
    assert manifest.read_bytes() == text  # nothing written
    # a save without a version is accepted; an empty label is allowed (not yet known)
    r = client.put(f"/api/cases/{key}/annotation", json={"label": None})
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
    r = client.put(f"/api/cases/{key_of(client, pid)}/annotation", json=body)
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
    key = key_of(client, rec.patient_id)
    k = rec.lesion_slices[1]
    box = ",".join(map(str, rec.box))
    r = client.get(f"/api/cases/{key}/mapping", params={"k": k, "box": box})
    doc = r.json()
    assert doc["t1_slice"] == k and doc["registration"] is None
    assert doc["t1_box"]["box"] == pytest.approx(list(rec.box), abs=0.01)  # one slice plan, one 512 x 512 grid
    r = client.get(f"/api/cases/{key}/mapping",
                   params={"k": k, "box": box, "slices": ";".join(map(str, rec.lesion_slices)), "register": True})
    doc = r.json()
    assert doc["registration"]["performed"] is True
    assert abs(doc["t1_slice"] - k) <= 1
    assert client.get(f"/api/cases/{key}/mapping", params={"k": 0, "box": "5,5,1,1"}).status_code == 422


def test_predict_without_model_is_refused(client, manifest: Path) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    r = client.post(f"/api/cases/{key_of(client, pid)}/predict")
    assert r.status_code == 409 and "--model" in r.json()["detail"]


def test_openapi_and_docs_page(client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/cases/{case}/annotation" in spec["paths"]
    assert "/api/cases/{case}/predict" in spec["paths"]
    assert "/api/cases/{case}/{which}/{k}.raw" in spec["paths"]
    r = client.get("/docs")
    assert r.status_code == 200 and "openapi.json" in r.text


def test_serving_a_dicom_root_indexes_it_into_a_new_manifest(ws_cohort: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from spinedx.serve import ServeSettings, create_app

    manifest = tmp_path / "new" / "cohort.csv"
    with TestClient(create_app(ServeSettings(cohort=manifest, dicom_root=ws_cohort / "dicom")),
                    base_url=BASE_URL) as client:
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
    r = client.get(f"/api/cases/{key_of(client, rec.patient_id)}/t2/0.png", params=params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{rec.patient_id}: [{name}] the window ")


def test_if_match_lists_weak_tags_and_star(client, manifest: Path) -> None:
    """RFC 9110 If-Match: a list that names the current version, or *, is accepted (a list used to get 409)."""
    rec = load_manifest(manifest, draft=True).cases[0]
    key = key_of(client, rec.patient_id)
    url = f"/api/cases/{key}/annotation"

    def put(*if_match: str) -> object:  # always a change: the other label
        label = client.get(f"/api/cases/{key}").json()["annotation"]["label"]
        other = "benign" if label == "malignant" else "malignant"
        return client.put(url, json={"label": other}, headers=[("If-Match", v) for v in if_match])

    def version() -> str:
        return client.get(f"/api/cases/{key}").json()["version"]

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
    with TestClient(create_app(settings_for(manifest)), base_url=BASE_URL) as client:
        key = key_of(client, pid)
        for path in (f"/api/cases/{key}/t2/0.png", f"/api/cases/{key}"):
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
    r = client.put(f"/api/cases/{key_of(client, pid)}/annotation",
                   json={"label": "maybe", "box": [1, 2, 3], "colour": "red",
                         "features": {"fluid_sign": 2, "nonsense": 1}, "readers": {"r1": "yes", "r!": "benign"}})
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
    r = client.put(f"/api/cases/{key_of(client, pid)}/annotation", content=content,
                   headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{pid}: {message}"), detail


def test_unknown_case_and_bad_if_match_come_before_a_bad_body(client, manifest: Path) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    assert client.put("/api/cases/NOPE/annotation", json={"colour": "red"}).status_code == 404
    assert client.put(f"/api/cases/{pid}/annotation", json={"colour": "red"}).status_code == 404  # not a key
    r = client.put(f"/api/cases/{key_of(client, pid)}/annotation", json={"colour": "red"},
                   headers={"If-Match": '"open'})
    assert r.status_code == 422 and "[If-Match] cannot read" in r.json()["detail"]


def test_openapi_documents_the_annotation_schema(client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/cases/{case}/annotation"]["put"]["requestBody"]["content"]["application/json"]
    schema = spec["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"label", "lesion_slices", "box", "features", "readers"}


# -- the page's pixels, windows and markers ----------------------------------------------------------------------------

def test_raw_slices_are_the_reader_grid_at_full_depth(client, manifest: Path) -> None:
    """``.raw`` is every voxel of the slice, exactly (the page windows it itself): value = intercept + slope * u."""
    rec = load_manifest(manifest, draft=True).cases[0]
    key = key_of(client, rec.patient_id)
    doc = client.get(f"/api/cases/{key}").json()
    for which, path in (("t2", rec.t2), ("t1", rec.t1)):
        img = read_image(path)
        px = doc[which]["pixels"]
        assert px["format"] == "uint16le" and px["slope"] == 1.0  # the synthetic series hold integers: exact
        for k in (0, img.shape[0] - 1):
            r = client.get(f"/api/cases/{key}/{which}/{k}.raw")
            assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
            u = np.frombuffer(r.content, dtype="<u2").reshape(img.shape[1:])
            assert np.array_equal(px["intercept"] + px["slope"] * u.astype(np.float64), img.array[k])
    assert client.get(f"/api/cases/{key}/t2/99.raw").status_code == 422
    assert client.get(f"/api/cases/{key}/t3/0.raw").status_code == 404


def test_pixel_encoding_and_presets() -> None:
    from spinedx.serve.volumes import pixel_encoding, slice_raw, window_presets

    rng = np.random.default_rng(0)
    ints = rng.integers(-1024, 3000, size=(3, 16, 16)).astype(np.float32)
    slope, intercept = pixel_encoding(ints)
    assert (slope, intercept) == (1.0, float(ints.min()))
    u = np.frombuffer(slice_raw(ints[1], (slope, intercept)), dtype="<u2").reshape(16, 16)
    assert np.array_equal(intercept + slope * u, ints[1])
    floats = rng.normal(0.5, 0.1, size=(3, 16, 16)).astype(np.float32)  # not integers: the range over 16 bits
    slope, intercept = pixel_encoding(floats)
    u = np.frombuffer(slice_raw(floats[0], (slope, intercept)), dtype="<u2").reshape(16, 16)
    assert np.max(np.abs(intercept + slope * u - floats[0])) <= slope / 2 + 1e-7
    # background and tissue: auto spans all voxels, T1/T2 the foreground (T2 reaching higher, fluid unsaturated)
    vol = np.zeros((4, 64, 64), np.float32)
    vol[:, 16:48, 16:48] = rng.uniform(200, 1000, size=(4, 32, 32))
    presets = {n: (c, w) for n, c, w in window_presets(vol)}
    assert list(presets) == ["auto", "T1", "T2"]
    lo = {n: c - w / 2 for n, (c, w) in presets.items()}
    hi = {n: c + w / 2 for n, (c, w) in presets.items()}
    assert lo["auto"] == 0.0 and lo["T1"] > 200 and lo["T2"] == pytest.approx(lo["T1"]) and hi["T2"] > hi["T1"]


@pytest.mark.parametrize(("direction", "expected"), [
    # the canonical sagittal grid: columns to posterior, rows to the feet, slices to the patient's right
    (np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
     {"left": "A", "right": "P", "top": "H", "bottom": "F", "first_slice": "L", "last_slice": "R"}),
    # columns reversed (anterior on the right) and rows up: the markers follow the geometry, not a convention
    (np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], float),
     {"left": "P", "right": "A", "top": "F", "bottom": "H", "first_slice": "L", "last_slice": "R"}),
])
def test_orientation_markers_come_from_the_direction(direction: np.ndarray, expected: dict) -> None:
    from spinedx.serve.volumes import orientation_markers

    assert orientation_markers(direction) == expected


def test_oblique_markers_name_the_strongest_direction_first() -> None:
    from spinedx.serve.volumes import direction_letters, orientation_markers

    a = np.deg2rad(30)  # columns tilted 30 degrees from posterior towards the feet
    col = np.array([0, np.cos(a), -np.sin(a)])
    row = np.array([0, np.sin(a), np.cos(a)]) * -1
    d = np.stack([col, row, np.cross(col, row)], axis=1)
    m = orientation_markers(d)
    assert m["right"] == "PF" and m["left"] == "AH"
    assert direction_letters(np.array([0.0, 0.99, -0.1])) == "P"  # below 0.2: left out


def test_case_document_names_presets_pixels_and_markers(client, manifest: Path) -> None:
    rec = load_manifest(manifest, draft=True).cases[0]
    doc = client.get(f"/api/cases/{key_of(client, rec.patient_id)}").json()
    t2 = doc["t2"]
    assert [p["name"] for p in t2["presets"]] == ["auto", "T1", "T2"]
    assert t2["presets"][0]["center"] == t2["window"]["center"] and t2["presets"][0]["width"] == t2["window"]["width"]
    assert t2["orientation"] == {"left": "A", "right": "P", "top": "H", "bottom": "F", "first_slice": "L",
                                 "last_slice": "R"}


# -- every box and slice checked against the image (422 naming the parameter) ------------------------------------------

@pytest.mark.parametrize(("params", "start"), [
    ({"k": 3, "box": "1000,1000,2000,2000"}, "[box] box (1000, 1000, 2000, 2000) lies outside the T2 image of 512 "
                                              "columns x 512 rows"),
    ({"k": 3, "box": "500,10,520,40"}, "[box] box (500, 10, 520, 40) lies outside the T2 image"),
    ({"k": 3, "box": "5,5,1,1"}, "[box] '5,5,1,1' is empty"),
    ({"k": 3, "box": "10,10,40,40", "slices": "6;99"}, "[slices] lesion slice(s) [99] out of range"),
    ({"k": 99}, "[k] slice 99 out of range: the T2 series has"),
    ({"k": -1}, "[k] slice -1 out of range"),
])
def test_mapping_checks_its_parameters_against_the_image(client, manifest: Path, params: dict, start: str) -> None:
    """``mapping?box=1000,1000,2000,2000`` used to answer 200 with a box mapped from outside the image."""
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    r = client.get(f"/api/cases/{key_of(client, pid)}/mapping", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{pid}: {start}"), r.json()["detail"]


def test_a_parameter_fastapi_cannot_read_is_one_line(client, manifest: Path) -> None:
    pid = load_manifest(manifest, draft=True).cases[0].patient_id
    r = client.get(f"/api/cases/{key_of(client, pid)}/mapping", params={"k": "abc"})
    assert r.status_code == 422 and r.json() == {
        "detail": "[k] Input should be a valid integer, unable to parse string as an integer"}


# -- the index-then-serve trap -----------------------------------------------------------------------------------------

def test_cases_whose_images_lie_outside_the_served_folders_are_flagged(manifest: Path, tmp_path: Path) -> None:
    """A manifest indexed from a tree and served without it used to list every case with images, then answer 404
    with "not available" and show black panes."""
    from fastapi.testclient import TestClient

    from spinedx.serve import ServeSettings, create_app

    cohort = load_manifest(manifest, draft=True)
    cases = cohort.cases
    cases[1].t2 = manifest.parent / "gone" / "T2"  # inside the manifest's folder, but missing
    cases[2].t1 = None  # no T1 chosen
    from spinedx.cohort import write_manifest

    write_manifest(cases, manifest)
    with TestClient(create_app(ServeSettings(cohort=manifest)), base_url=BASE_URL) as client:  # no DICOM root
        listed = {c["patient_id"]: c for c in client.get("/api/cases").json()}
        outside = listed[cases[0].patient_id]
        assert outside["images"] is False
        assert outside["problem"] == (
            "the T2W and T1W series lie outside the folders this server reads (the manifest's folder): serve the tree "
            "the manifest was indexed from as well, e.g. spinedx serve TREE --cohort cohort.csv")
        assert listed[cases[1].patient_id]["problem"].startswith(
            "the T2W series named by the manifest's t2 column does not exist (moved or deleted?); the T1W series lies "
            "outside")
        assert listed[cases[2].patient_id]["problem"].startswith("the T2W series lies outside")
        assert "no T1W series: the manifest's t1 column is empty" in listed[cases[2].patient_id]["problem"]
        r = client.get(f"/api/cases/{outside['case']}")
        assert r.status_code == 404
        assert r.json()["detail"] == f"{cases[0].patient_id}: the T2W series lies outside the folders this server " \
                                     "reads (the manifest's folder): serve the tree the manifest was indexed from as " \
                                     "well, e.g. spinedx serve TREE --cohort cohort.csv"
