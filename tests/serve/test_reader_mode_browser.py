"""The done-when test of reader mode: in real Chromium (Playwright driving Debian's /usr/bin/chromium) two scripted
readers complete a sequential study of 10 synthetic cases against uvicorn on 127.0.0.1, with blinding checked in
the DOM and in every response the browser receives, and the coordinator sees counts, not reads, until closing."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from spinedx.readers.plan import plan_study
from spinedx.readers.reads import export_reads
from spinedx.readers.store import ReadStore
from spinedx.serve import ServeSettings, create_app

from .test_serve_browser import ServerThread, browser, wait_js  # noqa: F401 -- browser is a fixture

pytestmark = pytest.mark.slow
READERS = ("alice", "bob")
#: keys a reader's JSON may hold before the aided step of a case (anything else is a leak)
BLIND_KEYS = {"status", "session", "sessions", "done", "total", "step", "case_id", "modality", "t2", "t1", "slices",
              "rows", "columns", "spacing_mm", "column", "row", "slice", "window", "center", "width",
              "t1_slice_for_t2", "saved", "read", "role", "name", "design", "washout_days", "features", "synthetic",
              "research_use_only", "detail", "presets", "pixels", "format", "slope", "intercept", "orientation", "left",
              "right", "top", "bottom", "first_slice", "last_slice"}


@pytest.fixture(scope="module")
def cohort10(module_tmp: Path) -> Path:
    from spinedx.synth import generate_cohort

    out = module_tmp / "cohort10"
    generate_cohort(out, n_patients=10, n_malignant=4, seed=21, progress=False)
    return out


def identifiers(cohort: Path) -> set[str]:
    """Every patient identifier the cohort's DICOM headers and manifest hold: IDs, names, dates, UIDs."""
    found: set[str] = set()
    for f in (cohort / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
                   "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            v = str(ds.get(kw, "") or "")
            if len(v) >= 6:
                found.add(v)
                if kw.endswith("Date"):
                    found.add(f"{v[:4]}-{v[4:6]}-{v[6:]}")
    return found


def png_chunks(data: bytes) -> list[str]:
    out, i = [], 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        out.append(data[i + 4:i + 8].decode("latin-1"))
        i += 12 + n
    return out


def walk(obj: Any, path: tuple[str, ...] = ()):
    """(key path, value) of every entry of a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*path, k), v
            yield from walk(v, (*path, k))
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v, path)


class Recorder:
    """Every response the page receives (URL, status, headers, body), drained step by step.

    Requests go through ``page.route``: Playwright fetches each response, the test keeps a copy, and the page gets
    exactly those bytes (``Response.body()`` from ``page.on("response")`` returned empty PNGs and never returned
    for POST answers with Debian's Chromium here).
    """

    def __init__(self, page) -> None:
        self.got: list[dict[str, Any]] = []
        page.route("**/*", self._route)

    def _route(self, route) -> None:
        try:
            resp = route.fetch(max_redirects=0)
            body = resp.body()
        except Exception:  # the page is closing (a pause sent while leaving)
            return
        doc = json.loads(body) if "json" in (resp.headers.get("content-type") or "") else None
        self.got.append({"url": resp.url, "status": resp.status, "headers": resp.headers, "body": body, "json": doc})
        route.fulfill(response=resp, body=body)

    def drain(self) -> list[dict[str, Any]]:
        got, self.got = self.got, []
        return got


@pytest.fixture
def served(cohort10: Path, ws_run: Path, tmp_path: Path):
    study = plan_study(cohort10 / "cohort.csv", ",".join(READERS), "sequential", 2022, tmp_path / "study")
    srv = ServerThread(create_app(ServeSettings(cohort=cohort10 / "cohort.csv", model=ws_run, study=study.path,
                                                register=False)))
    url = srv.start()
    try:
        yield url, study
    finally:
        srv.stop()


def token(study, who: str) -> str:
    return (study.path / "tokens" / f"{who}.token").read_text().strip()


def sign_in(page, url: str, tok: str) -> None:
    page.goto(url + "/reader/")  # "/" redirects here (tested in test_reader_mode.py)
    page.get_by_test_id("token").fill(tok)
    page.get_by_test_id("signin-button").click()


def visible_step(page) -> tuple[str, str]:
    return page.get_by_test_id("case-number").inner_text(), page.evaluate("R.step ? R.step.modality : ''")


def wait_step(page, step: int, timeout: float = 180) -> None:
    wait_js(page, f"R.step !== null && R.step.step === {step} && !document.getElementById('reading').hidden "
            "&& R.viewer.ready()", timeout)


def answer(page, call: str, score: int) -> None:
    page.get_by_test_id(f"call-{call}").check()
    page.get_by_test_id("score").fill(str(score))
    page.get_by_test_id("submit").click()


def test_two_readers_complete_a_blinded_sequential_study(served, browser, cohort10: Path) -> None:  # noqa: F811
    url, study = served
    secret_ids = identifiers(cohort10) | {study.patient_of(c) for c in study.case_ids}
    assert len(secret_ids) > 100
    feature_keys = set(study.feature_names) | {f"feature_{n}" for n in study.feature_names}
    from spinedx.features import FEATURE_NAMES

    feature_keys |= set(FEATURE_NAMES)
    pages, recs, errors = {}, {}, []
    for who in READERS:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        recs[who] = Recorder(page)
        pages[who] = page
        sign_in(page, url, token(study, who))
    own: dict[str, dict[str, tuple[str, int]]] = {w: {} for w in READERS}
    model_seen: dict[str, set[str]] = {w: set() for w in READERS}
    blind: list[tuple[str, str, list[dict[str, Any]]]] = []

    def probability_of(case_id: str) -> float:
        docs = list((study.path / "aided").glob(f"*/{case_id}/prediction.json"))
        assert len(docs) == 1
        return float(json.loads(docs[0].read_text())["probability"])  # the probability spinedx states

    def overlay_hashes(case_id: str) -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (study.path / "aided").glob(f"*/{case_id}/overlay_slice*.png")}

    def check_always(who: str, responses: list[dict[str, Any]]) -> None:
        """No patient identifier in any body or header; slice PNGs carry no metadata; no other reader's read."""
        for r in responses:
            blob = r["body"] + json.dumps(r["headers"]).encode()
            for s in secret_ids:
                assert s.encode() not in blob, (who, r["url"], s)
            assert "/api/" not in r["url"].replace("/reader/api/", ""), r["url"]
            if r["url"].endswith(".png") and "/overlay/" not in r["url"]:
                assert png_chunks(r["body"]) == ["IHDR", "IDAT", "IEND"]
            if r["json"] is not None:
                text = r["body"].decode()
                other = next(x for x in READERS if x != who)
                assert other not in text, (who, r["url"])
                for path, value in walk(r["json"]):
                    assert path[-1] not in feature_keys and path[-1] not in ("label", "truth", "patient_id"), path
                    if path[-1] == "score":
                        assert path[-2] == "your_unaided_read", path
                    if path[-1] == "your_unaided_read":
                        case = r["json"]["step"]["case_id"]
                        assert (value["call"], value["score"]) == own[who][case], "only the reader's own read"

    def check_blind(who: str, case_id: str, responses: list[dict[str, Any]]) -> None:
        """Before the aided step of ``case_id``: no model output in any response, nothing but the blind keys
        (checked once every answer is known)."""
        p = probability_of(case_id)
        ov = overlay_hashes(case_id)
        assert len(ov) == 3
        for r in responses:
            assert "/overlay/" not in r["url"], r["url"]
            assert hashlib.sha256(r["body"]).hexdigest() not in ov
            if r["json"] is not None:
                for path, value in walk(r["json"]):
                    assert path[-1] in BLIND_KEYS, (who, case_id, path)
                    assert value != p or isinstance(value, bool), (path, value)

    steps = {w: study.steps(w, 1) for w in READERS}
    assert all(len(s) == 20 for s in steps.values())
    rng_scores = {"alice": [12, 88, 35, 67, 5, 95, 41, 59, 23, 77], "bob": [83, 17, 64, 36, 91, 9, 72, 28, 55, 45]}
    paused_case = None
    for i in range(10):
        for who in READERS:
            page, rec = pages[who], recs[who]
            unaided, aided = steps[who][2 * i], steps[who][2 * i + 1]
            assert (unaided.modality, aided.modality) == ("unaided", "aided")
            if who == "bob" and i == 4:
                # bob closes the browser mid-study; signing in again continues at his next unread step
                page.context.close()
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = pages[who] = ctx.new_page()
                recs[who] = rec = Recorder(page)
                sign_in(page, url, token(study, who))
                wait_js(page, "!document.getElementById('reading').hidden || "
                        "!document.getElementById('paused').hidden", 60)
                if page.get_by_test_id("paused-view").is_visible():
                    page.get_by_test_id("resume").click()
            wait_step(page, unaided.step)
            # --- unaided: the DOM shows the case number and the images, nothing else
            assert visible_step(page) == (unaided.case_id, "unaided")
            assert page.get_by_test_id("aided-panel").is_hidden()
            assert page.evaluate("document.getElementById('aided').children.length") == 0
            html = page.content()
            for s in secret_ids:
                assert s not in html
            assert "p(malignant)" not in page.locator("body").inner_text()
            assert f"step {unaided.step}" in page.get_by_test_id("progress").inner_text()
            page.locator("#t2").hover()
            page.mouse.wheel(0, 120)  # scroll one slice
            # ... and wait for both panes' new images: they are part of what the unaided reader receives
            wait_js(page, "R.viewer.k === Math.floor(R.step.t2.slices / 2) + 1 && R.viewer.ready()")
            # the workstation's viewer (viewer.js): slices numbered from 1, orientation from the geometry
            k, n = page.evaluate("[R.viewer.k, R.step.t2.slices]")
            assert page.locator("#t2-info").inner_text() == f"slice {k + 1}/{n}"
            assert page.evaluate("R.step.t2.orientation.left + R.step.t2.orientation.right") == "AP"
            if who == "alice" and i == 3:
                # a pause: the case is hidden, its clock stops
                page.get_by_test_id("pause").click()
                wait_js(page, "!document.getElementById('paused').hidden")
                assert page.get_by_test_id("t2-view").is_hidden()
                time.sleep(2.0)
                page.get_by_test_id("resume").click()
                wait_step(page, unaided.step)
                paused_case = unaided.case_id
            responses = rec.drain()
            check_always(who, responses)
            blind.append((who, unaided.case_id, responses))
            call = "malignant" if rng_scores[who][i] >= 50 else "benign"
            own[who][unaided.case_id] = (call, rng_scores[who][i])
            answer(page, call, rng_scores[who][i])
            # --- aided: the model's answer is shown, with the reader's own locked unaided read
            wait_step(page, aided.step)
            assert visible_step(page) == (aided.case_id, "aided") and aided.case_id == unaided.case_id
            wait_js(page, "document.querySelectorAll('#aided img').length === 3", 120)
            # the heatmaps' colour bar and what the colours mean (the workstation's words, viewer.js)
            aided_text = page.get_by_test_id("aided-panel").inner_text()
            assert "scaled to 0-1 for this case" in aided_text and "raises the score" not in aided_text
            assert page.locator("#aided [data-testid=colorbar]").is_visible()
            p = probability_of(aided.case_id)
            assert page.get_by_test_id("aided-probability").inner_text() == f"{p:.3f}"
            decision = json.loads(next((study.path / "aided").glob(f"*/{aided.case_id}/prediction.json"))
                                  .read_text())["decision"]
            assert page.get_by_test_id("aided-decision").inner_text() == \
                " → " + ("refer (indeterminate)" if decision == "refer" else decision)
            assert "Trained on a synthetic cohort" in page.get_by_test_id("aided-trained-on").inner_text()
            own_text = page.get_by_test_id("own-unaided").inner_text()
            assert own_text.endswith(f"{call}, confidence {rng_scores[who][i]}")
            responses = rec.drain()
            check_always(who, responses)
            docs = [r["json"] for r in responses
                    if isinstance(r["json"], dict) and isinstance(r["json"].get("step"), dict)]
            assert any(d["step"].get("aided", {}).get("probability") == p for d in docs)
            assert sum("/overlay/" in r["url"] for r in responses) == 3
            model_seen[who].add(aided.case_id)
            answer(page, "malignant" if p >= 0.5 else "benign", int(round(p * 100)))
    for who in READERS:
        wait_js(pages[who], "!document.getElementById('done').hidden")
        check_always(who, recs[who].drain())
        assert model_seen[who] == set(study.case_ids)
    assert len(blind) == 20
    for who, case_id, responses in blind:
        check_blind(who, case_id, responses)
        # each blind phase held the step itself and its images: the checks saw what the reader saw
        assert any(isinstance((r["json"] or {}).get("step"), dict) and r["json"]["step"].get("case_id") == case_id
                   for r in responses), (who, case_id)
        assert sum(r["url"].split("?")[0].endswith(".raw") for r in responses) >= 4, (who, case_id)
    assert errors == []

    # the store holds every read, timed by the server, the pause excluded
    store = ReadStore(study.store_path, study.study_id)
    rows = store.reads()
    assert len(rows) == 40 and all(r.corrects is None for r in rows)
    for who in READERS:
        mine = {r.case_id: (r.call, r.score) for r in rows if r.reader == who and r.modality == "unaided"}
        assert mine == own[who]
    paused = next(r for r in rows if r.reader == "alice" and r.case_id == paused_case and r.modality == "unaided")
    assert paused.seconds is not None and paused.seconds < paused.submitted_at - paused.shown_at - 1.5
    assert all(r.seconds is not None and r.seconds > 0 for r in rows)
    store.close()

    # a reader token cannot reach the annotation API; the coordinator sees counts, then reads after closing
    for path in ("/api/cases", "/api/health", f"/api/cases/{study.patient_of('C01')}"):
        r = pages["alice"].request.get(url + path, headers={"Authorization": "Bearer " + token(study, "alice")})
        assert r.status == 404, path
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    rec = Recorder(page)
    sign_in(page, url, token(study, "coordinator"))
    wait_js(page, "!document.getElementById('coordinator').hidden && document.querySelector('[data-reader]')")
    table = page.get_by_test_id("progress-table").inner_text()
    assert "alice\t20\t20" in table and "bob\t20\t20" in table
    assert page.locator("table.reads").count() == 0
    for r in rec.drain():
        if r["json"] is not None:
            assert not any(k[-1] in ("call", "score", "case_id") for k, _ in walk(r["json"])), r["url"]
    page.get_by_test_id("close-session-1").click()
    wait_js(page, "document.querySelector('[data-testid=close-session-1]').textContent.startsWith('Confirm')")
    page.get_by_test_id("close-session-1").click()
    wait_js(page, "document.querySelector('[data-testid=reads-1]') !== null")
    assert page.locator("[data-testid=reads-1] tr").count() == 41
    res = export_reads(study.path, study.path.parent / "export")
    assert res.n_reads == 40 and res.n_cases == 10 and res.completeness.read == 40
