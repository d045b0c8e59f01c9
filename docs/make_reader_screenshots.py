"""Screenshots of a reader study for docs/readers.md, taken with the real commands.

Runs, in a scratch folder (default /tmp/spinedx_reader_shots):

    spinedx synth cohort --patients 8 --malignant 4 --seed 7
    spinedx extract cohort/cohort.csv --out patches            # a demo model for the aided reads only:
    spinedx cv patches --out run --profile quick --folds 2 --backbone resnet18 --pretrained none --epochs 2 \
        --tta affine8
    spinedx readers plan cohort/cohort.csv --readers senior,r4,r1 --design sequential --seed 2022 --out study \
        --features
    spinedx serve --study study --cohort cohort/cohort.csv --model run --port <free>

then drives Debian's Chromium (Playwright, headless): reader r1 signs in, reads the first case unaided (call,
confidence, features), then aided; the coordinator looks at the progress. Afterwards the three readers finish
through the API with scripted answers, the coordinator closes the session and ``spinedx readers export`` runs.
The demo model is trained for seconds on 8 patients: its probabilities mean nothing.

Usage: python docs/make_reader_screenshots.py [--work DIR] [--out docs/img]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_workstation_screenshots import poll, run, served, top  # noqa: E402


def api(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/spinedx_reader_shots"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    work: Path = args.work
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ["PYTHONPATH"] = str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")

    run("synth", "cohort", "--patients", "8", "--malignant", "4", "--seed", "7", cwd=work)
    run("extract", "cohort/cohort.csv", "--out", "patches", cwd=work)
    run("cv", "patches", "--out", "run", "--profile", "quick", "--folds", "2", "--backbone", "resnet18",
        "--pretrained", "none", "--epochs", "2", "--tta", "affine8", "--quiet", cwd=work)
    run("readers", "plan", "cohort/cohort.csv", "--readers", "senior,r4,r1", "--design", "sequential", "--seed",
        "2022", "--out", "study", "--features", cwd=work)
    tokens = {p.stem: p.read_text().strip() for p in (work / "study" / "tokens").iterdir()}
    with served("--study", "study", "--cohort", "cohort/cohort.csv", "--model", "run", cwd=work,
                health="/reader/api/health") as url:
        shoot(url, tokens, out)
        finish(url, tokens, work)
    run("readers", "export", "study", "--out", "export", cwd=work)
    print((work / "export" / "reads.csv").read_text().splitlines()[:4])


def sign_in(page, url: str, token: str) -> None:
    page.goto(url + "/reader/")
    page.get_by_test_id("token").fill(token)
    page.get_by_test_id("signin-button").click()


def shoot(url: str, tokens: dict[str, str], out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1050}, device_scale_factor=1)
        page.goto(url + "/reader/")
        top(page)
        page.screenshot(path=str(out / "readers-1-signin.png"))
        page.get_by_test_id("token").fill(tokens["r1"])
        page.get_by_test_id("signin-button").click()
        poll(page, "R.step !== null && R.viewer.ready()")
        page.locator("#t2").hover()
        for _ in range(2):
            page.mouse.wheel(0, 120)
        time.sleep(1.0)
        page.get_by_test_id("call-malignant").check()
        page.get_by_test_id("score").fill("70")
        for i, sel in enumerate(page.locator("#features select").all()):
            sel.select_option("1" if i in (0, 2, 10) else "0")
        top(page)
        page.screenshot(path=str(out / "readers-2-unaided.png"), full_page=True)
        page.get_by_test_id("submit").click()
        poll(page, "R.step !== null && R.step.modality === 'aided' && "
             "document.querySelectorAll('#aided img').length > 0", timeout=600)
        time.sleep(1.0)
        top(page)
        page.screenshot(path=str(out / "readers-3-aided.png"), full_page=True)
        coord = browser.new_page(viewport={"width": 1100, "height": 650}, device_scale_factor=1)
        sign_in(coord, url, tokens["coordinator"])
        poll(coord, "!document.getElementById('coordinator').hidden && document.querySelector('[data-reader]')")
        top(coord)
        coord.screenshot(path=str(out / "readers-4-coordinator.png"))
        browser.close()
    for name in ("1-signin", "2-unaided", "3-aided", "4-coordinator"):
        print(f"wrote {out / f'readers-{name}.png'}")


def finish(url: str, tokens: dict[str, str], work: Path) -> None:
    """The three readers finish through the API (scripted answers), then the coordinator closes the session."""
    study = json.loads((work / "study" / "study.json").read_text())
    rng = random.Random(7)
    base = url + "/reader/api"
    for reader in study["readers"]:
        tok = tokens[reader]
        while True:
            st = api(base + "/next", tok)
            if st["status"] == "paused":  # the screenshot browser paused r1's read when it closed
                api(base + "/resume", tok, "POST")
                continue
            if st["status"] != "reading":
                break
            score = rng.randint(0, 100)
            body = {"step": st["step"]["step"], "call": "malignant" if score >= 50 else "benign", "score": score,
                    "features": {n: rng.randint(0, 1) for n in study["feature_names"]}}
            api(base + "/reads", tok, "POST", body)
    print(json.dumps(api(base + "/progress", tokens["coordinator"])["sessions"]))
    api(base + "/sessions/1/close", tokens["coordinator"], "POST")


if __name__ == "__main__":
    main()
