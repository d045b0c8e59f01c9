"""What a PACS viewer shows: spinedx's SR and heatmap map in OHIF v3 (``@ohif/app`` 3.13.2 from npm, the prebuilt
viewer most PACS users know), served with a test Orthanc's DICOMweb from one loopback origin, in headless Chromium.

Asserted in OHIF's own DOM and screenshots: every lesion slice shows its box and one legible probability (no
overprint, no bare code, no unit "1"), the decision in words; the SR loads into the measurements panel (one
measurement per slice, labelled with the decision); the Parametric Map lies over the T2, on the lesion slices only,
each slice's heat where that slice's map puts it. ``SPINEDX_OHIF_SHOTS=DIR`` keeps the screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from spinedx.interop import write_dicom_results
from spinedx.interop.content import Decision

from .ohif import ohif_dist, ohif_server
from .orthanc import orthanc_server
from .resultcontent import make_content

pytestmark = pytest.mark.slow

#: Headless Chromium with WebGL (FIELD-NOTES: OHIF needs it; swiftshader renders it on the CPU).
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                 "--ignore-gpu-blocklist"]


#: OHIF's first-visit tour covers the page; it is not shown again once its id is in localStorage.
SKIP_TOUR = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"


def _until(fn: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < end, f"OHIF: {what} not seen within {timeout:g} s"
        time.sleep(0.5)


def _lines(page: Any) -> list[str]:
    """The text lines OHIF drew on the viewport (SVG text boxes, one tspan per line)."""
    return [t.strip() for t in page.eval_on_selector_all("svg.svg-layer text tspan",
                                                         "els => els.map(e => e.textContent)") if t.strip()]


def _instance(page: Any) -> int:
    label = page.locator('[data-cy="viewport-overlay-bottom-right"]').inner_text()
    return int(re.search(r"I:\s*(\d+)", label).group(1))


def _shot(page: Any, name: str) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    png = page.screenshot()
    keep = os.environ.get("SPINEDX_OHIF_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{name}.png").write_bytes(png)
    return np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def viewer_study(case: dict, module_tmp: Path) -> dict:
    """The case's DICOM results made from known values: a referral, and a heat map whose hot third moves down
    from slice to slice (so each frame's placement shows)."""
    heat = np.zeros((3, 64, 64), np.float32)
    for i in range(3):
        heat[i, 21 * i:21 * i + 21, 8:56] = 1.0
    decision = Decision("refer", 0.4567, 0.5, refer_reasons=("outside_training_data",), synthetic=True)
    content = replace(make_content(case["slices"], case["box"], decision=decision), heatmaps=heat)
    res = write_dicom_results(None, case["t1"], case["t2"], module_tmp / "res", content=content)
    instance = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID):
                int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in case["t2"].iterdir()}
    return {"results": res, "content": content, "lesion_instances": [instance[u] for u in res.referenced],
            "study": res.study_instance_uid}


def test_ohif_shows_the_sr_and_the_heatmap_over_the_t2(viewer_study: dict, case: dict) -> None:
    from playwright.sync_api import sync_playwright

    res, content = viewer_study["results"], viewer_study["content"]
    dist = ohif_dist()
    logs: list[str] = []
    with orthanc_server() as pacs:
        pacs.upload(sorted(case["t1"].iterdir()) + sorted(case["t2"].iterdir()) + list(res.files))
        with ohif_server(dist, pacs.url) as origin, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
                page.add_init_script(SKIP_TOUR)
                page.goto(f"{origin}/viewer?StudyInstanceUIDs={viewer_study['study']}")
                _until(lambda: page.get_by_text("spinedx AI result", exact=False).count(), 90, "the SR series")
                _check_sr(page, content, viewer_study["lesion_instances"])
                _check_measurements_panel(page, content)
                _check_heatmap(page, viewer_study["lesion_instances"])
            finally:
                browser.close()
    problems = [ln for ln in logs if "No spatial coordinates" in ln or "Error loading displaySet" in ln
                or "Something went wrong" in ln]
    assert problems == []


def _check_sr(page: Any, content: Any, lesion_instances: list[int]) -> None:
    """Each lesion slice: its box, one probability line, the decision in words; nothing overprinted."""
    page.get_by_text("spinedx AI result", exact=False).first.dblclick()
    want = f"Probability of cancer: {100 * content.probability:.2f} %"
    seen = {}
    for i in range(len(lesion_instances)):
        lines = _until(lambda: [ln for ln in _lines(page) if ln.startswith("Probability")] and _lines(page), 60,
                       "the SR's text on the image")
        seen[_instance(page)] = lines
        _shot(page, f"ohif-sr-{i + 1}")
        assert page.locator("svg.svg-layer polyline").count() == 1  # one box on this image: its group's own
        page.locator('[data-cy="viewport-action-arrows-right"]').click()
        time.sleep(1.5)
    assert sorted(seen) == sorted(lesion_instances)  # every box is drawn, each on its own slice
    for lines in seen.values():
        assert lines == ["spinedx: INDETERMINATE, refer (outside the training data):",
                         "trained on a synthetic cohort; research use only:", want, "Fold-model SD: 6.00 %"]
        assert not any(re.search(r"\d+: [A-Z]", ln) or ln.endswith(" 1") for ln in lines)  # no bare code, no "1"


def _check_measurements_panel(page: Any, content: Any) -> None:
    """The SR loads into OHIF's measurements panel: one measurement per lesion slice, named by the decision.

    OHIF offers to load ("track") the SR's measurements when the SR is opened, and withdraws the offer once one
    navigates; so the viewer is opened afresh.
    """
    page.reload()
    _until(lambda: page.get_by_text("spinedx AI result", exact=False).count(), 90, "the SR series")
    page.get_by_text("spinedx AI result", exact=False).first.dblclick()
    _until(lambda: page.get_by_role("button", name="Yes").count(), 60, "the offer to track the SR's measurements")
    page.get_by_role("button", name="Yes").click()
    page.locator('[data-cy="trackedMeasurements-btn"]').click()
    _until(lambda: page.get_by_text(f"Measurements ({len(content.slice_index)})").count(), 30,
           "the measurements panel")
    labels = page.get_by_text("spinedx: INDETERMINATE, refer (outside the training data)")
    assert labels.count() == len(content.slice_index)
    _shot(page, "ohif-measurements")


def _redness(img: np.ndarray) -> np.ndarray:
    return img[..., 0] - np.maximum(img[..., 1], img[..., 2])


def _check_heatmap(page: Any, lesion_instances: list[int]) -> None:
    """The map opens over the T2: heat on the three lesion slices only, its hot band lower on each next slice."""
    page.get_by_text("heatmap over T2", exact=False).first.dblclick()
    pane = page.locator('[data-cy="viewport-pane"]').first
    time.sleep(10)  # the T2 volume and the map load (the scan below fails loudly if they did not)
    box = pane.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    x0, y0, x1, y1 = (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
    hot: dict[int, tuple[float, float, int]] = {}

    def measure() -> int:
        inst = _instance(page)
        img = _shot(page, f"ohif-pmap-I{inst}")[y0:y1, x0:x1]
        ys, xs = np.nonzero(_redness(img) > 60)
        hot[inst] = (float(ys.mean()) if len(ys) else -1.0, float(xs.mean()) if len(xs) else -1.0, len(ys))
        return inst

    for _ in range(40):  # to the first image
        before = _instance(page)
        page.mouse.wheel(0, -100)
        time.sleep(0.7)
        if _instance(page) == before:
            break
    time.sleep(1.5)
    last = measure()
    for _ in range(40):  # then through every image of the series
        page.mouse.wheel(0, 100)
        time.sleep(1.5)
        if _instance(page) == last:
            break
        last = measure()
    heated = sorted(i for i, (_, _, n) in hot.items() if n > 200)
    assert heated == sorted(lesion_instances), hot
    rows = [hot[i][0] for i in lesion_instances]  # in lesion-slice order: the band moves down
    assert rows[0] < rows[1] < rows[2], hot
    cols = [hot[i][1] for i in lesion_instances]
    assert max(cols) - min(cols) < 10, hot  # the same columns of the crop on every slice
