"""The store of reads: append-only, one read per step, corrections that point at what they correct, server-side
timing without paused time, the reading state machine (washout, closed sessions), durability under `kill -9`,
and `spinedx readers export`."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.readers.plan import plan_study
from spinedx.readers.reads import reads_frame, truth_frame
from spinedx.readers.store import (
    DAY,
    ReadConflict,
    ReadInvalid,
    ReadStore,
    close_session,
    mark_shown,
    pause,
    progress,
    reader_state,
    resume,
    submit,
)


def make_cohort(folder: Path, n: int = 6) -> Path:
    """A manifest of ``n`` cases (every third malignant) whose image paths exist as empty folders."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["patient_id,label,t1,t2,lesion_slices,box"]
    for i in range(n):
        pid = f"P{i:03d}"
        for w in ("t1", "t2"):
            (folder / pid / w).mkdir(parents=True, exist_ok=True)
        lines.append(f'{pid},{"malignant" if i % 3 == 0 else "benign"},{pid}/t1,{pid}/t2,4;5;6,"10,10,40,40"')
    path = folder / "cohort.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    return make_cohort(tmp_path / "cohort")


@pytest.fixture
def seq(cohort: Path, tmp_path: Path):
    study = plan_study(cohort, "alice,bob", "sequential", 4, tmp_path / "seq")
    store = ReadStore(study.store_path, study.study_id)
    yield study, store
    store.close()


def read_all(study, store, reader: str, t0: float, *, call="benign", score=30, features=None) -> float:
    """Read every due step of the reader's current session, 10 s each; returns the clock after."""
    t = t0
    while True:
        st = mark_shown(study, store, reader, t)
        if st.status != "reading":
            return t
        t += 10
        submit(study, store, reader, step=st.step.step, call=call, score=score, features=features, now=t, model="m")
        t += 1


def test_reads_and_events_cannot_be_updated_or_deleted(seq) -> None:
    study, store = seq
    st = mark_shown(study, store, "alice", 100.0)
    submit(study, store, "alice", step=st.step.step, call="benign", score=20, features=None, now=110.0, model=None)
    con = sqlite3.connect(study.store_path)
    for sql in ("UPDATE reads SET call = 'malignant'", "DELETE FROM reads", "UPDATE events SET at = 0",
                "DELETE FROM events", "UPDATE meta SET value = 'x'", "DELETE FROM meta"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only|written once"):
            con.execute(sql)
    # the schema's own checks hold for rows written around the API
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO reads(reader, session, step, case_id, modality, call, score, submitted_at, author) "
                    "VALUES ('x', 1, 1, 'C01', 'aided', 'maybe', 50, 1, 'x')")
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO reads(reader, session, step, case_id, modality, call, score, submitted_at, author) "
                    "VALUES ('x', 1, 1, 'C01', 'aided', 'benign', 101, 1, 'x')")
    con.close()
    assert [r.call for r in store.reads()] == ["benign"]


def test_one_read_per_step_and_the_first_stands(seq) -> None:
    study, store = seq
    st = mark_shown(study, store, "alice", 100.0)
    first = submit(study, store, "alice", step=1, call="benign", score=20, features=None, now=105.0, model=None)
    assert first == 1 and st.step.modality == "unaided"
    # the page of a second window still shows step 1
    with pytest.raises(ReadConflict, match="step 2 of session 1 is due"):
        submit(study, store, "alice", step=1, call="malignant", score=90, features=None, now=106.0, model=None)
    # even around the state machine, the store keeps one original per step
    with pytest.raises(ReadConflict, match="already read"):
        store.append_read(reader="alice", session=1, step=1, case_id=st.step.case_id, modality="unaided",
                          call="malignant", score=90, features=None, shown_at=100.0, submitted_at=106.0, seconds=6.0,
                          model=None)
    assert [(r.call, r.score) for r in store.reads()] == [("benign", 20)]


def test_time_per_read_is_server_side_and_excludes_pauses(seq) -> None:
    study, store = seq
    assert reader_state(study, store, "alice", 0.0).shown_at is None
    with pytest.raises(ReadConflict, match="not shown yet"):
        submit(study, store, "alice", step=1, call="benign", score=10, features=None, now=1.0, model=None)
    mark_shown(study, store, "alice", 1000.0)
    mark_shown(study, store, "alice", 1003.0)  # shown again (a reload): the first time counts
    assert pause(study, store, "alice", 1010.0).status == "paused"
    with pytest.raises(ReadConflict, match="paused"):
        submit(study, store, "alice", step=1, call="benign", score=10, features=None, now=1100.0, model=None)
    assert resume(study, store, "alice", 1200.0).status == "reading"
    pause(study, store, "alice", 1205.0)
    resume(study, store, "alice", 1305.0)
    submit(study, store, "alice", step=1, call="benign", score=10, features=None, now=1320.0, model="run:abc")
    row = store.reads()[0]
    # 320 s between shown and submitted, 290 s of them paused
    assert (row.shown_at, row.submitted_at, row.seconds) == (1000.0, 1320.0, 30.0)
    assert row.model is None, "an unaided read records no model"
    st = mark_shown(study, store, "alice", 1400.0)
    submit(study, store, "alice", step=st.step.step, call="malignant", score=70, features=None, now=1412.5,
           model="run:abc")
    assert store.reads()[1].model == "run:abc" and store.reads()[1].seconds == 12.5


def test_calls_scores_and_features_are_checked(cohort: Path, tmp_path: Path) -> None:
    study = plan_study(cohort, "alice", "sequential", 4, tmp_path / "f", features=True)
    store = ReadStore(study.store_path)
    mark_shown(study, store, "alice", 1.0)
    feats = dict.fromkeys(study.feature_names, 0)
    bad = [("maybe", 50, feats, "benign or malignant"), ("benign", 101, feats, "0-100"),
           ("benign", 50.5, feats, "0-100"), ("benign", True, feats, "0-100"), ("benign", "50", feats, "0-100"),
           ("benign", 50, None, "15 imaging features"), ("benign", 50, {**feats, "extra": 1}, "unknown feature"),
           ("benign", 50, {k: v for k, v in feats.items() if k != "fluid_sign"}, "not scored: fluid_sign"),
           ("benign", 50, {**feats, "fluid_sign": 2}, "fluid_sign: 0")]
    for call, score, f, msg in bad:
        with pytest.raises(ReadInvalid, match=msg):
            submit(study, store, "alice", step=1, call=call, score=score, features=f, now=2.0, model=None)
    assert store.reads() == []
    submit(study, store, "alice", step=1, call="benign", score=50, features={**feats, "fluid_sign": 1}, now=2.0,
           model=None)
    assert store.reads()[0].features["fluid_sign"] == 1
    store.close()
    plain = plan_study(cohort, "alice", "sequential", 4, tmp_path / "p")
    store = ReadStore(plain.store_path)
    mark_shown(plain, store, "alice", 1.0)
    with pytest.raises(ReadInvalid, match="does not ask the imaging features"):
        submit(plain, store, "alice", step=1, call="benign", score=5, features=feats, now=2.0, model=None)
    store.close()


def test_a_correction_appends_a_row_pointing_at_the_read(seq) -> None:
    study, store = seq
    read_all(study, store, "alice", 0.0)
    n = len(store.reads())
    target = store.reads()[2]
    with pytest.raises(ReadInvalid, match="needs its reason"):
        store.append_correction(target.read_id, call="malignant", score=80, features=None, reason=" ", author="c",
                                at=1.0)
    with pytest.raises(ReadInvalid, match="no such read"):
        store.append_correction(999, call="malignant", score=80, features=None, reason="slip", author="c", at=1.0)
    c1 = store.append_correction(target.read_id, call="malignant", score=80, features=None,
                                 reason="reader reported a slip", author="coordinator", at=1.0)
    c2 = store.append_correction(c1, call="malignant", score=85, features=None, reason="second thought",
                                 author="coordinator", at=2.0)
    rows = store.reads()
    assert len(rows) == n + 2
    assert rows[2] == target, "the original is never changed"
    assert (rows[-2].corrects, rows[-1].corrects) == (target.read_id, c1)
    assert rows[-1].case_id == target.case_id and rows[-1].seconds == target.seconds
    eff = {orig.read_id: e for e, orig in store.effective_reads() if orig is not None}
    assert list(eff) == [target.read_id] and (eff[target.read_id].score, eff[target.read_id].read_id) == (85, c2)
    df = reads_frame(study, store)
    assert len(df) == n, "one row per read, corrections applied"
    row = df[df["read_id"] == target.read_id].iloc[0]
    assert (row["call"], row["score"], row["corrected_by"], row["correction_reason"]) == (
        "malignant", 85, c2, "second thought")
    assert df["corrected_by"].notna().sum() == 1
    assert list(df.columns[:5]) == ["case_id", "reader", "modality", "score", "call"]


def test_crossover_waits_for_the_washout_and_skips_closed_sessions(cohort: Path, tmp_path: Path) -> None:
    study = plan_study(cohort, "alice,bob", "crossover", 4, tmp_path / "x", washout_days=28)
    store = ReadStore(study.store_path)
    t = read_all(study, store, "alice", 0.0)
    last = max(r.submitted_at for r in store.reads("alice"))
    st = reader_state(study, store, "alice", t)
    assert st.status == "waiting" and st.session == 2 and st.available_at == last + 28 * DAY
    with pytest.raises(ReadConflict, match="no read is due"):
        submit(study, store, "alice", step=1, call="benign", score=1, features=None, now=t, model=None)
    assert reader_state(study, store, "alice", last + 28 * DAY - 1).status == "waiting"
    st = mark_shown(study, store, "alice", last + 28 * DAY)
    assert st.status == "reading" and (st.session, st.step.step) == (2, 1)
    # bob reads two steps; the coordinator closes session 1: bob's unread steps stay unread, his washout runs
    # from his last read
    t = 0.0
    for _ in range(2):
        st = mark_shown(study, store, "bob", t)
        submit(study, store, "bob", step=st.step.step, call="benign", score=10, features=None, now=t + 5, model=None)
        t += 10
    close_session(study, store, 1, 100.0)
    with pytest.raises(ReadConflict, match="already closed"):
        close_session(study, store, 1, 101.0)
    with pytest.raises(ReadInvalid, match="session"):
        close_session(study, store, 3, 101.0)
    st = reader_state(study, store, "bob", 200.0)
    assert st.status == "waiting" and st.available_at == 15.0 + 28 * DAY
    p = progress(study, store)
    assert p["sessions"][0]["closed"] and p["sessions"][0]["readers"] == {
        "alice": {"planned": 6, "read": 6}, "bob": {"planned": 6, "read": 2}}
    assert p["sessions"][1]["readers"]["alice"]["read"] == 0
    close_session(study, store, 2, 300.0)
    assert reader_state(study, store, "alice", last + 30 * DAY).status == "done"
    store.close()


WRITER = textwrap.dedent("""
    import sys, time
    from spinedx.readers.store import ReadStore
    store = ReadStore(sys.argv[1])
    step = 0
    while True:
        step += 1
        rid = store.append_read(reader="alice", session=1, step=step, case_id="C01", modality="unaided",
                                call="benign", score=step % 101, features=None, shown_at=time.time(),
                                submitted_at=time.time(), seconds=1.0, model=None)
        print(rid, flush=True)   # acknowledged: committed
""")


def test_every_acknowledged_read_survives_kill_9(seq, tmp_path: Path) -> None:
    study, store = seq
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(study.store_path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.time() + 60
        while len(acked) < 25 and time.time() < deadline:
            line = proc.stdout.readline()
            if line:
                acked.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is inside a loop of transactions
        rest = proc.stdout.read() if proc.stdout else ""
        proc.wait(timeout=30)
    acked += [int(x) for x in rest.split()]
    assert len(acked) >= 25
    again = ReadStore(study.store_path, study.study_id)  # quick_check passes on open
    ids = [r.read_id for r in again.reads()]
    assert set(acked) <= set(ids), "a read acknowledged before the kill is missing"
    assert ids == list(range(1, len(ids) + 1)), "no gap, no half row"
    assert all(r.call == "benign" and r.score == r.step % 101 for r in again.reads())
    again.close()


def test_export_writes_reads_and_truth_and_refuses_an_incomplete_study(seq, cohort: Path, tmp_path: Path) -> None:
    study, store = seq
    read_all(study, store, "alice", 0.0)
    out = tmp_path / "export"
    res = CliRunner().invoke(cli, ["readers", "export", str(study.path), "--out", str(out)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "12 of 24 planned reads" in res.output
    assert "bob 12 in session 1" in res.output and not out.exists()
    res = CliRunner().invoke(cli, ["readers", "export", str(study.path), "--out", str(out), "--allow-incomplete"])
    assert res.exit_code == 0, res.output
    reads = pd.read_csv(out / "reads.csv")
    assert len(reads) == 12 and set(reads["reader"]) == {"alice"}
    read_all(study, store, "bob", 0.0, call="malignant", score=90)
    res = CliRunner().invoke(cli, ["readers", "export", str(study.path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "24 reads; 24 of 24 planned reads; 0 corrected" in res.output
    reads = pd.read_csv(out / "reads.csv")
    truth = pd.read_csv(out / "truth.csv")
    assert list(reads.columns) == ["case_id", "reader", "modality", "score", "call", "session", "step", "seconds",
                                   "shown_at", "submitted_at", "model", "read_id", "corrected_by",
                                   "correction_reason"]
    assert len(reads) == 24 and reads.groupby(["reader", "modality"]).size().tolist() == [6, 6, 6, 6]
    assert list(reads["reader"].unique()) == ["alice", "bob"] and (reads["seconds"] == 10.0).all()
    assert reads["model"].isna().tolist() == (reads["modality"] == "unaided").tolist()
    # the truth comes from the manifest through the mapping in study.json
    labels = {f"P{i:03d}": int(i % 3 == 0) for i in range(6)}
    assert dict(zip(truth["case_id"], truth["truth"], strict=True)) == {
        c: labels[study.patient_of(c)] for c in study.case_ids}
    assert truth_frame(study).equals(truth)
    assert set(reads["case_id"]) == set(truth["case_id"])
    # a manifest changed since planning is refused: its truth may not be the study's
    cohort.write_text(cohort.read_text().replace("P001,benign", "P001,malignant"))
    res = CliRunner().invoke(cli, ["readers", "export", str(study.path), "--out", str(tmp_path / "e2")])
    assert res.exit_code == 2 and "not the one the study was planned on" in res.output
    assert not (tmp_path / "e2").exists()
