"""Reader mode of the workstation (`spinedx serve --study`) through its API: what is mounted, who may ask what,
the coordinator's counts, corrections, a crossover's washout, and the refusals at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.errors import SpinedxError
from spinedx.readers.plan import plan_study
from spinedx.readers.store import DAY, ReadStore, mark_shown, submit
from spinedx.serve import ServeSettings, create_app
from spinedx.serve.routers.reading import model_identity

from .conftest import BASE_URL

pytestmark = pytest.mark.slow  # the fold models load once per module (seconds), each aided answer is a prediction


#: cases of the serve tests' cohort (tests/serve/conftest.py); a sequential study reads each twice
N_CASES = 8


@pytest.fixture(scope="module")
def shared_state(ws_cohort: Path, ws_run: Path):
    """One workstation state (manifest, volume cache, the run's fold models) shared by this module's apps."""
    from spinedx.serve.state import build_state

    return build_state(ServeSettings(cohort=ws_cohort / "cohort.csv", model=ws_run, register=False))


def tokens(study_dir: Path) -> dict[str, dict[str, str]]:
    return {p.stem: {"Authorization": "Bearer " + p.read_text().strip()} for p in (study_dir / "tokens").iterdir()}


def make_app(study_dir: Path, ws_cohort: Path, ws_run: Path, state) -> TestClient:
    settings = ServeSettings(cohort=ws_cohort / "cohort.csv", model=ws_run, study=study_dir, register=False)
    return TestClient(create_app(settings, state=state), base_url=BASE_URL)


@pytest.fixture
def seq(ws_cohort: Path, tmp_path: Path):
    return plan_study(ws_cohort / "cohort.csv", "alice,bob", "sequential", 9, tmp_path / "study")


def test_only_the_reader_page_and_api_are_served(seq, ws_cohort: Path, ws_run: Path, shared_state) -> None:
    h = tokens(seq.path)
    with make_app(seq.path, ws_cohort, ws_run, shared_state) as c:
        for path in ("/api/cases", "/api/health", "/api/cases/SYN0001", "/api/cases/SYN0001/t2/3.png",
                     "/openapi.json", "/docs", "/static/app.js", "/static/index.html", "/reader/static/app.js",
                     "/reader/static/../static/app.js", "/reader/static/..%2Fapp.js"):
            for who in (None, "alice", "coordinator"):
                r = c.get(path, headers=h[who] if who else {})
                assert r.status_code == 404, (path, who, r.status_code)
                assert "SYN" not in r.text and "label" not in r.text
        assert c.post("/api/cases/SYN0001/predict", headers=h["alice"]).status_code == 404
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/reader/"
        page = c.get("/reader/")
        assert page.status_code == 200 and "spinedx reader study" in page.text
        assert "/reader/static/reader.js" in page.text
        assert c.get("/reader/static/reader.js").status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert c.get("/reader/api/health").json() == {"status": "ok"}


def test_tokens_only_in_the_authorization_header(seq, ws_cohort: Path, ws_run: Path, shared_state) -> None:
    h = tokens(seq.path)
    raw = h["alice"]["Authorization"][7:]
    with make_app(seq.path, ws_cohort, ws_run, shared_state) as c:
        r = c.get("/reader/api/next")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get(f"/reader/api/next?token={raw}").status_code == 401
        c.cookies.set("token", raw)
        assert c.get("/reader/api/next").status_code == 401
        c.cookies.clear()
        assert c.get("/reader/api/next", headers={"Authorization": "Bearer " + raw[:-1]}).status_code == 401
        assert c.get("/reader/api/me", headers=h["alice"]).json()["role"] == "reader"
        assert c.get("/reader/api/me", headers=h["coordinator"]).json()["role"] == "coordinator"
        assert c.get("/reader/api/next", headers=h["coordinator"]).status_code == 403
        assert c.post("/reader/api/reads", headers=h["coordinator"], json={"step": 1}).status_code == 403
        for path in ("/reader/api/progress", "/reader/api/sessions/1/reads"):
            assert c.get(path, headers=h["alice"]).status_code == 403
        assert c.post("/reader/api/sessions/1/close", headers=h["alice"]).status_code == 403
        assert c.post("/reader/api/corrections", headers=h["alice"], json={}).status_code == 403


def test_a_reader_reaches_only_the_due_case(seq, ws_cohort: Path, ws_run: Path, shared_state) -> None:
    h = tokens(seq.path)
    with make_app(seq.path, ws_cohort, ws_run, shared_state) as c:
        a = c.get("/reader/api/next", headers=h["alice"]).json()["step"]
        b = c.get("/reader/api/next", headers=h["bob"]).json()["step"]
        assert a["modality"] == b["modality"] == "unaided" and "aided" not in a
        # the series describe size, spacing, windows, pixel encoding and markers: no UID, path or name
        assert "series_uid" not in a["t2"] and "series_uid" not in a["t1"]
        png = c.get(f"/reader/api/cases/{a['case_id']}/t2/2.png", headers=h["alice"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        raw = c.get(f"/reader/api/cases/{a['case_id']}/t2/2.raw", headers=h["alice"])  # what the page windows
        t2 = a["t2"]
        assert raw.status_code == 200 and len(raw.content) == t2["rows"] * t2["columns"] * 2
        assert set(t2) == {"slices", "rows", "columns", "spacing_mm", "window", "presets", "pixels", "orientation"}
        other = next(x for x in seq.case_ids if x not in (a["case_id"], b["case_id"]))
        for case in (other, b["case_id"]) if a["case_id"] != b["case_id"] else (other,):
            for ext in ("png", "raw"):
                assert c.get(f"/reader/api/cases/{case}/t2/2.{ext}", headers=h["alice"]).status_code == 404
        assert c.get(f"/reader/api/cases/{a['case_id']}/overlay/6.png", headers=h["alice"]).status_code == 404
        assert c.get(f"/reader/api/cases/{a['case_id']}/t3/2.png", headers=h["alice"]).status_code == 404
        # paused: the case is hidden
        assert c.post("/reader/api/pause", headers=h["alice"]).json()["status"] == "paused"
        assert c.get(f"/reader/api/cases/{a['case_id']}/t2/2.png", headers=h["alice"]).status_code == 404
        assert c.get(f"/reader/api/cases/{a['case_id']}/t2/2.raw", headers=h["alice"]).status_code == 404
        paused = c.get("/reader/api/next", headers=h["alice"]).json()
        assert paused == {"status": "paused", "session": 1, "sessions": 1, "done": 0, "total": 2 * N_CASES,
                          "step": {"step": 1}}
        r = c.post("/reader/api/reads", headers=h["alice"], json={"step": 1, "call": "benign", "score": 10})
        assert r.status_code == 409 and "resume" in r.json()["detail"]
        c.post("/reader/api/resume", headers=h["alice"])
        r = c.post("/reader/api/reads", headers=h["alice"], json={"step": 1, "call": "benign", "score": 140})
        assert r.status_code == 422 and "0-100" in r.json()["detail"]
        r = c.post("/reader/api/reads", headers=h["alice"], json={"step": "1", "call": "benign", "score": 14})
        assert r.status_code == 422
        assert c.post("/reader/api/reads", headers=h["alice"], json={"step": 1, "call": "benign", "score": 14}).json()[
            "saved"]
        r = c.post("/reader/api/reads", headers=h["alice"], json={"step": 1, "call": "malignant", "score": 90})
        assert r.status_code == 409, "a submitted read is final"
        aided = c.get("/reader/api/next", headers=h["alice"]).json()["step"]
        assert aided["modality"] == "aided" and aided["case_id"] == a["case_id"]
        assert aided["your_unaided_read"] == {"call": "benign", "score": 14}
        ans = aided["aided"]
        assert 0 <= ans["probability"] <= 1 and ans["call"] in ("benign", "malignant") and ans["threshold"] == 0.5
        assert len(ans["overlays"]) == 3
        ov = c.get(ans["overlays"][0]["url"], headers=h["alice"])
        assert ov.status_code == 200 and ov.content[:4] == b"\x89PNG"
        assert c.get(ans["overlays"][0]["url"], headers=h["bob"]).status_code == 404, "bob's step is unaided"
        # the model's answer is made under the case number and kept in the study folder (once per model)
        kept = list((seq.path / "aided").glob(f"*/{a['case_id']}/prediction.json"))
        assert len(kept) == 1 and f'"patient_id": "{a["case_id"]}"' in kept[0].read_text()
        # the answer is the workstation's: its decision record (issue 20), the probability it states, the notice
        doc = json.loads(kept[0].read_text())
        assert ans["decision"] == doc["decision"] and ans["probability"] == doc["probability"]
        assert ans["refer_reasons"] == doc["refer_reasons"] and ans["synthetic_training"] is True


def test_the_coordinator_sees_counts_until_the_session_is_closed(seq, ws_cohort: Path, ws_run: Path,
                                                                shared_state) -> None:
    h = tokens(seq.path)
    with make_app(seq.path, ws_cohort, ws_run, shared_state) as c:
        st = c.get("/reader/api/next", headers=h["bob"]).json()["step"]
        c.post("/reader/api/reads", headers=h["bob"], json={"step": st["step"], "call": "malignant", "score": 83})
        p = c.get("/reader/api/progress", headers=h["coordinator"])
        body = p.text
        assert p.json()["sessions"] == [{"session": 1, "closed": False, "closed_at": None, "readers": {
            "alice": {"planned": 2 * N_CASES, "read": 0}, "bob": {"planned": 2 * N_CASES, "read": 1}}}]
        assert "83" not in body and "malignant" not in body and st["case_id"] not in body
        r = c.get("/reader/api/sessions/1/reads", headers=h["coordinator"])
        assert r.status_code == 403 and "83" not in r.text
        # a slip reported by bob, corrected by the coordinator (a new row pointing at the read)
        fix = {"reader": "bob", "session": 1, "case_id": st["case_id"], "modality": "unaided", "call": "benign",
               "score": 17, "reason": "bob reported a slip"}
        r = c.post("/reader/api/corrections", headers=h["coordinator"], json={**fix, "reason": ""})
        assert r.status_code == 422
        r = c.post("/reader/api/corrections", headers=h["coordinator"], json={**fix, "modality": "aided"})
        assert r.status_code == 404
        r = c.post("/reader/api/corrections", headers=h["coordinator"], json=fix)
        assert r.json() == {"saved": True, "read": 2, "corrects": 1}
        closed = c.post("/reader/api/sessions/1/close", headers=h["coordinator"]).json()
        assert closed["sessions"][0]["closed"] and closed["sessions"][0]["closed_at"].endswith("Z")
        assert c.post("/reader/api/sessions/1/close", headers=h["coordinator"]).status_code == 409
        reads = c.get("/reader/api/sessions/1/reads", headers=h["coordinator"]).json()
        assert [(x["reader"], x["case_id"], x["call"], x["score"], x["read_id"], x["corrected_by"]) for x in reads] == [
            ("bob", st["case_id"], "benign", 17, 1, 2)]
        # a closed session takes no more reads
        assert c.get("/reader/api/next", headers=h["alice"]).json()["status"] == "done"
        r = c.post("/reader/api/reads", headers=h["alice"], json={"step": 1, "call": "benign", "score": 1})
        assert r.status_code == 409


def test_features_are_asked_when_the_study_says_so(ws_cohort: Path, ws_run: Path, shared_state,
                                                   tmp_path: Path) -> None:
    study = plan_study(ws_cohort / "cohort.csv", "alice", "sequential", 2, tmp_path / "f", features=True)
    h = tokens(study.path)
    with make_app(study.path, ws_cohort, ws_run, shared_state) as c:
        me = c.get("/reader/api/me", headers=h["alice"]).json()
        assert [f["name"] for f in me["features"]] == study.feature_names and len(me["features"]) == 15
        case = c.get("/reader/api/next", headers=h["alice"]).json()["step"]["case_id"]
        r = c.post("/reader/api/reads", headers=h["alice"], json={"step": 1, "call": "benign", "score": 5})
        assert r.status_code == 422 and "15 imaging features" in r.json()["detail"]
        feats = dict.fromkeys(study.feature_names, 1)
        r = c.post("/reader/api/reads", headers=h["alice"],
                   json={"step": 1, "call": "benign", "score": 5, "features": feats})
        assert r.status_code == 200
        # a correction of the call alone keeps the read's features; sent features are checked like a read's
        fix = {"reader": "alice", "session": 1, "case_id": case, "modality": "unaided", "call": "malignant",
               "score": 60, "reason": "slip"}
        r = c.post("/reader/api/corrections", headers=h["coordinator"], json={**fix, "features": {"fluid_sign": 1}})
        assert r.status_code == 422 and "not scored" in r.json()["detail"]
        assert c.post("/reader/api/corrections", headers=h["coordinator"], json=fix).status_code == 200
    store = ReadStore(study.store_path)
    assert [(x.call, x.features, x.corrects) for x in store.reads()] == [("benign", feats, None),
                                                                         ("malignant", feats, 1)]
    store.close()


def test_crossover_session_two_opens_after_the_washout(ws_cohort: Path, ws_run: Path, shared_state,
                                                       tmp_path: Path) -> None:
    study = plan_study(ws_cohort / "cohort.csv", "alice,bob", "crossover", 2, tmp_path / "x", washout_days=28)
    h = tokens(study.path)
    now = [1.0e9]
    with make_app(study.path, ws_cohort, ws_run, shared_state) as c:
        svc = c.app.state.reading
        svc.clock = lambda: now[0]
        # alice's first session, read through the store (the API's own path is tested above)
        for _ in range(N_CASES):  # session 1 of a crossover: every case once
            st = mark_shown(svc.study, svc.store, "alice", now[0])
            now[0] += 20
            submit(svc.study, svc.store, "alice", step=st.step.step, call="benign", score=30, features=None,
                   now=now[0], model=svc.model)
        w = c.get("/reader/api/next", headers=h["alice"]).json()
        assert w["status"] == "waiting" and w["session"] == 2 and "step" not in w
        now[0] += 28 * DAY
        st = c.get("/reader/api/next", headers=h["alice"]).json()
        assert st["status"] == "reading" and st["session"] == 2 and st["done"] == 0 and st["step"]["step"] == 1
        p = c.get("/reader/api/progress", headers=h["coordinator"]).json()
        assert [s["readers"]["alice"]["read"] for s in p["sessions"]] == [N_CASES, 0]
        assert p["washout_days"] == 28


def test_serving_a_study_is_refused_with_another_cohort_or_model(seq, ws_cohort: Path, ws_run: Path, shared_state,
                                                                  tmp_path: Path) -> None:
    edited = tmp_path / "edited" / "cohort.csv"
    edited.parent.mkdir()
    edited.write_text((ws_cohort / "cohort.csv").read_text().replace("benign", "malignant", 1))
    with pytest.raises(SpinedxError, match="not the one the study was planned on"):
        create_app(ServeSettings(cohort=edited, model=ws_run, study=seq.path), state=shared_state)
    with pytest.raises(SpinedxError, match="needs --cohort .* and --model"):
        create_app(ServeSettings(cohort=ws_cohort / "cohort.csv", study=seq.path))
    with pytest.raises(SpinedxError, match="drop DICOM_ROOT"):
        create_app(ServeSettings(cohort=ws_cohort / "cohort.csv", model=ws_run, study=seq.path,
                                 dicom_root=ws_cohort / "dicom"))
    # reader mode serves only token-protected /reader/...: another host needs no --token
    ServeSettings(cohort=ws_cohort / "cohort.csv", model=ws_run, study=seq.path, host="0.0.0.0").check()
    res = CliRunner().invoke(cli, ["serve", "--study", str(seq.path), "--cohort", str(edited), "--model", str(ws_run),
                                   "--port", "1"])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    res = CliRunner().invoke(cli, ["serve", "--study", str(tmp_path / "nope"), "--cohort", str(edited), "--model",
                                   str(ws_run), "--port", "1"])
    assert res.exit_code == 2 and "no such study folder" in res.output
    # once a model aided a read, the study refuses another model
    h = tokens(seq.path)
    with make_app(seq.path, ws_cohort, ws_run, shared_state) as c:
        st = c.get("/reader/api/next", headers=h["alice"]).json()["step"]
        c.post("/reader/api/reads", headers=h["alice"], json={"step": st["step"], "call": "benign", "score": 3})
        assert c.get("/reader/api/next", headers=h["alice"]).json()["step"]["modality"] == "aided"
    store = ReadStore(seq.store_path)
    assert store.meta("model") == model_identity(ws_run)
    store.close()
    # a study whose aided reads showed another model (another run folder, or the same one retrained)
    study2 = plan_study(ws_cohort / "cohort.csv", "alice", "sequential", 1, tmp_path / "s2")
    store = ReadStore(study2.store_path)
    store.set_meta_once("model", "run:0123456789abcdef")
    store.close()
    with pytest.raises(SpinedxError, match="aided reads so far showed model run:0123456789abcdef"):
        create_app(ServeSettings(cohort=ws_cohort / "cohort.csv", model=ws_run, study=study2.path), state=shared_state)
