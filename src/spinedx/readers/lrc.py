"""Read ROC rating files in the ``.lrc`` format of the Iowa/Chicago MRMC programs (and RJafroc's ``DfReadDataFile``).

Layout, line by line (blank-trimmed):

1. a title (ignored);
2. the first reader's name;
3. the modality names, each in double quotes (``"0" "1"``);
4. per modality ``L`` (``LARGE``: a higher rating means more likely positive) or ``S`` (``SMALL``: the reverse);
5. then per reader: one line per negative (normal) case with one rating per modality (further columns, such as a
   case number, are ignored), a line ``*``, one line per positive (abnormal) case, a line ``*``; then either the next
   reader's name or ``#`` (end of file).

Every reader lists the same negative cases and then the same positive cases, in the same order, so cases are
numbered by position: negatives ``1..K1``, positives ``K1+1..K1+K2``. A ``SMALL`` modality's ratings are turned
round (``max + 1 - rating``, the maximum over the file) so that higher always means more likely positive, as RJafroc
does. The reads come back in spinedx's long form (:mod:`spinedx.readers.analysis`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from spinedx.errors import SpinedxError

__all__ = ["read_lrc"]


def _ratings(line: str, n: int, *, where: str, lineno: int) -> list[float]:
    parts = line.split()
    if len(parts) < n:
        raise SpinedxError(f"line {lineno}: {len(parts)} rating(s), expected one per modality ({n})", where=where)
    try:
        return [float(p) for p in parts[:n]]
    except ValueError:
        raise SpinedxError(f"line {lineno}: ratings {parts[:n]} are not numbers", where=where) from None


def read_lrc(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an ``.lrc`` file into reads and truth tables.

    Args:
        path: the ``.lrc`` file.

    Returns:
        ``(reads, truth)``: ``reads`` with columns ``case_id, reader, modality, score`` (case ids ``"1"``, ``"2"``,
        ...: negatives first, as in the file), ``truth`` with ``case_id, truth`` (1 = positive).

    Raises:
        SpinedxError: a file that does not follow the layout (naming the line), readers with different numbers of
            cases, or an ``L``/``S`` line that does not match the modalities.
    """
    where = str(path)
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    modalities, direction = _header(lines, where=where)
    readers, blocks = _reader_blocks(lines, len(modalities), where=where)
    n_neg, n_pos = len(blocks[0][0]), len(blocks[0][1])
    for name, (neg, pos) in zip(readers, blocks, strict=True):
        if (len(neg), len(pos)) != (n_neg, n_pos):
            raise SpinedxError(f"reader {name} has {len(neg)} negative and {len(pos)} positive cases, the first reader "
                               f"{n_neg} and {n_pos}", where=where)
    if len(set(readers)) != len(readers):
        raise SpinedxError(f"a reader name appears twice: {readers}", where=where)
    if n_neg == 0 or n_pos == 0:
        raise SpinedxError(f"{n_neg} negative and {n_pos} positive cases per reader: an ROC analysis needs both",
                           where=where)
    reads = _long_form(readers, blocks, modalities, direction)
    truth = pd.DataFrame({"case_id": [str(k + 1) for k in range(n_neg + n_pos)],
                          "truth": [0] * n_neg + [1] * n_pos})
    return reads, truth


def _header(lines: list[str], *, where: str) -> tuple[list[str], list[str]]:
    """The modality names (line 3) and their ``L``/``S`` directions (line 4), checked against each other."""
    if len(lines) < 5:
        raise SpinedxError("too short for an .lrc file (title, reader, modalities, L/S, ratings)", where=where)
    modalities = re.findall(r'"([^"]*)"', lines[2])
    if not modalities:
        raise SpinedxError(f'line 3: no modality names in double quotes (got {lines[2]!r})', where=where)
    direction = lines[3].split()
    if len(direction) != len(modalities) or any(d.upper() not in ("L", "LARGE", "S", "SMALL") for d in direction):
        raise SpinedxError(f"line 4: expected one L or S per modality ({len(modalities)}), got {lines[3]!r}",
                           where=where)
    return modalities, direction


def _reader_blocks(lines: list[str], n_mod: int, *, where: str
                   ) -> tuple[list[str], list[tuple[list[list[float]], list[list[float]]]]]:
    """Every reader's name and ``(negative rows, positive rows)``, from line 5 to the final ``#``."""
    readers: list[str] = [lines[1]]
    blocks: list[tuple[list[list[float]], list[list[float]]]] = []
    i = 4
    while True:
        neg, i = _case_group(lines, i, n_mod, reader=readers[-1], where=where)
        pos, i = _case_group(lines, i, n_mod, reader=readers[-1], where=where)
        blocks.append((neg, pos))
        if i >= len(lines):
            raise SpinedxError("ends without the final '#' line", where=where)
        if lines[i] == "#":
            return readers, blocks
        readers.append(lines[i])
        i += 1


def _case_group(lines: list[str], i: int, n_mod: int, *, reader: str, where: str) -> tuple[list[list[float]], int]:
    """One reader's rating rows from line index ``i`` up to the closing ``*``, and the index just after that ``*``."""
    rows = []
    while i < len(lines) and lines[i] != "*":
        if lines[i] == "#":
            raise SpinedxError(f"line {i + 1}: '#' before the '*' that closes reader {reader}'s cases", where=where)
        rows.append(_ratings(lines[i], n_mod, where=where, lineno=i + 1))
        i += 1
    if i >= len(lines):
        raise SpinedxError(f"ends inside reader {reader}'s ratings (a '*' line is missing)", where=where)
    return rows, i + 1


def _long_form(readers: list[str], blocks: list[tuple[list[list[float]], list[list[float]]]],
               modalities: list[str], direction: list[str]) -> pd.DataFrame:
    """The reads table (``case_id, reader, modality, score``), ``SMALL`` modalities' ratings turned round."""
    top = max(v for neg, pos in blocks for row in (*neg, *pos) for v in row)
    records = []
    for name, (neg, pos) in zip(readers, blocks, strict=True):
        for k, row in enumerate((*neg, *pos)):
            for m, mod in enumerate(modalities):
                v = row[m] if direction[m].upper() in ("L", "LARGE") else top + 1 - row[m]
                records.append((str(k + 1), name, mod, v))
    return pd.DataFrame(records, columns=["case_id", "reader", "modality", "score"])
