"""A real `spinedx serve --study` killed with SIGKILL mid-session loses no submitted read, and a restarted server
continues at the reader's next unread step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spinedx.readers.plan import plan_study
from spinedx.readers.store import ReadStore

from .test_serve_browser import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def call(url: str, token: str, method: str = "GET", body: dict | None = None, timeout: float = 300) -> dict:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start(study: Path, cohort: Path, run: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "spinedx", "serve", "--study", str(study), "--cohort",
                                 str(cohort), "--model", str(run), "--port", str(port), "--no-register"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/reader/api/health", timeout=2).read()
            return proc
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "spinedx serve did not start"
            time.sleep(0.3)


def test_kill_9_mid_session_loses_no_submitted_read(ws_cohort: Path, ws_run: Path, tmp_path: Path) -> None:
    cohort = ws_cohort / "cohort.csv"
    study = plan_study(cohort, "alice", "sequential", 5, tmp_path / "study")
    tok = (study.path / "tokens" / "alice.token").read_text().strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}/reader/api"
    log = tmp_path / "serve.log"
    proc = start(study.path, cohort, ws_run, port, log)
    try:
        submitted = []
        for _ in range(3):  # unaided, aided (the model's answer), unaided
            st = call(base + "/next", tok)["step"]
            call(base + "/reads", tok, "POST", {"step": st["step"], "call": "benign", "score": 10 + st["step"]})
            submitted.append((st["step"], st["case_id"], st["modality"]))
        assert [m for _, _, m in submitted] == ["unaided", "aided", "unaided"]
        # step 4 is aided: its answer is being computed (it started in the background when step 3 was shown);
        # kill the server while that request is in flight
        inflight = threading.Thread(target=lambda: _ignore(lambda: call(base + "/next", tok, timeout=60)))
        inflight.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        inflight.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    store = ReadStore(study.store_path, study.study_id)  # opens (quick_check) after the kill
    rows = store.reads()
    assert [(r.step, r.case_id, r.modality, r.score) for r in rows] == [
        (s, c, m, 10 + s) for s, c, m in submitted], "every submitted read is there, and nothing else"
    store.close()
    killed = proc.pid
    case4 = study.steps("alice", 1)[3].case_id
    half_made = list((study.path / "aided").rglob(f".*.tmp-{killed}-*"))
    assert half_made or list((study.path / "aided").glob(f"*/{case4}/prediction.json")), "the kill came too late"
    # restarted, the server continues at step 4; an interrupted answer left nothing that counts as made
    proc = start(study.path, cohort, ws_run, port, log)
    try:
        leftovers = list((study.path / "aided").rglob(f".*.tmp-{killed}-*"))
        assert leftovers == [], "the killed server's half-made answer is removed at start-up"
        st = call(base + "/next", tok)
        assert st["status"] == "reading" and st["done"] == 3 and st["step"]["step"] == 4
        assert st["step"]["modality"] == "aided" and 0 <= st["step"]["aided"]["probability"] <= 1
        call(base + "/reads", tok, "POST", {"step": 4, "call": "malignant", "score": 60})
        assert call(base + "/next", tok)["step"]["step"] == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    store = ReadStore(study.store_path, study.study_id)
    assert [r.step for r in store.reads()] == [1, 2, 3, 4]
    store.close()


def _ignore(fn) -> None:
    try:
        fn()
    except (OSError, urllib.error.URLError):
        pass
