"""The page in real Chromium (Playwright from PyPI driving Debian's /usr/bin/chromium) against uvicorn on 127.0.0.1.

A user's path: open the page, pick a case, drag a box on the T2W view with the mouse, set the slices, save, check
the manifest row; predict and read the probability; no console errors on the way.
"""

from __future__ import annotations

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
    """uvicorn serving an app on 127.0.0.1 in a thread; stopped by :meth:`stop` (also on test failure)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
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
    srv = ServerThread(create_app(settings_for(manifest, model=ws_run)))
    url = srv.start()
    try:
        yield url, target.patient_id, truth
    finally:
        srv.stop()


def test_annotate_and_predict_in_chromium(served, browser, manifest: Path) -> None:
    url, pid, (label, slices, box) = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.get_by_test_id("case-list").locator(f"[data-case='{pid}']").click()
    wait_js(page, "document.getElementById('case-title').textContent === " + repr(pid))
    wait_js(page, "document.getElementById('status').textContent.includes('open')")
    assert "Research use only" in page.get_by_test_id("research-use-only").inner_text()

    # go to the lesion's centre slice with the keyboard, then drag the box with the left button
    k = slices[1]
    current = int(page.evaluate("S.k"))
    page.locator("body").click(position={"x": 5, "y": 5})
    for _ in range(abs(k - current)):
        page.keyboard.press("ArrowDown" if k > current else "ArrowUp")
    wait_js(page, f"S.k === {k}")
    canvas = page.get_by_test_id("t2-view")
    cb = canvas.bounding_box()
    doc = page.evaluate("S.caseDoc.t2")
    scale = cb["width"] / max(doc["columns"], doc["rows"])  # square pixels, square image: fitted to the canvas
    x0, y0 = cb["x"] + (box[0] + 0.5) * scale, cb["y"] + (box[1] + 0.5) * scale
    x1, y1 = cb["x"] + (box[2] - 0.5) * scale, cb["y"] + (box[3] - 0.5) * scale
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    drawn = [int(v) for v in page.get_by_test_id("box").inner_text().split(",")]
    assert all(abs(a - b) <= 2 for a, b in zip(drawn, box, strict=True)), (drawn, box)
    assert page.get_by_test_id("lesion-slices").input_value() == ";".join(map(str, slices))
    wait_js(page, "S.t1Box !== null")  # the box mapped onto T1 is shown
    page.get_by_test_id("label").select_option(label)
    page.get_by_test_id("save").click()
    wait_js(page, "document.getElementById('status').textContent.startsWith('saved')")

    rec = load_manifest(manifest, draft=True)[pid]
    assert rec.label == label and rec.lesion_slices == slices and rec.box == tuple(drawn)
    assert (manifest.parent / "cohort.audit.jsonl").read_text().count(pid) == 1

    page.get_by_test_id("predict").click()
    wait_js(page, "document.getElementById('status').textContent.startsWith('predicted')", timeout=120)
    p = float(page.get_by_test_id("probability").inner_text())  # shown before the heatmap overlays
    label = METHODS[DEFAULT_METHOD].label
    wait_js(page, f"document.getElementById('status').textContent.includes('with {label} overlays')", timeout=120)
    assert method_caption(DEFAULT_METHOD) in page.get_by_test_id("overlay-method").inner_text()
    assert "mean over the patch and 8 fixed affine views" in page.locator("#pred-notes").inner_text()
    assert page.locator("#overlays img").first.get_attribute("alt").startswith(f"{label} on T1W and T2W")
    assert 0.0 <= p <= 1.0
    assert page.locator("#overlays img").count() == len(slices)
    # issue 20: the decision, and beside the probability what the model was trained on
    assert page.get_by_test_id("decision").inner_text() in ("benign", "malignant", "refer (indeterminate)")
    assert "Trained on a synthetic cohort (8 simulated patients)" in page.get_by_test_id("trained-on").inner_text()
    # a refer is shown as refer: neutral colour (not the calls' red or green), with its reasons in words
    shown = page.evaluate(f"async () => (await (await api('/api/cases/{pid}')).json()).prediction")
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
    assert errors == []
