"""The append-only store of a study's reads (``STUDY/reads.sqlite``) and what each reader reads next.

Why SQLite (the standard library's ``sqlite3``) rather than a CSV appended with fsync: a read is one row written
in one transaction, so a killed server (``kill -9``, power loss) leaves every committed read and never half a
row; ``PRAGMA synchronous=FULL`` with the rollback journal makes each commit wait for the disk; the database
itself enforces the rules a CSV could only hope for: triggers refuse every ``UPDATE`` and ``DELETE`` (append-only),
a unique index allows one original read per reader and step (a double submission cannot add a second), and
``CHECK`` constraints keep calls, scores and modalities in their vocabularies. Several request threads of one
server share one connection behind a lock.

Tables:

* ``reads``: one row per submitted read (``corrects`` NULL) or correction (``corrects`` = the row it corrects,
  with its ``reason``; the original is never changed). Times are server-side UNIX seconds: ``shown_at`` (the
  case was first shown), ``submitted_at``, and ``seconds`` = the time between them less the paused time.
* ``events``: ``shown``, ``pause``, ``resume`` per reader and step, and ``close`` of a session by the
  coordinator.
* ``meta``: the study's id and the identity of the model that aids the reads (set once).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.errors import SpinedxError

if TYPE_CHECKING:
    from spinedx.readers.plan import Step, Study

SCHEMA_VERSION = "1"
CALLS = ("benign", "malignant")
EVENT_KINDS = ("shown", "pause", "resume", "close")
DAY = 86400.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE reads (
    read_id INTEGER PRIMARY KEY AUTOINCREMENT,
    reader TEXT NOT NULL,
    session INTEGER NOT NULL CHECK (session IN (1, 2)),
    step INTEGER NOT NULL CHECK (step >= 1),
    case_id TEXT NOT NULL,
    modality TEXT NOT NULL CHECK (modality IN ('unaided', 'aided')),
    call TEXT NOT NULL CHECK (call IN ('benign', 'malignant')),
    score INTEGER NOT NULL CHECK (typeof(score) = 'integer' AND score BETWEEN 0 AND 100),
    features TEXT,
    shown_at REAL,
    submitted_at REAL NOT NULL,
    seconds REAL,
    model TEXT,
    corrects INTEGER REFERENCES reads(read_id),
    reason TEXT,
    author TEXT NOT NULL,
    CHECK ((corrects IS NULL) = (reason IS NULL))
);
CREATE UNIQUE INDEX one_read_per_step ON reads(reader, session, step) WHERE corrects IS NULL;
CREATE TABLE events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    reader TEXT NOT NULL,
    session INTEGER NOT NULL,
    step INTEGER,
    kind TEXT NOT NULL CHECK (kind IN ('shown', 'pause', 'resume', 'close')),
    at REAL NOT NULL
);
CREATE TRIGGER reads_no_update BEFORE UPDATE ON reads BEGIN SELECT RAISE(ABORT, 'reads are append-only'); END;
CREATE TRIGGER reads_no_delete BEFORE DELETE ON reads BEGIN SELECT RAISE(ABORT, 'reads are append-only'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER meta_no_update BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'meta is written once'); END;
CREATE TRIGGER meta_no_delete BEFORE DELETE ON meta BEGIN SELECT RAISE(ABORT, 'meta is written once'); END;
"""


class StoreError(SpinedxError):
    """The store cannot be used (damaged, another study's)."""


class ReadConflict(SpinedxError):
    """The read does not fit the reader's state (already read, paused, another step is due): HTTP 409."""


class ReadInvalid(SpinedxError):
    """A read with a bad call, score or features: HTTP 422."""


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    # FULL: a commit returns only once the rollback journal and the database are on the disk
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    return con


def create_store(path: str | Path, study_id: str) -> Path:
    """Create an empty store for study ``study_id`` (refusing an existing file)."""
    path = Path(path)
    if path.exists():
        raise StoreError("a store already exists here; a study's reads are never overwritten", where=str(path))
    con = _connect(path)
    try:
        con.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                        [("schema", SCHEMA_VERSION), ("study_id", study_id)])
        con.execute("COMMIT")
    finally:
        con.close()
    return path


def store_study_id(path: str | Path) -> str | None:
    """The study id a store was made for (None when the file is not a store)."""
    try:
        con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'study_id'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


@dataclass(frozen=True)
class ReadRow:
    """One row of ``reads`` (a read or a correction)."""

    read_id: int
    reader: str
    session: int
    step: int
    case_id: str
    modality: str
    call: str
    score: int
    features: dict[str, int] | None
    shown_at: float | None
    submitted_at: float
    seconds: float | None
    model: str | None
    corrects: int | None
    reason: str | None
    author: str


@dataclass(frozen=True)
class Event:
    """One row of ``events``."""

    event_id: int
    reader: str
    session: int
    step: int | None
    kind: str
    at: float


_READ_COLS = ("read_id, reader, session, step, case_id, modality, call, score, features, shown_at, submitted_at, "
              "seconds, model, corrects, reason, author")


def _read_row(r: tuple[Any, ...]) -> ReadRow:
    return ReadRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], None if r[8] is None else json.loads(r[8]),
                   r[9], r[10], r[11], r[12], r[13], r[14], r[15])


class ReadStore:
    """The store of one study, opened for reading and appending.

    Args:
        path: ``STUDY/reads.sqlite``.
        study_id: refuse a store made for another study (None: do not check).

    Raises:
        StoreError: no such file, not a store, another study's store.
    """

    def __init__(self, path: str | Path, study_id: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError("the study's store of reads is missing", where=str(self.path))
        self._lock = threading.RLock()
        try:
            self._con = _connect(self.path)
            meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
            ok = self._con.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"not a readable store of reads ({exc}); restore it from a backup",
                             where=str(self.path)) from None
        if ok != "ok":
            raise StoreError(f"the store is damaged ({ok}); restore it from a backup", where=str(self.path))
        if meta.get("schema") != SCHEMA_VERSION:
            raise StoreError(f"store schema {meta.get('schema')!r}; this spinedx reads {SCHEMA_VERSION}",
                             where=str(self.path))
        if study_id is not None and meta.get("study_id") != study_id:
            raise StoreError(f"this store belongs to another study ({meta.get('study_id')})", where=str(self.path))
        self.study_id = meta.get("study_id")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), rolled back on any error."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_once(self, key: str, value: str) -> str:
        """Set ``key`` when unset; return the stored value (the earlier one when already set)."""
        with self._tx() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
            con.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, value))
        return value

    # -- appending ----------------------------------------------------------------------------------------
    def add_event(self, reader: str, session: int, step: int | None, kind: str, at: float) -> int:
        """Append an event (``shown``, ``pause``, ``resume``, ``close``); returns its id."""
        if kind not in EVENT_KINDS:
            raise ValueError(kind)
        with self._tx() as con:
            cur = con.execute("INSERT INTO events(reader, session, step, kind, at) VALUES (?, ?, ?, ?, ?)",
                              (reader, session, step, kind, float(at)))
            return int(cur.lastrowid or 0)

    def append_read(self, *, reader: str, session: int, step: int, case_id: str, modality: str, call: str,
                    score: int, features: dict[str, int] | None, shown_at: float | None, submitted_at: float,
                    seconds: float | None, model: str | None) -> int:
        """Append an original read (one transaction); returns its ``read_id``.

        Raises:
            ReadConflict: this reader already read this step (the first read stands).
        """
        try:
            with self._tx() as con:
                cur = con.execute(
                    f"INSERT INTO reads({_READ_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                    (reader, session, step, case_id, modality, call, int(score),
                     None if features is None else json.dumps(features, sort_keys=True), shown_at, submitted_at,
                     seconds, model, reader))
                return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise ReadConflict(f"step {step} of session {session} is already read; a submitted read is never "
                                   "changed", where=reader) from None
            raise ReadInvalid(f"the read was refused by the store ({exc})", where=reader) from None

    def append_correction(self, read_id: int, *, call: str, score: int, features: dict[str, int] | None,
                          reason: str, author: str, at: float) -> int:
        """Append a correction of row ``read_id`` (which stays as it is); returns the new row's id.

        The new row repeats the corrected read's reader, session, step, case, modality, times and model, with the
        corrected call, score and features, the reason and who made it.

        Raises:
            ReadInvalid: no such row, an empty reason, a bad call or score.
        """
        if not reason or not reason.strip():
            raise ReadInvalid("a correction needs its reason", where=f"read {read_id}")
        check_call_score(call, score, where=f"read {read_id}")
        with self._tx() as con:
            row = con.execute(f"SELECT {_READ_COLS} FROM reads WHERE read_id = ?", (int(read_id),)).fetchone()
            if row is None:
                raise ReadInvalid("no such read", where=f"read {read_id}")
            old = _read_row(row)
            cur = con.execute(
                f"INSERT INTO reads({_READ_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (old.reader, old.session, old.step, old.case_id, old.modality, call, int(score),
                 None if features is None else json.dumps(features, sort_keys=True), old.shown_at, old.submitted_at,
                 old.seconds, old.model, old.read_id, reason.strip(), author))
            return int(cur.lastrowid or 0)

    # -- reading ------------------------------------------------------------------------------------------
    def reads(self, reader: str | None = None) -> list[ReadRow]:
        """Every row (reads and corrections) in the order written, optionally of one reader."""
        q = f"SELECT {_READ_COLS} FROM reads" + (" WHERE reader = ?" if reader else "") + " ORDER BY read_id"
        with self._lock:
            rows = self._con.execute(q, (reader,) if reader else ()).fetchall()
        return [_read_row(r) for r in rows]

    def events(self, reader: str | None = None) -> list[Event]:
        """Every event in the order written, optionally of one reader."""
        q = "SELECT event_id, reader, session, step, kind, at FROM events" + (
            " WHERE reader = ?" if reader else "") + " ORDER BY event_id"
        with self._lock:
            rows = self._con.execute(q, (reader,) if reader else ()).fetchall()
        return [Event(*r) for r in rows]

    def closed_sessions(self) -> dict[int, float]:
        """Session -> when the coordinator closed it."""
        return {e.session: e.at for e in self.events() if e.kind == "close"}

    def effective_reads(self) -> list[tuple[ReadRow, ReadRow | None]]:
        """Each original read with its latest correction applied: ``(effective row, the original)``; the original
        is None when the read was never corrected (corrections of corrections follow the chain)."""
        rows = self.reads()
        by_id = {r.read_id: r for r in rows}

        def root(r: ReadRow) -> int:
            while r.corrects is not None:
                r = by_id[r.corrects]
            return r.read_id

        latest: dict[int, ReadRow] = {}
        for r in rows:
            latest[root(r)] = r  # rows are in id order: the last one wins
        return [(latest[r.read_id], None if latest[r.read_id] is r else r) for r in rows if r.corrects is None]


def check_call_score(call: Any, score: Any, *, where: str) -> None:
    """Refuse a call other than benign/malignant and a confidence other than an integer 0-100."""
    if call not in CALLS:
        raise ReadInvalid(f"call {call!r}: choose benign or malignant", where=where)
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
        raise ReadInvalid(f"confidence {score!r}: give the probability of malignancy as a whole number 0-100",
                          where=where)


def check_features(study: Study, features: Any, *, where: str) -> dict[str, int] | None:
    """The features of a read: all of the study's 15, each 0 or 1, when the study asks them; none otherwise."""
    if not study.features:
        if features not in (None, {}):
            raise ReadInvalid("this study does not ask the imaging features; send none", where=where)
        return None
    if not isinstance(features, dict):
        raise ReadInvalid("this study asks the 15 imaging features: send each as 0 (absent) or 1 (present)",
                          where=where)
    names = study.feature_names
    unknown = sorted(set(features) - set(names))
    missing = [n for n in names if n not in features]
    if unknown:
        raise ReadInvalid(f"unknown feature(s) {', '.join(unknown)}", where=where)
    if missing:
        raise ReadInvalid(f"feature(s) not scored: {', '.join(missing)}; score each as absent or present",
                          where=where)
    bad = [n for n in names if isinstance(features[n], bool) or features[n] not in (0, 1)]
    if bad:
        raise ReadInvalid(f"feature(s) {', '.join(bad)}: 0 (absent) or 1 (present)", where=where)
    return {n: int(features[n]) for n in names}


# -- what a reader reads next ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReaderState:
    """Where a reader stands.

    Attributes:
        status: ``reading`` (``step`` is due), ``paused`` (``step`` is due, the reader paused), ``waiting`` (the
            next session opens at ``available_at``), ``done`` (every session read or closed).
        session: the current session (the last one when done).
        step: the step due (reading/paused).
        done: reads submitted in ``session``.
        total: steps of ``session``.
        available_at: when a waiting reader's next session opens (UNIX seconds).
        shown_at: when the due step was first shown (None: not yet).
    """

    status: str
    session: int
    step: Step | None
    done: int
    total: int
    available_at: float | None = None
    shown_at: float | None = None


def _step_events(events: list[Event], session: int, step: int) -> list[Event]:
    return [e for e in events if e.session == session and e.step == step and e.kind != "close"]


def active_seconds(events: list[Event], until: float) -> tuple[float | None, float | None, bool]:
    """(shown_at, seconds shown and not paused up to ``until``, paused now) from one step's events."""
    shown = next((e.at for e in events if e.kind == "shown"), None)
    if shown is None:
        return None, None, False
    paused_total = 0.0
    paused_since: float | None = None
    for e in events:
        if e.kind == "pause" and paused_since is None:
            paused_since = e.at
        elif e.kind == "resume" and paused_since is not None:
            paused_total += e.at - paused_since
            paused_since = None
    end = until if paused_since is None else paused_since
    return shown, max(0.0, end - shown - paused_total), paused_since is not None


def reader_state(study: Study, store: ReadStore, reader: str, now: float) -> ReaderState:
    """The reader's next step, from the plan and the store alone (so a restarted server continues where it was).

    A session the coordinator closed is skipped (its unread steps stay unread). A crossover reader's second
    session opens once the first is read (or closed) and ``washout_days`` have passed since their last read of
    the first session (or since the close, when they read none of it).
    """
    rows = [r for r in store.reads(reader) if r.corrects is None]
    events = store.events(reader)
    closed = store.closed_sessions()
    last_session = study.n_sessions
    for session in range(1, study.n_sessions + 1):
        steps = study.steps(reader, session)
        read = {r.step for r in rows if r.session == session}
        if session in closed:
            continue
        due = next((s for s in steps if s.step not in read), None)
        if due is None:
            continue
        if session > 1 and study.washout_days:
            prev = [r.submitted_at for r in rows if r.session == session - 1]
            since = max(prev) if prev else closed.get(session - 1, now)
            opens = since + study.washout_days * DAY
            if now < opens:
                return ReaderState("waiting", session, None, len(read), len(steps), available_at=opens)
        shown, _, paused = active_seconds(_step_events(events, session, due.step), now)
        return ReaderState("paused" if paused else "reading", session, due, len(read), len(steps),
                           shown_at=shown)
    steps = study.steps(reader, last_session)
    done = len({r.step for r in rows if r.session == last_session})
    return ReaderState("done", last_session, None, done, len(steps))


def mark_shown(study: Study, store: ReadStore, reader: str, now: float) -> ReaderState:
    """The reader's state, recording when the due step is first shown (server time)."""
    st = reader_state(study, store, reader, now)
    if st.status == "reading" and st.shown_at is None and st.step is not None:
        store.add_event(reader, st.session, st.step.step, "shown", now)
        st = reader_state(study, store, reader, now)
    return st


def pause(study: Study, store: ReadStore, reader: str, now: float) -> ReaderState:
    """Pause the due step (its clock stops); a no-op when nothing is being read."""
    st = reader_state(study, store, reader, now)
    if st.status == "reading" and st.step is not None and st.shown_at is not None:
        store.add_event(reader, st.session, st.step.step, "pause", now)
        st = reader_state(study, store, reader, now)
    return st


def resume(study: Study, store: ReadStore, reader: str, now: float) -> ReaderState:
    """Resume a paused step (its clock runs again)."""
    st = reader_state(study, store, reader, now)
    if st.status == "paused" and st.step is not None:
        store.add_event(reader, st.session, st.step.step, "resume", now)
        st = reader_state(study, store, reader, now)
    return st


def submit(study: Study, store: ReadStore, reader: str, *, step: int, call: Any, score: Any, features: Any,
           now: float, model: str | None) -> int:
    """Record the reader's read of the due step (checked); returns its ``read_id``.

    Args:
        step: the step number the reader's page shows (a stale page, e.g. a second tab, is refused).
        model: identity of the aiding model (kept with aided reads).

    Raises:
        ReadConflict: nothing due, paused, another step due, the case not shown yet, already read.
        ReadInvalid: a bad call, score or features.
    """
    st = reader_state(study, store, reader, now)
    if st.status == "paused":
        raise ReadConflict("the read is paused; resume it before submitting", where=reader)
    if st.status != "reading" or st.step is None:
        raise ReadConflict(f"no read is due ({st.status})", where=reader)
    if step != st.step.step:
        raise ReadConflict(f"this read is for step {step}, but step {st.step.step} of session {st.session} is due "
                           "(a second window?); reload the page", where=reader)
    check_call_score(call, score, where=reader)
    feats = check_features(study, features, where=reader)
    shown, seconds, _ = active_seconds(_step_events(store.events(reader), st.session, st.step.step), now)
    if shown is None:
        raise ReadConflict("the case was not shown yet; reload the page", where=reader)
    return store.append_read(reader=reader, session=st.session, step=st.step.step, case_id=st.step.case_id,
                             modality=st.step.modality, call=call, score=int(score), features=feats, shown_at=shown,
                             submitted_at=now, seconds=seconds,
                             model=model if st.step.modality == "aided" else None)


def progress(study: Study, store: ReadStore) -> dict[str, Any]:
    """What the coordinator sees: per session whether it is closed, and per reader the steps planned and read
    (counts only: no calls, scores or cases)."""
    rows = [r for r in store.reads() if r.corrects is None]
    closed = store.closed_sessions()
    out = []
    for session in range(1, study.n_sessions + 1):
        readers = {}
        for r in study.readers:
            n = len(study.steps(r, session))
            k = len({x.step for x in rows if x.reader == r and x.session == session})
            readers[r] = {"planned": n, "read": k}
        out.append({"session": session, "closed": session in closed, "closed_at": closed.get(session),
                    "readers": readers})
    return {"design": study.design, "readers": study.readers, "n_cases": len(study.case_ids),
            "washout_days": study.washout_days, "sessions": out}


def close_session(study: Study, store: ReadStore, session: int, now: float) -> None:
    """The coordinator closes a session: no more reads in it; its reads may be looked at.

    Raises:
        ReadInvalid: no such session. ReadConflict: already closed.
    """
    if session not in range(1, study.n_sessions + 1):
        raise ReadInvalid(f"the study has session(s) 1..{study.n_sessions}", where=f"session {session}")
    if session in store.closed_sessions():
        raise ReadConflict("the session is already closed", where=f"session {session}")
    store.add_event("coordinator", session, None, "close", now)
