"""Reading conventions of the workstation in real Chromium (Playwright driving Debian's /usr/bin/chromium): slice
numbers from 1, orientation markers, box size in mm, window/level drawn in the browser (no request while dragging),
presets and invert, undo/redo, PgUp/PgDn/Home/End, form controls that keep their keys (and only theirs), the exact
box, no half-dragged box on T1, the case whose images cannot be shown, and signing in without a token in the URL.

One server (no model) serves this module's cases; each test uses its own case.
"""

from __future__ import annotations

import io
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from spinedx.cohort import load_manifest, write_manifest
from spinedx.serve import ServeSettings, create_app

from .test_serve_browser import ServerThread, browser, drag, pixel_at, wait_js  # noqa: F401 -- browser: a fixture

pytestmark = pytest.mark.slow
TOKEN = "viewer-test-token-0123456789"


@pytest.fixture(scope="module")
def site(ws_cohort: Path, module_tmp: Path):
    """(url, manifest): the cohort served with its DICOM tree, each case's label, box and slices cleared."""
    manifest = module_tmp / "ws" / "cohort.csv"
    cohort = load_manifest(ws_cohort / "cohort.csv", draft=True)
    for c in cohort.cases:
        c.label, c.lesion_slices, c.box = None, (), (0, 0, 0, 0)
    write_manifest(cohort.cases, manifest)
    srv = ServerThread(lambda port: create_app(ServeSettings(cohort=manifest, dicom_root=ws_cohort / "dicom",
                                                             port=port)))
    url = srv.start()
    try:
        yield url, manifest
    finally:
        srv.stop()


def open_case(browser, url: str, pid: str, size: tuple[int, int] = (1366, 768)):  # noqa: F811
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url + "/")
    page.get_by_test_id("case-list").locator(f"[data-case='{pid}']").click()
    wait_js(page, f"S.caseDoc !== null && S.caseDoc.patient_id === {pid!r} && S.viewer.ready()")
    return page


def canvas_pixels(page, expression: str) -> np.ndarray:
    """The RGBA pixels of a canvas the page names (``expression`` evaluates to the canvas), as an array (carried
    as a lossless PNG data URL)."""
    import base64

    url = page.evaluate(f"({expression}).toDataURL('image/png')")
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def test_slices_markers_window_and_keys(site, browser) -> None:  # noqa: F811
    url, manifest = site
    pid = load_manifest(manifest, require_images=False, draft=True).cases[0].patient_id
    page = open_case(browser, url, pid)
    n, k = page.evaluate("[S.caseDoc.t2.slices, S.viewer.k]")
    # slice numbers from 1, on both panes; the tooltip says how they relate to the manifest's
    assert page.get_by_test_id("t2-info").inner_text() == f"slice {k + 1}/{n}"
    assert page.get_by_test_id("t1-info").inner_text().startswith(f"slice {k + 1}/{n}")  # one slice plan
    title = page.get_by_test_id("t2-info").get_attribute("title")
    assert f"slice {k + 1} is index {k} in the manifest and the API, which count from 0" in title
    assert "slice 1 lies towards the patient's left" in title

    # orientation markers from the geometry: A left, P right, H top, F bottom, in the markers' yellow
    assert page.evaluate("S.caseDoc.t2.orientation") == {"left": "A", "right": "P", "top": "H", "bottom": "F",
                                                         "first_slice": "L", "last_slice": "R"}
    px = canvas_pixels(page, "document.getElementById('t2')")
    h, w = px.shape[:2]
    yellow = (px[..., 0] > 200) & (px[..., 1] > 150) & (px[..., 2] < 100)
    mid_y, mid_x = slice(h // 2 - 12, h // 2 + 12), slice(w // 2 - 12, w // 2 + 12)
    for name, region in (("left", yellow[mid_y, :22]), ("right", yellow[mid_y, -22:]), ("top", yellow[:24, mid_x]),
                         ("bottom", yellow[-24:, mid_x])):
        assert region.sum() > 10, name
    assert yellow[h // 4:3 * h // 4, w // 4:3 * w // 4].sum() == 0  # nothing yellow on the anatomy (no box yet)

    # PgUp/PgDn move 5 slices, Home/End to the first and last; the focus is on the viewer (not a form control)
    page.get_by_test_id("t2-view").hover()
    for key, expected in (("Home", 0), ("PageDown", 5), ("PageDown", 10), ("PageUp", 5), ("End", n - 1),
                          ("PageDown", n - 1), ("ArrowUp", n - 2), ("Home", 0), ("PageUp", 0)):
        page.keyboard.press(key)
        assert page.evaluate("S.viewer.k") == expected, key
    page.keyboard.press("PageDown")
    wait_js(page, "S.viewer.ready()")

    # window/level: a right-drag draws again from the pixels in the browser, without a single request
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    before = page.get_by_test_id("t2-wl").inner_text()
    x, y = pixel_at(page, "t2", 256, 256)
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    for i in range(1, 21):
        page.mouse.move(x + 3 * i, y + 2 * i)
    page.mouse.up(button="right")
    after = page.get_by_test_id("t2-wl").inner_text()
    assert after != before and "(auto)" not in after
    assert requests == []
    # ... and what it draws is the server's window function: the same bytes as the server's PNG (+-1 rounding)
    key, kk, c, ww = page.evaluate("[S.key, S.viewer.k, S.viewer.wl.t2.c, S.viewer.wl.t2.w]")
    drawn = canvas_pixels(page, "S.viewer._windowed('t2')")
    req = urllib.request.Request(f"{url}/api/cases/{key}/t2/{kk}.png?wc={c!r}&ww={ww!r}")
    with urllib.request.urlopen(req, timeout=30) as r:
        server = np.asarray(PILImage.open(io.BytesIO(r.read())))
    assert drawn.shape[:2] == server.shape
    assert np.abs(drawn[..., 0].astype(int) - server).max() <= 1 and (drawn[..., 3] == 255).all()

    # presets (buttons and keys 1/2/3 over the pane) and invert (I): still no request
    presets = {p["name"]: p for p in page.evaluate("S.caseDoc.t2.presets")}
    page.get_by_test_id("t2-preset-T2").click()
    assert page.evaluate("[S.viewer.wl.t2.c, S.viewer.wl.t2.w]") == [presets["T2"]["center"], presets["T2"]["width"]]
    assert page.get_by_test_id("t2-wl").inner_text().endswith("zoom 1.00x · slices L→R")
    assert "(T2)" in page.get_by_test_id("t2-wl").inner_text()
    page.get_by_test_id("t2-view").hover()
    page.keyboard.press("1")
    auto = presets["auto"]
    assert page.evaluate("[S.viewer.wl.t2.c, S.viewer.wl.t2.w]") == [auto["center"], auto["width"]]
    plain = canvas_pixels(page, "S.viewer._windowed('t2')")
    page.keyboard.press("i")
    inverted = canvas_pixels(page, "S.viewer._windowed('t2')")
    assert np.array_equal(inverted[..., :3], 255 - plain[..., :3])
    assert "inverted" in page.get_by_test_id("t2-wl").inner_text()
    page.get_by_test_id("t1-view").hover()
    page.keyboard.press("3")  # the pane under the pointer
    t1 = {p["name"]: p for p in page.evaluate("S.caseDoc.t1.presets")}
    got = page.evaluate("[S.viewer.wl.t1.c, S.viewer.preset.t1, S.viewer.invert.t2]")
    assert got == [t1["T2"]["center"], "T2", True]
    assert requests == []
    assert page.errors == []


def test_exact_box_undo_redo_and_no_half_dragged_box_on_t1(site, browser) -> None:  # noqa: F811
    url, manifest = site
    pid = load_manifest(manifest, require_images=False, draft=True).cases[1].patient_id
    page = open_case(browser, url, pid)
    # a drag from pixel (149, 81) to pixel (182, 110) is the box of both pixels and those between, whichever way
    for start, end in (((149, 81), (182, 110)), ((182, 110), (149, 81)), ((182, 81), (149, 110))):
        page.locator("#clear-box").click()  # else a drag from the box's corner resizes it
        drag(page, start, end)
        assert page.get_by_test_id("box").inner_text() == "149,81,183,111", (start, end)
    page.locator("#clear-box").click()
    # at a known zoom where each image pixel is 2 x 2 canvas pixels, pressing on a pixel's corner (the point its
    # pixel starts at) counts that pixel: the box used to end one pixel short (ceil of the end point)
    w = page.evaluate("t2.width")
    pan = -(w - 1024) / 2 - 2 * 140  # image pixel 140 at canvas x 0, 70 at canvas y 0 ...
    page.evaluate(f"S.viewer.zoom = {1024 / w!r}; S.viewer.pan = [{pan!r}, {-(w - 1024) / 2 - 2 * 70!r}]; "
                  "S.viewer.drawAll()")
    assert page.evaluate("S.viewer.geom('t2')") == pytest.approx({"ax": 2, "ay": 2, "ox": -280, "oy": -140})
    page.mouse.move(*pixel_at(page, "t2", 149, 81))
    page.mouse.down()
    page.mouse.move(*pixel_at(page, "t2", 170, 95), steps=4)
    page.mouse.move(*pixel_at(page, "t2", 182, 110), steps=4)
    page.mouse.up()
    assert page.get_by_test_id("box").inner_text() == "149,81,183,111"
    page.keyboard.press("0")  # reset the view
    page.get_by_test_id("save").click()
    wait_js(page, "document.getElementById('status').textContent.startsWith('saved')")
    rec = load_manifest(manifest, require_images=False, draft=True)[pid]
    assert rec.box == (149, 81, 183, 111)
    k = page.evaluate("S.viewer.k")
    assert rec.lesion_slices == (k - 1, k, k + 1)  # filled in from the current slice (0-based in the manifest)

    # T1 shows only a box mapped for the box as it is now: never one from the middle of a drag
    wait_js(page, "S.t1Drawn === '149,81,183,111'")
    seen = []
    page.mouse.move(*pixel_at(page, "t2", 200.5, 200.5))
    page.mouse.down()
    page.mouse.move(*pixel_at(page, "t2", 220.5, 225.5), steps=5)
    time.sleep(0.6)  # long enough for the mapping of this half-dragged box to come back
    seen.append(page.evaluate("[S.t1Drawn, S.box.join(',')]"))
    page.mouse.move(*pixel_at(page, "t2", 240.5, 250.5), steps=5)
    page.mouse.up()
    for _ in range(40):
        seen.append(page.evaluate("[S.t1Drawn, S.box.join(',')]"))
        time.sleep(0.02)
    assert all(drawn is None or drawn == box for drawn, box in seen), seen
    wait_js(page, "S.t1Drawn === '200,200,241,251'")

    # undo / redo of the box and the slices (Ctrl+Z, Ctrl+Shift+Z, Ctrl+Y)
    page.keyboard.press("ArrowDown")
    page.get_by_role("button", name="current ±1").click()  # a button keeps no keys: the viewer's work
    slices = page.get_by_test_id("lesion-slices").input_value()
    assert slices == f"{k + 1};{k + 2};{k + 3}"
    page.keyboard.press("Control+z")
    assert page.get_by_test_id("lesion-slices").input_value() == f"{k};{k + 1};{k + 2}"
    assert page.get_by_test_id("box").inner_text() == "200,200,241,251"
    page.keyboard.press("Control+z")
    assert page.get_by_test_id("box").inner_text() == "149,81,183,111"
    page.keyboard.press("Control+Shift+z")
    assert page.get_by_test_id("box").inner_text() == "200,200,241,251"
    page.keyboard.press("Control+y")
    assert page.get_by_test_id("lesion-slices").input_value() == slices
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    assert page.get_by_test_id("box").inner_text() == "149,81,183,111"
    wait_js(page, "S.t1Drawn === '149,81,183,111'")
    assert page.errors == []


def test_form_controls_keep_their_keys_and_only_theirs(site, browser) -> None:  # noqa: F811
    """The label drop-down used to take the arrow keys meant for the images (and the images took the ones meant
    for a drop-down): a label changed without anyone seeing it."""
    url, manifest = site
    pid = load_manifest(manifest, require_images=False, draft=True).cases[2].patient_id
    page = open_case(browser, url, pid)
    k0 = page.evaluate("S.viewer.k")
    # the drop-down has the focus: the arrows are its own
    page.get_by_test_id("label").focus()
    page.keyboard.press("ArrowDown")
    assert page.get_by_test_id("label").input_value() != "" and page.evaluate("S.viewer.k") == k0
    # a click on the images gives the viewer the focus: the arrows scroll, the label stays
    chosen = page.get_by_test_id("label").input_value()
    page.get_by_test_id("t1-view").click()
    assert page.evaluate("document.activeElement.id") == "viewer"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("S.viewer.k") == k0 + 1 and page.get_by_test_id("label").input_value() == chosen
    # a choice made with the mouse in the drop-down hands the focus back to the viewer
    page.get_by_test_id("label").dispatch_event("pointerdown")
    page.get_by_test_id("label").select_option("benign")
    assert page.evaluate("document.activeElement.id") == "viewer"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("S.viewer.k") == k0 + 2 and page.get_by_test_id("label").input_value() == "benign"
    # typing in the slices field: arrows, Home and End move the caret, not the slices
    page.get_by_test_id("lesion-slices").click()
    for key in ("ArrowUp", "Home", "End", "PageDown"):
        page.keyboard.press(key)
    assert page.evaluate("S.viewer.k") == k0 + 2
    assert page.errors == []


def test_a_case_without_images_says_so_at_the_top(ws_cohort: Path, browser, tmp_path: Path) -> None:  # noqa: F811
    """``spinedx index TREE`` then ``spinedx serve`` without TREE: the cases used to be listed with images, then
    open to black panes with a 404 below the fold."""
    manifest = tmp_path / "cohort.csv"
    write_manifest(load_manifest(ws_cohort / "cohort.csv", draft=True).cases, manifest)
    srv = ServerThread(lambda port: create_app(ServeSettings(cohort=manifest, port=port)))
    url = srv.start()
    try:
        pid = load_manifest(manifest, require_images=False, draft=True).cases[0].patient_id
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(url + "/")
        wait_js(page, "document.querySelectorAll('[data-testid=case-problem]').length === 8")
        item = page.locator(f"[data-case='{pid}']")
        assert item.locator(".badge").inner_text() == "no images"
        problem = page.get_by_test_id("case-problem").first.inner_text()
        assert problem.startswith("the T2W and T1W series lie outside the folders this server reads")
        assert "spinedx serve TREE --cohort cohort.csv" in problem
        item.click()
        alert = page.get_by_test_id("alert")
        wait_js(page, "!document.getElementById('alert').hidden")
        assert alert.inner_text() == f"{pid} cannot be shown: {problem}"
        bb = alert.bounding_box()
        assert bb["y"] + bb["height"] < 200  # at the top of the page, not below the fold
        assert page.evaluate("S.caseDoc") is None and page.get_by_test_id("save").is_disabled()
        assert "8 cannot be shown" in page.locator("#counts").inner_text()
    finally:
        srv.stop()


def test_signing_in_keeps_the_token_out_of_the_address(ws_cohort: Path, browser, tmp_path: Path) -> None:  # noqa: F811
    manifest = tmp_path / "cohort.csv"
    write_manifest(load_manifest(ws_cohort / "cohort.csv", draft=True).cases, manifest)
    srv = ServerThread(lambda port: create_app(ServeSettings(cohort=manifest, dicom_root=ws_cohort / "dicom",
                                                             port=port, token=TOKEN)))
    url = srv.start()
    try:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        # the old way, /#token=...: not used, and taken out of the address bar (it would stay in the history)
        page.goto(url + f"/#token={TOKEN}")
        wait_js(page, "!document.getElementById('signin').hidden")
        assert page.evaluate("location.hash") == "" and TOKEN not in page.url
        assert "a token in the address is not used" in page.locator("#signin-status").inner_text()
        assert page.evaluate("sessionStorage.getItem('spinedx-token')") is None
        page.get_by_test_id("token").fill("wrong-token-wrong-token")
        page.get_by_test_id("signin-button").click()
        wait_js(page, "document.getElementById('signin-status').textContent.includes('not accepted')")
        page.get_by_test_id("token").fill(TOKEN)
        page.get_by_test_id("signin-button").click()
        wait_js(page, "document.querySelectorAll('[data-testid=case-item]').length === 8")
        assert page.get_by_test_id("signin").is_hidden() and page.get_by_test_id("signout").is_visible()
        assert page.evaluate("sessionStorage.getItem('spinedx-token')") == TOKEN
        assert page.evaluate("document.cookie") == "" and TOKEN not in page.url
        page.reload()  # the tab keeps it
        wait_js(page, "document.querySelectorAll('[data-testid=case-item]').length === 8")
    finally:
        srv.stop()
