"""Planning a blinded reader study (``spinedx readers plan``): the study folder and its strict reader.

A study compares readers reading each case **unaided** and **aided** by the model (the paper's limitation:
"we did not provide the model prediction results to the R1 resident ... to investigate how the AI tool can be
used as a decision support system"). Two designs, after the multi-reader multi-case (MRMC) literature and
grand-challenge.org's reader studies:

* ``sequential``: one session; each case is read unaided, the call is locked, then the same case is read again
  aided, immediately.
* ``crossover``: two sessions separated by a washout (default 28 days); each case is read once unaided and once
  aided, half of the cases aided in the first session. The halves are counterbalanced across readers: the
  half reader 1 reads aided in session 1 is the half reader 2 reads unaided in session 1, alternating in the
  order the readers are given.

The study folder, written whole or not at all (a temporary sibling renamed when complete; an existing folder is
never overwritten)::

    STUDY/study.json            format, design, readers, seeds, washout, features asked, the cohort's path and
                                sha256, the opaque case number -> patient mapping (kept only here), each reader's
                                reading list per session, salted scrypt hashes of the access tokens
    STUDY/tokens/<reader>.token one access token per reader and ``coordinator.token`` (mode 0600, written once,
                                never stored elsewhere: study.json keeps only the hashes)
    STUDY/reads.sqlite          the append-only store of the reads (:mod:`spinedx.readers.store`), empty

Every random choice is seeded by a string derived from ``--seed`` and recorded in ``study.json`` (stdlib
``random.Random`` seeded by a string hashes it with SHA-512, so the lists are the same on every platform and
Python version), and a reader's order does not depend on the other readers: the same seed and cohort give the
same folder, tokens and creation time aside. Ground truth stays in the cohort manifest; ``study.json`` holds no
label. Research use only, not for clinical decisions.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError

FORMAT = 1
DESIGNS = ("sequential", "crossover")
MODALITIES = ("unaided", "aided")
COORDINATOR = "coordinator"
DEFAULT_WASHOUT_DAYS = 28
STUDY_FILE = "study.json"
STORE_FILE = "reads.sqlite"
TOKENS_DIR = "tokens"
#: scrypt settings of the token hashes (RFC 7914; n = 2**14, r = 8: 16 MiB and about 0.1 s per check here).
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class StudyError(SpinedxError):
    """A study folder or plan that cannot be used (one line, exit code 2)."""


@dataclass(frozen=True)
class Step:
    """One read of a reader's list: in ``session`` (1 or 2), the ``step``-th read (1-based), of ``case_id``
    (the opaque case number) with ``modality`` ``unaided`` or ``aided``."""

    session: int
    step: int
    case_id: str
    modality: str


def parse_readers(text: str | Sequence[str]) -> list[str]:
    """Reader names from ``"senior,r4,r1"`` (or a list), checked.

    A name is 1-32 characters, lower-case letters, digits, ``_`` or ``-``, starting with a letter or digit (it
    names the reader's token file and a column value of READS.csv); ``coordinator`` is reserved.

    Raises:
        StudyError: no reader, an empty, malformed, reserved or repeated name.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or names == [""]:
        raise StudyError("give at least one reader, e.g. --readers senior,r4,r1", where="--readers")
    seen: set[str] = set()
    for n in names:
        if not n:
            raise StudyError("an empty reader name (two commas in a row?); list names like senior,r4,r1",
                             where="--readers")
        if not _NAME.fullmatch(n):
            raise StudyError(f"reader name {n!r} is not usable: 1-32 characters, lower-case letters, digits, _ or -, "
                             "starting with a letter or digit", where="--readers")
        if n == COORDINATOR:
            raise StudyError(f"{COORDINATOR!r} is reserved for the study coordinator's token; name the reader "
                             "otherwise", where="--readers")
        if n in seen:
            raise StudyError(f"reader {n!r} is listed twice; each reader reads every case once per modality",
                             where="--readers")
        seen.add(n)
    return names


def _seed_text(seed: int, *parts: object) -> str:
    return ":".join(str(p) for p in (seed, *parts))


def _shuffled(items: Sequence[Any], seed_text: str) -> list[Any]:
    out = list(items)
    random.Random(seed_text).shuffle(out)
    return out


def _hash_token(token: str, salt: bytes, params: dict[str, int]) -> str:
    return hashlib.scrypt(token.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"],
                          maxmem=256 * 2**20, dklen=params["dklen"]).hex()


def _write_token(path: Path, token: str) -> None:
    """Create the token file, readable by its owner only, refusing to replace an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # whatever the umask



@contextlib.contextmanager
def _new_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling folder renamed to ``out`` on success; ``out`` must not exist (never overwritten)."""
    from spinedx.fsutil import check_parent, fsync_dir, tmp_sibling

    def refuse() -> StudyError:
        return StudyError("already exists; a study folder is never overwritten (its reads and tokens would be "
                          "lost): choose a new --out", where=str(out))

    if out.exists() or out.is_symlink():
        raise refuse()
    check_parent(out)
    tmp = tmp_sibling(out)
    tmp.mkdir(mode=0o700)  # study.json maps the case numbers to patients: the coordinator's eyes only
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            raise refuse()
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise refuse() from None
            raise
        fsync_dir(out.parent)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_cohort(cohort: Path) -> Any:
    """The manifest with images, lesion slices, boxes and labels for every case (the study's cases)."""
    from spinedx.cohort import load_manifest
    from spinedx.errors import ManifestError

    try:
        c = load_manifest(cohort, require_images=True)
    except ManifestError as exc:
        raise StudyError("a reader study shows every case's T1W and T2W and its model reads the lesion slices and "
                         f"box, against the case's label: {exc.message}", where=exc.where) from None
    if len(c.cases) < 2:
        raise StudyError(f"the cohort has {len(c.cases)} case(s); a reader study needs at least 2 (and both "
                         "benign and malignant cases)", where=str(cohort))
    labels = {case.label for case in c.cases}
    if labels != {"benign", "malignant"}:
        raise StudyError(f"every case is {labels.pop()}; a reader study needs benign and malignant cases (the "
                         "analysis compares areas under ROC curves)", where=str(cohort))
    return c


def _lists(design: str, readers: list[str], case_ids: list[str], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each reader's reading list per session, and the seeds and counterbalancing that made them."""
    sessions: dict[str, list[list[dict[str, Any]]]] = {}
    seeds: dict[str, Any] = {"case_numbers": _seed_text(seed, "case-numbers"), "order": {}}
    extra: dict[str, Any] = {}
    if design == "sequential":
        for r in readers:
            s = _seed_text(seed, "order", r, 1)
            seeds["order"][r] = [s]
            steps = []
            for cid in _shuffled(case_ids, s):
                steps += [{"case_id": cid, "modality": "unaided"}, {"case_id": cid, "modality": "aided"}]
            sessions[r] = [[{"step": i + 1, **st} for i, st in enumerate(steps)]]
        return {"sessions": sessions, "seeds": seeds}, extra
    seeds["halves"] = _seed_text(seed, "halves")
    shuffled = _shuffled(case_ids, seeds["halves"])
    half_a = sorted(shuffled[: (len(shuffled) + 1) // 2])
    half_b = sorted(shuffled[(len(shuffled) + 1) // 2:])
    aided_first: dict[str, str] = {}
    for i, r in enumerate(readers):
        first = "A" if i % 2 == 0 else "B"
        aided_first[r] = first
        aided1 = set(half_a if first == "A" else half_b)
        lists = []
        seeds["order"][r] = []
        for session in (1, 2):
            s = _seed_text(seed, "order", r, session)
            seeds["order"][r].append(s)
            aided_now = aided1 if session == 1 else set(case_ids) - aided1
            order = _shuffled(case_ids, s)
            lists.append([{"step": k + 1, "case_id": cid, "modality": "aided" if cid in aided_now else "unaided"}
                          for k, cid in enumerate(order)])
        sessions[r] = lists
    extra = {"halves": {"A": half_a, "B": half_b}, "aided_first": aided_first}
    return {"sessions": sessions, "seeds": seeds}, extra


def plan_study(cohort: str | Path, readers: str | Sequence[str], design: str, seed: int, out: str | Path, *,
               washout_days: int | None = None, features: bool = False) -> Study:
    """Plan a reader study and write its folder (see the module docstring).

    Args:
        cohort: the cohort manifest (every case with T1, T2, lesion slices, box and label).
        readers: reader names, most to least experienced, e.g. ``"senior,r4,r1"``.
        design: ``sequential`` or ``crossover``.
        seed: seeds the case numbers, the reading orders and (crossover) the halves.
        out: the study folder to create (must not exist).
        washout_days: days between a reader's two crossover sessions (default 28); refused with ``sequential``.
        features: also ask the paper's 15 imaging features (:mod:`spinedx.features`) with every read.

    Returns:
        The study as :func:`load_study` reads it.

    Raises:
        StudyError: bad readers, design, washout or cohort, or an existing ``out``.
        spinedx.errors.ManifestError: the manifest's bad rows (missing images, boxes or labels).
    """
    from spinedx.features import FEATURES
    from spinedx.fsutil import atomic_write_json
    from spinedx.provenance import provenance, sha256_file
    from spinedx.readers.store import create_store

    if design not in DESIGNS:
        raise StudyError(f"unknown design {design!r}; use sequential or crossover", where="--design")
    if design == "sequential" and washout_days is not None:
        raise StudyError("a washout separates the two sessions of a crossover study; the sequential design reads "
                         "each case unaided then aided in one session: drop --washout-days or use --design "
                         "crossover", where="--washout-days")
    if design == "crossover":
        washout_days = DEFAULT_WASHOUT_DAYS if washout_days is None else int(washout_days)
        if washout_days < 1:
            raise StudyError(f"a washout of {washout_days} day(s) is no washout; give 1 or more (28 is usual)",
                             where="--washout-days")
    names = parse_readers(readers)
    out = Path(os.path.abspath(Path(out).expanduser()))
    if out.exists() or out.is_symlink():
        raise StudyError("already exists; a study folder is never overwritten (its reads and tokens would be "
                         "lost): choose a new --out", where=str(out))
    cohort = Path(os.path.abspath(Path(cohort).expanduser()))
    c = _load_cohort(cohort)
    digest = sha256_file(cohort)

    patients = [case.patient_id for case in c.cases]
    width = max(2, len(str(len(patients))))
    numbered = _shuffled(patients, _seed_text(seed, "case-numbers"))
    cases = [{"case_id": f"C{i + 1:0{width}d}", "patient_id": p} for i, p in enumerate(numbered)]
    case_ids = [x["case_id"] for x in cases]
    lists, counterbalance = _lists(design, names, case_ids, seed)

    tokens = {name: secrets.token_urlsafe(24) for name in [*names, COORDINATOR]}
    hashes = {}
    for name, tok in tokens.items():
        salt = secrets.token_bytes(16)
        hashes[name] = {"salt": salt.hex(), "hash": _hash_token(tok, salt, SCRYPT)}
    study_id = uuid.uuid4().hex
    doc: dict[str, Any] = {
        "format": FORMAT,
        "kind": "spinedx reader study",
        "study_id": study_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "design": design,
        "readers": names,
        "seed": int(seed),
        "seeds": lists["seeds"],
        "washout_days": washout_days,
        "features": bool(features),
        "feature_names": list(FEATURES) if features else [],
        "cohort": {"path": str(cohort), "sha256": digest, "n_cases": len(cases), "synthetic": bool(c.synthetic)},
        # the only place the opaque case numbers meet the patients: never sent to a reader
        "cases": cases,
        "sessions": lists["sessions"],
        "counterbalance": counterbalance or None,
        "tokens": {"algorithm": "scrypt", **SCRYPT, "principals": hashes},
        "provenance": provenance(),
    }
    with _new_folder(out) as tmp:
        (tmp / TOKENS_DIR).mkdir(mode=0o700)
        os.chmod(tmp / TOKENS_DIR, 0o700)
        for name, tok in tokens.items():
            _write_token(tmp / TOKENS_DIR / f"{name}.token", tok)
        create_store(tmp / STORE_FILE, study_id)
        atomic_write_json(tmp / STUDY_FILE, doc)
    return load_study(out)


class Study:
    """A planned study, read strictly from its folder (:func:`load_study`).

    Attributes:
        path: the study folder.
        doc: ``study.json`` as read.
    """

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self._verified: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self._patient = {c["case_id"]: c["patient_id"] for c in doc["cases"]}
        self._steps: dict[tuple[str, int], list[Step]] = {
            (r, s + 1): [Step(s + 1, int(st["step"]), st["case_id"], st["modality"]) for st in lst]
            for r, lists in doc["sessions"].items() for s, lst in enumerate(lists)}

    # -- what the study is --------------------------------------------------------------------------------
    @property
    def study_id(self) -> str:
        return str(self.doc["study_id"])

    @property
    def design(self) -> str:
        return str(self.doc["design"])

    @property
    def readers(self) -> list[str]:
        return list(self.doc["readers"])

    @property
    def n_sessions(self) -> int:
        return 1 if self.design == "sequential" else 2

    @property
    def washout_days(self) -> int | None:
        w = self.doc.get("washout_days")
        return None if w is None else int(w)

    @property
    def features(self) -> bool:
        """True when every read also scores the 15 imaging features."""
        return bool(self.doc["features"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.doc["feature_names"])

    @property
    def case_ids(self) -> list[str]:
        """The opaque case numbers, in numbering order."""
        return list(self._patient)

    @property
    def synthetic(self) -> bool:
        return bool(self.doc["cohort"].get("synthetic"))

    @property
    def cohort_path(self) -> Path:
        return Path(self.doc["cohort"]["path"])

    @property
    def store_path(self) -> Path:
        return self.path / STORE_FILE

    def patient_of(self, case_id: str) -> str:
        """The patient behind an opaque case number (coordinator side only: never sent to a reader)."""
        return self._patient[case_id]

    def steps(self, reader: str, session: int) -> list[Step]:
        """The reader's reading list of a session, in reading order."""
        return list(self._steps[(reader, session)])

    # -- checks -------------------------------------------------------------------------------------------
    def check_cohort(self, cohort: str | Path) -> Path:
        """Refuse a manifest that is not, byte for byte, the one the study was planned on.

        Raises:
            StudyError: the file's sha256 differs (edited, re-indexed, another cohort).
        """
        from spinedx.provenance import sha256_file

        cohort = Path(cohort)
        if not cohort.is_file():
            raise StudyError(f"cohort manifest not found (the study was planned on {self.cohort_path}); give the "
                             "manifest the study was planned on", where=str(cohort))
        digest = sha256_file(cohort)
        want = self.doc["cohort"]["sha256"]
        if digest != want:
            raise StudyError(f"this manifest is not the one the study was planned on (sha256 {want[:12]}... in "
                             f"{STUDY_FILE}, {digest[:12]}... now): the cases or their truth may differ; give the "
                             "original manifest, or plan a new study", where=str(cohort))
        return cohort

    def principal(self, token: str) -> str | None:
        """Who a token belongs to: a reader's name, ``coordinator``, or None (checked against the salted scrypt
        hashes; a token once verified is remembered in memory, by its SHA-256, for this process)."""
        if not token or len(token) > 200:
            return None
        key = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(key)
        if hit is not None:
            return hit
        tok = self.doc["tokens"]
        params = {k: int(tok[k]) for k in ("n", "r", "p", "dklen")}
        found = None
        for name, rec in tok["principals"].items():
            h = _hash_token(token, bytes.fromhex(rec["salt"]), params)
            if hmac.compare_digest(h, rec["hash"]):
                found = name
        if found is not None:
            with self._lock:
                self._verified[key] = found
        return found


def _bad(path: Path, what: str) -> StudyError:
    return StudyError(f"{what}; the file is damaged or not a spinedx study: plan the study again into a new folder",
                      where=str(path))


def load_study(path: str | Path) -> Study:
    """Read a study folder, checking that ``study.json`` is complete and consistent and the store is its own.

    Raises:
        StudyError: no such folder, a missing or damaged ``study.json``, reading lists that do not read every case
            once unaided and once aided per reader, a store of another study.
    """
    from spinedx.readers.store import store_study_id

    path = Path(os.path.abspath(Path(path).expanduser()))
    f = path / STUDY_FILE
    if not path.is_dir():
        raise StudyError("no such study folder; make one with spinedx readers plan", where=str(path))
    if not f.is_file():
        raise StudyError(f"not a study folder ({STUDY_FILE} missing); make one with spinedx readers plan",
                         where=str(path))
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad(f, f"cannot read it ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "spinedx reader study":
        raise _bad(f, "not a spinedx reader study")
    if doc.get("format") != FORMAT:
        raise StudyError(f"study format {doc.get('format')!r}; this spinedx reads format {FORMAT}", where=str(f))
    need = ("study_id", "design", "readers", "seed", "washout_days", "features", "feature_names", "cohort", "cases",
            "sessions", "tokens")
    missing = [k for k in need if k not in doc]
    if missing:
        raise _bad(f, f"missing {', '.join(missing)}")
    if doc["design"] not in DESIGNS:
        raise _bad(f, f"unknown design {doc['design']!r}")
    n_sessions = 1 if doc["design"] == "sequential" else 2
    case_ids = [c.get("case_id") for c in doc["cases"]]
    if len(set(case_ids)) != len(case_ids) or len(case_ids) < 2:
        raise _bad(f, "the case numbers are repeated or fewer than 2")
    principals = doc["tokens"].get("principals", {})
    for r in [*doc["readers"], COORDINATOR]:
        if r not in principals:
            raise _bad(f, f"no token hash for {r!r}")
    for r in doc["readers"]:
        lists = doc["sessions"].get(r)
        if not isinstance(lists, list) or len(lists) != n_sessions:
            raise _bad(f, f"reader {r!r} has no reading list for each of the {n_sessions} session(s)")
        seen = sorted((st["case_id"], st["modality"]) for lst in lists for st in lst)
        if seen != sorted((c, m) for c in case_ids for m in MODALITIES):
            raise _bad(f, f"reader {r!r}'s lists do not read every case once unaided and once aided")
        for lst in lists:
            if [st["step"] for st in lst] != list(range(1, len(lst) + 1)):
                raise _bad(f, f"reader {r!r}'s steps are not numbered 1..n")
    store = path / STORE_FILE
    if not store.is_file():
        raise StudyError(f"{STORE_FILE} is missing: the study's reads are gone; restore it from a backup",
                         where=str(path))
    sid = store_study_id(store)
    if sid != doc["study_id"]:
        raise StudyError(f"{STORE_FILE} belongs to another study ({sid}, this one is {doc['study_id']}); put the "
                         "study's own store back", where=str(store))
    return Study(path, doc)


def describe_plan(study: Study) -> list[str]:
    """What ``spinedx readers plan`` prints: the design, the lists, where the tokens are (never the tokens)."""
    d = study.doc
    n = len(study.case_ids)
    lines = [f"study: {study.path} ({study.design} design, {n} cases, readers {', '.join(study.readers)}; "
             f"seed {d['seed']})"]
    if study.design == "sequential":
        lines.append(f"one session: each reader reads the {n} cases in their own random order, each case unaided, "
                     f"then (call locked) aided: {2 * n} reads per reader")
    else:
        halves = d["counterbalance"]["halves"]
        first = d["counterbalance"]["aided_first"]
        lines.append(f"two sessions {study.washout_days} days apart (washout): {n} reads per session per reader, "
                     f"half A ({len(halves['A'])} cases) and half B ({len(halves['B'])}) aided in turn")
        lines.append("aided in session 1: " + ", ".join(f"{r} half {h}" for r, h in first.items()))
        n_a = sum(1 for h in first.values() if h == "A")
        if n_a * 2 != len(first):
            lines.append(f"note: {len(first)} readers cannot balance the order exactly ({n_a} read half A aided "
                         "first); an even number of readers does")
    lines.append("features: the 15 imaging features are asked with every read" if study.features
                 else "features: not asked (call and confidence only)")
    lines.append(f"cohort: {study.cohort_path} (sha256 {d['cohort']['sha256'][:12]}...)")
    lines.append(f"tokens: {study.path / TOKENS_DIR}/<reader>.token and coordinator.token (mode 0600; hand each "
                 "reader their own file; study.json keeps only salted hashes)")
    lines.append(f"next: spinedx serve --study {study.path} --cohort {study.cohort_path} --model RUN")
    return lines
