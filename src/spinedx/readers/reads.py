"""A study's reads as tables for the analysis (``spinedx readers export STUDY --out DIR``).

* READS (``reads.csv``): one row per read with the latest correction applied: ``case_id`` (the opaque case
  number), ``reader``, ``modality`` (``unaided``/``aided``), ``score`` (the confidence 0-100, probability of
  malignancy), ``call``, then ``session``, ``step``, ``seconds`` (time shown less paused time, server clock),
  ``shown_at`` and ``submitted_at`` (UTC), ``model`` (what aided an aided read), ``read_id`` (the original row),
  ``corrected_by`` (the row of the latest correction, empty when none), ``correction_reason`` and, when the study
  asks them, ``feature_<name>`` (0/1).
* TRUTH (``truth.csv``): ``case_id, truth`` with 1 = malignant, from the cohort manifest's labels (checked
  against the sha256 the study recorded): the only place the reads meet the truth.

``spinedx readers analyze READS.csv --truth TRUTH.csv`` takes both files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError
from spinedx.readers.plan import Study, load_study
from spinedx.readers.store import ReadStore

READS_COLUMNS = ("case_id", "reader", "modality", "score", "call", "session", "step", "seconds", "shown_at",
                 "submitted_at", "model", "read_id", "corrected_by", "correction_reason")


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def reads_frame(study: Study, store: ReadStore) -> Any:
    """The READS table (pandas DataFrame; columns in the module docstring), readers in the study's order, then
    case number, unaided before aided."""
    import pandas as pd

    rows = []
    for eff, orig in store.effective_reads():
        first = orig if orig is not None else eff
        row: dict[str, Any] = {
            "case_id": eff.case_id, "reader": eff.reader, "modality": eff.modality, "score": int(eff.score),
            "call": eff.call, "session": eff.session, "step": eff.step,
            "seconds": None if eff.seconds is None else round(float(eff.seconds), 3),
            "shown_at": _iso(eff.shown_at), "submitted_at": _iso(eff.submitted_at), "model": eff.model,
            "read_id": first.read_id, "corrected_by": eff.read_id if orig is not None else None,
            "correction_reason": eff.reason if orig is not None else None}
        if study.features:
            for name in study.feature_names:
                row[f"feature_{name}"] = None if eff.features is None else eff.features.get(name)
        rows.append(row)
    cols = list(READS_COLUMNS) + ([f"feature_{n}" for n in study.feature_names] if study.features else [])
    df = pd.DataFrame(rows, columns=cols)
    order = {r: i for i, r in enumerate(study.readers)}
    if len(df):
        df = df.assign(_r=df["reader"].map(order), _m=df["modality"].map({"unaided": 0, "aided": 1}))
        df = df.sort_values(["_r", "case_id", "_m"], kind="stable").drop(columns=["_r", "_m"])
    df["corrected_by"] = df["corrected_by"].astype("Int64")
    return df.reset_index(drop=True)


def truth_frame(study: Study, cohort: str | Path | None = None) -> Any:
    """The TRUTH table (``case_id, truth``, 1 = malignant) from the manifest the study was planned on.

    Args:
        cohort: the manifest (None: the path in ``study.json``); its sha256 must be the one recorded.

    Raises:
        spinedx.readers.plan.StudyError: another or an edited manifest.
    """
    import pandas as pd

    from spinedx.cohort import load_manifest

    path = study.check_cohort(cohort if cohort is not None else study.cohort_path)
    c = load_manifest(path, require_images=False)
    return pd.DataFrame({"case_id": study.case_ids,
                         "truth": [c[study.patient_of(cid)].y for cid in study.case_ids]})


@dataclass
class Completeness:
    """Planned steps without a read, per reader and session."""

    planned: int
    read: int
    missing: dict[str, dict[int, int]] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{r} {n} in session {s}" for r, per in self.missing.items() for s, n in per.items() if n]
        return f"{self.read} of {self.planned} planned reads" + (f" (missing: {', '.join(parts)})" if parts else "")


def completeness(study: Study, store: ReadStore) -> Completeness:
    """How many planned reads the store holds."""
    have = {(r.reader, r.session, r.step) for r in store.reads() if r.corrects is None}
    planned = read = 0
    missing: dict[str, dict[int, int]] = {}
    for reader in study.readers:
        for s in range(1, study.n_sessions + 1):
            steps = study.steps(reader, s)
            k = sum(1 for st in steps if (reader, s, st.step) in have)
            planned += len(steps)
            read += k
            if k < len(steps):
                missing.setdefault(reader, {})[s] = len(steps) - k
    return Completeness(planned, read, missing)


@dataclass
class ExportResult:
    """What :func:`export_reads` wrote."""

    reads_csv: Path
    truth_csv: Path
    n_reads: int
    n_cases: int
    completeness: Completeness
    corrected: int


def export_reads(study_dir: str | Path, out_dir: str | Path, *, cohort: str | Path | None = None,
                 allow_incomplete: bool = False) -> ExportResult:
    """Write ``reads.csv`` and ``truth.csv`` into ``out_dir`` (each atomically, both prepared before either is
    renamed into place).

    Args:
        study_dir: the study folder.
        out_dir: where to write (created when absent; other files in it are left alone).
        cohort: the manifest when it moved since planning (same sha256); None: the recorded path.
        allow_incomplete: export although planned reads are missing (the analysis of a study in progress).

    Raises:
        SpinedxError: an incomplete study without ``allow_incomplete``; another manifest; a damaged study.
    """
    from spinedx.fsutil import atomic_path

    study = load_study(study_dir)
    store = ReadStore(study.store_path, study.study_id)
    try:
        done = completeness(study, store)
        if done.read < done.planned and not allow_incomplete:
            raise SpinedxError(f"the study is not complete: {done.describe()}; an MRMC analysis needs every reader "
                               "to read every case in both modalities. Finish the reads, or pass --allow-incomplete "
                               "to export what there is", where=str(study.path))
        reads = reads_frame(study, store)
        truth = truth_frame(study, cohort)
    finally:
        store.close()
    out = Path(out_dir)
    with atomic_path(out / "reads.csv") as tmp_r, atomic_path(out / "truth.csv") as tmp_t:
        reads.to_csv(tmp_r, index=False)
        truth.to_csv(tmp_t, index=False)
    corrected = int(reads["corrected_by"].notna().sum())
    return ExportResult(out / "reads.csv", out / "truth.csv", len(reads), len(truth), done, corrected)
