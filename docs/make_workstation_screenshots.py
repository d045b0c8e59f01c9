"""Screenshots of the workstation for docs/workstation.md, taken with the real commands.

Runs, in a scratch folder (default /tmp/spinedx_ws_shots):

    spinedx synth cohort --patients 8 --malignant 4 --seed 7
    spinedx extract cohort/cohort.csv --out patches            # a demo model for the Predict step only:
    spinedx cv patches --out run --profile quick --folds 2 --backbone resnet18 --pretrained none --epochs 2 \
        --tta affine8                                          # the main job's test-time views
    spinedx index cohort/dicom --out cohort/workstation.csv    # the draft manifest a user starts from
    spinedx serve --cohort cohort/workstation.csv --model run --port <free>

and drives Debian's Chromium (Playwright, headless, a 1366 x 768 window) through one case: open it, drag the box
on T2W, set the slices and label, save (Ctrl+S), predict (Ctrl+Enter). The box and slices are the synthetic truth
of the case (what a reader would draw). The demo model is trained for seconds on 8 patients: its probabilities
mean nothing. Then the index-then-serve trap:

    spinedx index cohort/dicom --out site/cohort.csv           # a manifest in another folder than the tree
    spinedx serve --cohort site/cohort.csv --port <free>       # served without that tree

and the page with its cases flagged, one of them opened. The first heatmap Secondary Capture of the prediction
becomes docs/img/interop_gradcam_sc.png (docs/interop.md).

Usage: python docs/make_workstation_screenshots.py [--work DIR] [--out docs/img]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> None:
    print("$ spinedx " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "spinedx", *args], cwd=cwd, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def top(page) -> None:
    """Scroll back to the top (Playwright scrolls elements it acts on into view) and let the page settle."""
    page.evaluate("window.scrollTo(0, 0)")
    time.sleep(0.5)


def poll(page, expression: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/spinedx_ws_shots"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    work: Path = args.work
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env_path = str(REPO / "src")
    os.environ["PYTHONPATH"] = env_path + os.pathsep + os.environ.get("PYTHONPATH", "")

    run("synth", "cohort", "--patients", "8", "--malignant", "4", "--seed", "7", cwd=work)
    run("extract", "cohort/cohort.csv", "--out", "patches", cwd=work)
    run("cv", "patches", "--out", "run", "--profile", "quick", "--folds", "2", "--backbone", "resnet18",
        "--pretrained", "none", "--epochs", "2", "--tta", "affine8", "--quiet", cwd=work)
    run("index", "cohort/dicom", "--out", "cohort/workstation.csv", "-q", cwd=work)

    from spinedx.cohort import load_manifest

    truth = load_manifest(work / "cohort" / "cohort.csv")
    case = next(c for c in truth.cases if c.label == "malignant")
    with served("--cohort", "cohort/workstation.csv", "--model", "run", cwd=work) as url:
        shoot(url, case, out)
    capture_png(work / "cohort" / "workstation.predictions", out / "interop_gradcam_sc.png")
    run("index", "cohort/dicom", "--out", "site/cohort.csv", "-q", cwd=work)
    with served("--cohort", "site/cohort.csv", cwd=work) as url:
        shoot_trap(url, case, out)


def capture_png(predictions: Path, png: Path) -> None:
    """The first heatmap Secondary Capture the workstation wrote for the case (its ``dicom/`` results), as a PNG for
    docs/interop.md: the pixels a PACS viewer shows."""
    import pydicom
    from PIL import Image

    first = sorted(predictions.glob("*/dicom/gradcam_slice*.dcm"))[0]
    Image.fromarray(pydicom.dcmread(first).pixel_array).save(png)
    print(f"wrote {png} (from {first.relative_to(predictions.parent)})")


@contextlib.contextmanager
def served(*args: str, cwd: Path, health: str = "/api/health", timeout: float = 300.0) -> Iterator[str]:
    """``spinedx serve ARGS --port <free>`` in ``cwd`` (the command printed), waited for until ``health`` answers;
    yields the server's URL and stops the server afterwards. The one server start of the docs scripts."""
    port = free_port()
    print(f"$ spinedx serve {' '.join(args)} --port {port}", flush=True)
    server = subprocess.Popen([sys.executable, "-m", "spinedx", "serve", *args, "--port", str(port)], cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(url + health, timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("spinedx serve did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def pixel_at(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of T2 image point (x, y) at the page's zoom (pixel centres at .5)."""
    cb = page.get_by_test_id("t2-view").bounding_box()
    g = page.evaluate("S.viewer.geom('t2')")
    w = page.evaluate("t2.width")
    return cb["x"] + (g["ox"] + x * g["ax"]) * cb["width"] / w, cb["y"] + (g["oy"] + y * g["ay"]) * cb["height"] / w


def shoot(url: str, case, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from spinedx.explain import DEFAULT_METHOD, METHODS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1366, "height": 768}, device_scale_factor=1)
        page.goto(url + "/")
        page.get_by_test_id("case-list").locator(f"[data-case='{case.patient_id}']").click()
        poll(page, "document.getElementById('status').textContent.includes('open') && S.viewer.ready()")
        k = case.lesion_slices[len(case.lesion_slices) // 2]
        page.locator("body").click(position={"x": 5, "y": 5})
        while page.evaluate("S.viewer.k") != k:
            page.keyboard.press("ArrowDown" if page.evaluate("S.viewer.k") < k else "ArrowUp")
        poll(page, "S.viewer.ready()")
        top(page)
        page.screenshot(path=str(out / "workstation-1-open.png"))

        # the truth's box, dragged from its first pixel to its last (pixel centres)
        x0, y0, x1, y1 = case.box
        page.mouse.move(*pixel_at(page, x0 + 0.5, y0 + 0.5))
        page.mouse.down()
        page.mouse.move(*pixel_at(page, x1 - 0.5, y1 - 0.5), steps=8)
        page.mouse.up()
        poll(page, "S.t1Drawn !== null && S.t1Reg !== null")
        top(page)
        page.screenshot(path=str(out / "workstation-2-box.png"))

        page.get_by_test_id("label").select_option(case.label)
        for name, value in list(case.features.items())[:6]:
            page.locator(f"#f-{name}").select_option(str(value))
        page.get_by_test_id("t2-view").hover()
        page.keyboard.press("3")  # the T2 (fluid) window preset on the T2W pane
        page.keyboard.press("Control+s")
        poll(page, "document.getElementById('status').textContent.startsWith('saved')")
        top(page)
        page.screenshot(path=str(out / "workstation-3-saved.png"))

        page.keyboard.press("Control+Enter")
        poll(page, "!document.getElementById('predict-progress').hidden")
        top(page)
        page.screenshot(path=str(out / "workstation-4-predicting.png"))
        # the page names the run's explanation method (spinedx.explain.DEFAULT_METHOD) in its status line
        label = METHODS[DEFAULT_METHOD].label
        poll(page, f"document.getElementById('status').textContent.includes('with {label} overlays')", timeout=300)
        page.set_viewport_size({"width": 1366, "height": 1000})
        time.sleep(0.5)
        top(page)
        page.screenshot(path=str(out / "workstation-5-predict.png"), full_page=True)
        browser.close()
    for name in ("1-open", "2-box", "3-saved", "4-predicting", "5-predict"):
        print(f"wrote {out / f'workstation-{name}.png'}")


def shoot_trap(url: str, case, out: Path) -> None:
    """The manifest served without the tree it was indexed from: every case flagged, one opened."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1366, "height": 768}, device_scale_factor=1)
        page.goto(url + "/")
        poll(page, "document.querySelectorAll('[data-testid=case-problem]').length > 0")
        page.get_by_test_id("case-list").locator(f"[data-case='{case.patient_id}']").click()
        poll(page, "!document.getElementById('alert').hidden")
        top(page)
        page.screenshot(path=str(out / "workstation-6-no-images.png"))
        browser.close()
    print(f"wrote {out / 'workstation-6-no-images.png'}")


if __name__ == "__main__":
    main()
