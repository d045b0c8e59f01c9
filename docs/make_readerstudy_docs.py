"""A reader study from plan to report for docs/readers.md ("In the report"), with the real commands.

Runs, in a scratch folder (default /tmp/spinedx_readerstudy_docs):

    spinedx synth cohort --patients 24 --malignant 8 --seed 7
    spinedx extract cohort/cohort.csv --out patches
    spinedx cv patches --out run --profile quick --folds 2 --backbone resnet18 --pretrained none --epochs 2
    spinedx readers plan cohort/cohort.csv --readers senior,r4,r1 --design sequential --seed 2022 --out study
    spinedx serve --study study --cohort cohort/cohort.csv --model run --port <free>

then the three readers read every case through the reader API, **scripted**: nobody reads. Each answers as the
synthetic cohort's simulated reader of the case would (its unaided confidence from
``spinedx.synth.aided.unaided_confidence``) and, aided, moves toward the probability the server shows it with the
reliance of ``spinedx.synth.aided.RELIANCE``. The aided answers are the workstation's real ones (the run's fold
ensemble, computed by the server). Then:

    spinedx readers analyze study --json study_analysis.json
    spinedx stats cohort/cohort.csv --run run --study study
    spinedx report run --cohort cohort/cohort.csv --gallery 0

and a screenshot of the report's reader-study section (Playwright, Debian's Chromium). With ``--report
REPORT.html --shot NAME.png`` it only takes the screenshot of that report's section (the main job's report).

Usage: python docs/make_readerstudy_docs.py [--work DIR] [--out docs/img]
       python docs/make_readerstudy_docs.py --report demo_out/run/report.html --shot readers-6-report-simulated.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reader_screenshots import api  # noqa: E402
from make_workstation_screenshots import run, served  # noqa: E402


def shoot_section(report: Path, out: Path) -> None:
    """The report's reader-study section as a PNG (the sticky navigation bar unstuck so it does not cover it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 900}, device_scale_factor=1)
        page.goto(report.resolve().as_uri())
        page.add_style_tag(content="nav { position: static !important; }")
        page.locator("#readerstudy").screenshot(path=str(out))
        browser.close()
    print(f"wrote {out}")


def read_scripted(url: str, work: Path) -> None:
    """Every reader reads every step through the API, answering as the cohort's simulated reader would."""
    import json

    import numpy as np

    from spinedx.synth.aided import RELIANCE, aided_confidence, call_and_score, unaided_confidence

    study = json.loads((work / "study" / "study.json").read_text())
    patient = {c["case_id"]: c["patient_id"] for c in study["cases"]}
    conf = unaided_confidence(work / "cohort" / "cohort.csv").set_index(["patient_id", "reader"])["q"]
    tokens = {p.stem: p.read_text().strip() for p in (work / "study" / "tokens").iterdir()}
    base = url + "/reader/api"
    for reader in study["readers"]:
        tok = tokens[reader]
        while True:
            st = api(base + "/next", tok)
            if st["status"] != "reading":
                break
            step = st["step"]
            q = float(conf[(patient[step["case_id"]], reader)])
            if step["modality"] == "aided":
                q = float(aided_confidence(q, step["aided"]["probability"], RELIANCE[reader]))
            call, score = call_and_score(np.array([q]))
            api(base + "/reads", tok, "POST", {"step": step["step"], "call": "malignant" if call[0] else "benign",
                                               "score": int(score[0])})
    api(base + "/sessions/1/close", tokens["coordinator"], "POST")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/spinedx_readerstudy_docs"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--report", type=Path, help="only screenshot this report's reader-study section")
    ap.add_argument("--shot", default="readers-5-report.png", help="file name of the screenshot in --out")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        shoot_section(args.report, out / args.shot)
        return
    work: Path = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ["PYTHONPATH"] = str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    sys.path.insert(0, str(REPO / "src"))

    run("synth", "cohort", "--patients", "24", "--malignant", "8", "--seed", "7", cwd=work)
    run("extract", "cohort/cohort.csv", "--out", "patches", "--no-progress", cwd=work)
    run("cv", "patches", "--out", "run", "--profile", "quick", "--folds", "2", "--backbone", "resnet18",
        "--pretrained", "none", "--epochs", "2", "--quiet", cwd=work)
    run("readers", "plan", "cohort/cohort.csv", "--readers", "senior,r4,r1", "--design", "sequential", "--seed",
        "2022", "--out", "study", cwd=work)
    with served("--study", "study", "--cohort", "cohort/cohort.csv", "--model", "run", cwd=work,
                health="/reader/api/health") as url:
        read_scripted(url, work)
    run("readers", "analyze", "study", "--json", "study_analysis.json", cwd=work)
    run("stats", "cohort/cohort.csv", "--run", "run", "--study", "study", "--bootstrap", "500", cwd=work)
    run("report", "run", "--cohort", "cohort/cohort.csv", "--gallery", "0", "--no-progress", cwd=work)
    shoot_section(work / "run" / "report.html", out / args.shot)


if __name__ == "__main__":
    main()
