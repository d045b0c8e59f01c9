"""The reader study's tables: ``READS.csv``, ``TRUTH.csv`` and ``MODEL.csv`` read and checked, cell by cell.

:func:`spinedx.readers.analysis.analyze_reads` runs these checks before the analysis (docs/readers.md, "Analysis").
Every problem is a :class:`~spinedx.errors.SpinedxError` that names the table (``where``), the line (the CSV line,
header = line 1) and the column, and says what to do; nothing is guessed.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError

__all__ = [
    "MODEL_COLUMNS",
    "READS_COLUMNS",
    "TRUTH_COLUMNS",
    "Reads",
    "check_classes",
    "check_duplicate_reads",
    "check_known_cases",
    "check_model_scores",
    "check_reads_header",
    "check_truth",
    "incomplete_cases",
    "load_model_scores",
    "load_reads",
    "load_truth",
    "reads_columns",
    "study_readers",
]

READS_COLUMNS = ("case_id", "reader", "modality", "score")
TRUTH_COLUMNS = ("case_id", "truth")
MODEL_COLUMNS = ("case_id", "score")
#: How many offending lines or cases an error message lists before "and N more".
SHOWN = 8


# ---------------------------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------------------------

def _read_csv(path: str | Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """A CSV file as strings (no type guessing: ``1.0`` stays ``1.0``), columns checked; refusals name the file."""
    path = Path(path).expanduser()
    where = str(path)
    if path.is_dir():
        raise SpinedxError(f"is a folder; give the {what} CSV file", where=where)
    if not path.is_file():
        raise SpinedxError(f"{what} file not found; check the path", where=where)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            try:
                rows = list(reader)
            except csv.Error as exc:
                raise SpinedxError(f"line {reader.line_num}: malformed CSV ({exc}); fix the quoting",
                                   where=where) from None
    except UnicodeDecodeError as exc:
        raise SpinedxError(f"not a UTF-8 CSV file ({exc})", where=where) from None
    if not rows:
        raise SpinedxError(f"empty file: the header row ({', '.join(required)}) is missing", where=where)
    header = [h.strip() for h in rows[0]]
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        raise SpinedxError(f"the header {header[0][:60]!r} is one column: save the file comma-separated", where=where)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise SpinedxError(f"column(s) {', '.join(dup)} appear twice in the header", where=where)
    missing = [c for c in required if c not in header]
    if missing:
        raise SpinedxError(f"required column(s) {', '.join(missing)} missing (the header has {', '.join(header)}); "
                           f"the {what} file needs {', '.join(required)}", where=where)
    body = rows[1:]
    ragged = [i + 2 for i, r in enumerate(body) if len(r) != len(header) and any(c.strip() for c in r)]
    if ragged:
        raise SpinedxError(f"line(s) {_list(ragged)}: the number of fields differs from the header's "
                           f"({len(header)}); fix those rows", where=where)
    data = [[c.strip() for c in r] for r in body if any(c.strip() for c in r)]
    lines = [i + 2 for i, r in enumerate(body) if any(c.strip() for c in r)]
    df = pd.DataFrame(data, columns=header, dtype=object)
    df.index = pd.Index(lines, name="line")
    return df


def load_reads(path: str | Path) -> pd.DataFrame:
    """``READS.csv`` as a DataFrame of strings (checked later by :func:`analyze_reads`), indexed by CSV line."""
    return _read_csv(path, READS_COLUMNS, "reads")


def load_truth(path: str | Path) -> pd.DataFrame:
    """``TRUTH.csv`` as a DataFrame of strings, indexed by CSV line."""
    return _read_csv(path, TRUTH_COLUMNS, "truth")


def load_model_scores(path: str | Path) -> pd.DataFrame:
    """The standalone model's scores (``case_id, score``) as a DataFrame of strings, indexed by CSV line."""
    return _read_csv(path, MODEL_COLUMNS, "model scores")


# ---------------------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------------------

def _list(items: Sequence[Any], n: int = SHOWN) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _lines(df: pd.DataFrame) -> np.ndarray:
    """CSV line numbers: the index when it came from :func:`_read_csv` (named ``line``), else position + 2."""
    if df.index.name == "line":
        return np.asarray(df.index, dtype=int)
    return np.arange(len(df)) + 2


def _text(df: pd.DataFrame, col: str, where: str) -> pd.Series:
    """Column ``col`` as stripped strings; empty cells refused, naming their lines."""
    values = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip())
    empty = _lines(df)[(values == "").to_numpy()]
    if len(empty):
        raise SpinedxError(f"line(s) {_list(list(empty))}: column {col} is empty; fill it in", where=where)
    return values.reset_index(drop=True)


def _numbers(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    """Column ``col`` as finite floats; anything else refused, naming line, column and value."""
    raw = df[col].reset_index(drop=True)
    num = pd.to_numeric(raw.map(lambda v: str(v).strip() if v is not None else ""), errors="coerce")
    vals = num.to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(vals))
    if len(bad):
        lines = _lines(df)
        shown = [f"line {lines[i]} ({str(raw.iloc[i]).strip()!r})" for i in bad[:SHOWN]]
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise SpinedxError(f"column {col} must hold finite numbers: {', '.join(shown)}{more}; fix those rows",
                           where=where)
    return vals


_CALLS = {"benign": 0, "malignant": 1, "0": 0, "1": 1, "0.0": 0, "1.0": 1, "negative": 0, "positive": 1}


def _calls(df: pd.DataFrame, where: str) -> np.ndarray:
    raw = df["call"].reset_index(drop=True).map(lambda v: "" if v is None else str(v).strip().lower())
    bad = [i for i, v in enumerate(raw) if v not in _CALLS]
    if bad:
        lines = _lines(df)
        shown = ", ".join(f"line {lines[i]} ({raw.iloc[i]!r})" for i in bad[:SHOWN])
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise SpinedxError(f"column call must be benign/malignant (or 0/1) in every row: {shown}{more}; fill in the "
                           "calls or drop the column", where=where)
    return raw.map(_CALLS).to_numpy(dtype=int)


def check_truth(truth: pd.DataFrame, where: str) -> tuple[list[str], np.ndarray]:
    """The truth table's case ids (in its order) and truth (0/1); empty ids, duplicates, values but 0/1 refused."""
    for col in TRUTH_COLUMNS:
        if col not in truth.columns:
            raise SpinedxError(f"required column {col} missing", where=where)
    if not len(truth):
        raise SpinedxError("no cases (only a header row)", where=where)
    cases = _text(truth, "case_id", where)
    dup = cases[cases.duplicated(keep=False)]
    if len(dup):
        lines = _lines(truth)
        raise SpinedxError(f"case(s) listed twice: {_list([f'{c} (line {lines[i]})' for i, c in dup.items()])}; "
                           "keep one row per case", where=where)
    raw = truth["truth"].reset_index(drop=True).map(lambda v: "" if v is None else str(v).strip())
    code = raw.map({"0": 0, "1": 1, "0.0": 0, "1.0": 1})
    bad = np.flatnonzero(code.isna().to_numpy())
    if len(bad):
        lines = _lines(truth)
        shown = ", ".join(f"line {lines[i]} ({raw.iloc[i]!r})" for i in bad[:SHOWN])
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise SpinedxError(f"column truth must be 0 or 1 (1 = positive): {shown}{more}", where=where)
    y = code.to_numpy(dtype=int)
    return list(cases), y


def check_classes(y: np.ndarray, where: str, after: str = "") -> None:
    """Refuse a truth with one class, or fewer than two cases of a class (the case jackknife needs two)."""
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    if n1 == 0 or n0 == 0:
        only = "positive (1)" if n0 == 0 else "negative (0)"
        raise SpinedxError(f"every case{after} is {only}: the ROC analysis needs positive and negative cases",
                           where=where)
    if n1 < 2 or n0 < 2:
        raise SpinedxError(f"{n1} positive and {n0} negative case(s){after}: the case jackknife needs at least two "
                           "of each", where=where)



def check_model_scores(model_scores: pd.DataFrame, known: set[str], where: str) -> dict[str, float]:
    """The model's score of each case; missing columns, empty ids, bad scores, duplicates, unknown cases refused."""
    for col in MODEL_COLUMNS:
        if col not in model_scores.columns:
            raise SpinedxError(f"required column {col} missing (the model scores need case_id, score)", where=where)
    lines = _lines(model_scores)
    ids = _text(model_scores, "case_id", where)
    vals = _numbers(model_scores, "score", where)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        raise SpinedxError(f"case(s) scored twice: {_list([f'{c} (line {lines[i]})' for i, c in dup.items()])}; keep "
                           "one score per case", where=where)
    unknown = [f"{c} (line {ln})" for ln, c in zip(lines, ids, strict=True) if c not in known]
    if unknown:
        raise SpinedxError(f"score(s) of case(s) not in the truth table: {_list(unknown)}", where=where)
    return dict(zip(ids, vals.tolist(), strict=True))



# ---------------------------------------------------------------------------------------------------------------
# The reads
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Reads:
    """The reads table's checked columns, one entry per read (row order of the table).

    Attributes:
        lines: the CSV line of each read (header = line 1).
        case, reader, modality: stripped, non-empty strings.
        score: finite floats.
        call: 0/1 from the ``call`` column, or None without one.
    """

    lines: np.ndarray
    case: pd.Series
    reader: pd.Series
    modality: pd.Series
    score: np.ndarray
    call: np.ndarray | None


def check_reads_header(reads: pd.DataFrame, threshold: float | None, where: str) -> bool:
    """Refuse a reads table without its columns or rows, or with both a call column and ``threshold``.

    Returns:
        Whether the table has a ``call`` column.
    """
    for col in READS_COLUMNS:
        if col not in reads.columns:
            raise SpinedxError(f"required column {col} missing (the reads need {', '.join(READS_COLUMNS)})",
                               where=where)
    if not len(reads):
        raise SpinedxError("no reads (only a header row)", where=where)
    has_call = "call" in reads.columns
    if has_call and threshold is not None:
        raise SpinedxError("has a call column and a threshold was given too: drop the threshold to use the calls, "
                           "or the call column to call at the threshold", where=where)
    return has_call


def reads_columns(reads: pd.DataFrame, has_call: bool, where: str) -> Reads:
    """The reads' columns checked cell by cell (empty ids, non-finite scores, bad calls refused)."""
    lines = _lines(reads)
    case = _text(reads, "case_id", where)
    reader = _text(reads, "reader", where)
    modality = _text(reads, "modality", where)
    score = _numbers(reads, "score", where)
    call = _calls(reads, where) if has_call else None
    return Reads(lines=lines, case=case, reader=reader, modality=modality, score=score, call=call)


def check_known_cases(rd: Reads, known_cases: set[str], truth_name: str, where: str) -> None:
    """Refuse reads of cases that the truth table does not list."""
    unknown = [(ln, c) for ln, c in zip(rd.lines, rd.case, strict=True) if c not in known_cases]
    if unknown:
        raise SpinedxError(f"read(s) of case(s) not in {truth_name}: "
                           f"{_list([f'{c} (line {ln})' for ln, c in unknown])}; add them to {truth_name} or remove "
                           "the reads", where=where)


def study_readers(rd: Reads, readers: Sequence[str] | None, where: str) -> list[str]:
    """The study's readers: ``readers`` when given (reads by anyone else refused), else those of the reads."""
    if readers is None:
        return list(dict.fromkeys(rd.reader))
    reader_list = [str(r) for r in readers]
    if len(set(reader_list)) != len(reader_list):
        raise SpinedxError(f"a reader is listed twice: {reader_list}", where="readers")
    allowed = set(reader_list)
    stray = [(ln, r) for ln, r in zip(rd.lines, rd.reader, strict=True) if r not in allowed]
    if stray:
        raise SpinedxError(f"read(s) by reader(s) not in the study's list ({', '.join(reader_list)}): "
                           f"{_list([f'{r} (line {ln})' for ln, r in stray])}", where=where)
    return reader_list


def check_duplicate_reads(rd: Reads, where: str) -> None:
    """Refuse two reads of the same case by the same reader in the same modality, naming their lines."""
    key = pd.DataFrame({"case": rd.case, "reader": rd.reader, "modality": rd.modality})
    dup = key.duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i in np.flatnonzero(dup):
        groups.setdefault((rd.case[i], rd.reader[i], rd.modality[i]), []).append(int(rd.lines[i]))
    shown = [f"case {c}, reader {r}, modality {m} (lines {', '.join(map(str, ls))})"
             for (c, r, m), ls in groups.items()]
    raise SpinedxError(f"duplicate reads (same case, reader and modality): {_list(shown, 4)}; keep one read each",
                       where=where)


def incomplete_cases(rd: Reads, case_list: list[str], reader_list: list[str], mod_list: list[str],
                     model_map: dict[str, float] | None, *, complete_cases_only: bool, truth_name: str,
                     model_name: str, where: str) -> list[str]:
    """The cases of ``case_list`` that some reader lacks in some modality (or the model lacks), in its order.

    The design must be fully crossed: without ``complete_cases_only`` any such case is refused, naming who lacks
    which cases; with it they are returned, to be left out.
    """
    read_set = set(zip(rd.case, rd.reader, rd.modality, strict=True))
    incomplete: dict[tuple[str, str], list[str]] = {}
    for r, m in itertools.product(reader_list, mod_list):
        lack = [c for c in case_list if (c, r, m) not in read_set]
        if lack:
            incomplete[(r, m)] = lack
    model_lack = [c for c in case_list if model_map is not None and c not in model_map]
    if not (incomplete or model_lack):
        return []
    if not complete_cases_only:
        parts = [f"reader {r} in modality {m} lacks {len(lack)} case(s) ({_list(lack, 5)})"
                 for (r, m), lack in incomplete.items()]
        msg = "; ".join(parts[:SHOWN]) + (f"; and {len(parts) - SHOWN} more" if len(parts) > SHOWN else "")
        if model_lack:
            lacks = f"{model_name} lacks {len(model_lack)} case(s) ({_list(model_lack, 5)})"
            msg = f"{msg}; {lacks}" if msg else lacks
        raise SpinedxError(f"incomplete reads: {msg}. Every reader must read every case of {truth_name} in every "
                           "modality; add the missing reads, or pass --complete-cases-only to analyse only the "
                           "cases everyone read", where=where)
    drop = {c for lack in incomplete.values() for c in lack} | set(model_lack)
    return [c for c in case_list if c in drop]
