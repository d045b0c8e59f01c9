"""The page in real Chromium (Playwright from PyPI driving Debian's /usr/bin/chromium) against uvicorn on 127.0.0.1.

A user's path on a 1366 x 768 screen: open the page, pick a case, drag a box on the T2W view with the mouse (the
saved box is exactly the pixels dragged over), set the slices, save with Ctrl+S, check the manifest row; predict
with Ctrl+Enter, see the progress, read the probability and the heatmap's colour bar; no console errors on the way.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from spinedx.cohort import load_manifest
from spinedx.explain import DEFAULT_METHOD, METHODS, method_caption

pytestmark = pytest.mark.slow


def wait_js(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true (the page's CSP forbids the eval wait_for_function uses)."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        assert time.time() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in a thread; stopped by :meth:`stop` (also on test failure).

    Args:
        app: the app, or a function of the port that makes it (the app answers only to its own host and port).
    """

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        if callable(app) and not hasattr(app, "router"):
            app = app(self.port)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(manifest: Path, settings_for, ws_run: Path):
    from spinedx.serve import create_app

    # the draft a user starts from: this case's label, slices and box cleared
    cohort = load_manifest(manifest, draft=True)
    target = cohort.cases[2]
    truth = (target.label, target.lesion_slices, target.box)
    target.label, target.lesion_slices, target.box = None, (), (0, 0, 0, 0)
    from spinedx.cohort import write_manifest

    write_manifest(cohort.cases, manifest)
    srv = ServerThread(lambda port: create_app(settings_for(manifest, model=ws_run, port=port)))
    url = srv.start()
    try:
        yield url, target.patient_id, truth
    finally:
        srv.stop()


def pixel_at(page, which: str, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image point (x, y) (column, row; pixel centres at .5) on a pane, computed here from the
    canvas's box, the series' size and spacing and the zoom (not from the page's own geometry code)."""
    cb = page.get_by_test_id(f"{which}-view").bounding_box()
    w, h, zoom, pan, d = page.evaluate(f"[{which}.width, {which}.height, S.viewer.zoom, S.viewer.pan, "
                                       f"S.caseDoc.{which}]")
    sx, sy = d["spacing_mm"]["column"], d["spacing_mm"]["row"]
    wmm, hmm = d["columns"] * sx, d["rows"] * sy
    base = min(w / wmm, h / hmm) * zoom
    ox, oy = (w - wmm * base) / 2 + pan[0], (h - hmm * base) / 2 + pan[1]
    return cb["x"] + (ox + x * base * sx) * cb["width"] / w, cb["y"] + (oy + y * base * sy) * cb["height"] / h


def drag(page, start: tuple[int, int], end: tuple[int, int], pause: float = 0.0) -> None:
    """A left-button drag on T2W from the centre of pixel ``start`` to the centre of pixel ``end`` (column, row)."""
    page.mouse.move(*pixel_at(page, "t2", start[0] + 0.5, start[1] + 0.5))
    page.mouse.down()
    mid = ((start[0] + end[0]) / 2 + 0.5, (start[1] + end[1]) / 2 + 0.5)
    page.mouse.move(*pixel_at(page, "t2", *mid), steps=5)
    if pause:
        time.sleep(pause)
    page.mouse.move(*pixel_at(page, "t2", end[0] + 0.5, end[1] + 0.5), steps=5)
    page.mouse.up()


def test_annotate_and_predict_in_chromium(served, browser, manifest: Path) -> None:
    url, pid, (label, slices, box) = served
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.get_by_test_id("case-list").locator(f"[data-case='{pid}']").click()
    wait_js(page, "document.getElementById('case-title').textContent === " + repr(pid))
    wait_js(page, "document.getElementById('status').textContent.includes('open') && S.viewer.ready()")
    assert "Research use only" in page.get_by_test_id("research-use-only").inner_text()
    # Save and Predict are on the first screen, with their shortcuts
    for name in ("save", "predict"):
        bb = page.get_by_test_id(name).bounding_box()
        assert bb["y"] >= 0 and bb["y"] + bb["height"] <= 768 and bb["x"] + bb["width"] <= 1366, (name, bb)
    assert "Ctrl+S" in page.get_by_test_id("save").inner_text()
    assert "Ctrl+Enter" in page.get_by_test_id("predict").inner_text()

    # go to the lesion's centre slice with the keyboard, then drag the box with the left button over exactly the
    # truth's pixels: from its first pixel (x0, y0) to its last (x1 - 1, y1 - 1)
    k = slices[1]
    current = int(page.evaluate("S.viewer.k"))
    page.locator("body").click(position={"x": 5, "y": 5})
    for _ in range(abs(k - current)):
        page.keyboard.press("ArrowDown" if k > current else "ArrowUp")
    wait_js(page, f"S.viewer.k === {k}")
    n = page.evaluate("S.caseDoc.t2.slices")
    assert page.get_by_test_id("t2-info").inner_text().startswith(f"slice {k + 1}/{n}")  # numbered from 1
    drag(page, (box[0], box[1]), (box[2] - 1, box[3] - 1))
    assert page.get_by_test_id("box").inner_text() == ",".join(map(str, box))  # the drawn box, exactly
    sp = page.evaluate("S.caseDoc.t2.spacing_mm")
    w, h = box[2] - box[0], box[3] - box[1]
    assert page.get_by_test_id("box-size").inner_text() == (
        f"{w} × {h} px = {w * sp['column']:.1f} × {h * sp['row']:.1f} mm")
    # the slices are filled in (numbered from 1 on the page, from 0 in the manifest)
    assert page.get_by_test_id("lesion-slices").input_value() == ";".join(str(s + 1) for s in slices)
    wait_js(page, f"S.t1Drawn === {','.join(map(str, box))!r}")  # the box mapped onto T1 is shown
    page.get_by_test_id("label").select_option(label)
    page.keyboard.press("Control+s")
    wait_js(page, "document.getElementById('status').textContent.startsWith('saved')")

    rec = load_manifest(manifest, draft=True)[pid]
    assert rec.label == label and rec.lesion_slices == slices and rec.box == box
    audit = (manifest.parent / "cohort.audit.jsonl").read_text()
    assert audit.count("\n") == 1 and pid not in audit and '"action": "annotate"' in audit

    page.keyboard.press("Control+Enter")
    # a progress indicator while the model works (its clock counts seconds)
    wait_js(page, "!document.getElementById('predict-progress').hidden")
    assert "predicting" in page.get_by_test_id("predict-progress").inner_text()
    assert "with heatmaps" in page.get_by_test_id("predict-progress").inner_text()
    label = METHODS[DEFAULT_METHOD].label
    wait_js(page, f"document.getElementById('status').textContent.includes('with {label} overlays')", timeout=120)
    p = float(page.get_by_test_id("probability").inner_text())  # with the overlays, from one request
    assert page.get_by_test_id("predict-progress").is_hidden()
    assert method_caption(DEFAULT_METHOD) in page.get_by_test_id("overlay-method").inner_text()
    # the colour bar and what its colours mean for this method (LayerCAM: evidence, scaled per case)
    assert page.get_by_test_id("colorbar").is_visible()
    caption = page.get_by_test_id("heat-caption").inner_text()
    assert "scaled to 0-1 for this case" in caption and "not a probability" in caption
    assert "raises the score" not in page.locator("#result").inner_text()
    assert "mean over the patch and 8 fixed affine views" in page.locator("#pred-notes").inner_text()
    assert page.locator("#overlays img").first.get_attribute("alt").startswith(f"{label} on T1W and T2W")
    assert 0.0 <= p <= 1.0
    assert page.locator("#overlays img").count() == len(slices)
    assert [r.split("\t")[0] for r in page.locator("#slice-table tbody tr").all_inner_texts()] == [
        str(s + 1) for s in slices]
    # issue 20: the decision, and beside the probability what the model was trained on
    assert page.get_by_test_id("decision").inner_text() in ("benign", "malignant", "refer (indeterminate)")
    assert "Trained on a synthetic cohort (8 simulated patients)" in page.get_by_test_id("trained-on").inner_text()
    # a refer is shown as refer: neutral colour (not the calls' red or green), with its reasons in words
    shown = page.evaluate("async () => (await (await api('/api/cases/' + S.key)).json()).prediction")
    page.evaluate("(p) => showPrediction(p)", {**shown, "decision": "refer", "refer_reasons": [
        "outside_training_data"], "refer_reasons_text": "outside the training data", "conformal_set": ["benign"],
        "alpha": 0.1, "slices": []})
    assert page.get_by_test_id("decision").inner_text() == "refer (indeterminate)"
    colour = page.evaluate("getComputedStyle(document.getElementById('call')).color")
    assert colour not in ("rgb(179, 38, 30)", "rgb(31, 94, 42)"), colour  # #call.malignant / #call.benign
    assert page.get_by_test_id("refer-reasons").inner_text() == "Refer: outside the training data."
    # the case list is refreshed asynchronously after the prediction: wait for its badge, then check it
    badge_js = f"document.querySelector(\"[data-case='{pid}'] .badge\")"
    wait_js(page, f"{badge_js} !== null && {badge_js}.textContent === 'predicted'", timeout=30)
    badge = page.get_by_test_id("case-list").locator(f"[data-case='{pid}'] .badge").inner_text()
    assert badge == "predicted"
    actions = [json.loads(line)["action"] for line in (manifest.parent / "cohort.audit.jsonl").read_text().splitlines()]
    assert actions == ["annotate", "explain"]  # Predict is one request: the prediction with its heatmaps
    assert errors == []
