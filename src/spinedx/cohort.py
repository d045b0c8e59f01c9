"""The cohort manifest (``cohort.csv``): one row per patient.

Columns (documented with an example in ``docs/io.md``):

* ``patient_id`` (unique), ``label`` (``benign`` | ``malignant``; malignant is the positive class).
* ``t1``, ``t2``: a DICOM series folder, a DICOM file, or a NIfTI/NRRD/MetaImage file;
  relative paths resolve against the manifest's folder. ``t1_series_uid``/``t2_series_uid``
  pick one series when a folder holds several.
* ``lesion_slices``: 0-based T2 slice indices, ``;``-separated (``7;8;9``), on the canonical grid
  of :func:`spinedx.io.read_image` (slices from the patient's left to right, whatever the format
  or the order the file stores them in). Each one is a sample (the paper's slice-level input).
* ``box``: ``x0,y0,x1,y1`` in T2 pixel (column, row) coordinates of the canonical grid (columns
  anterior -> posterior, rows head -> feet), half-open: the square the paper draws around "the
  entire abnormal vertebra" is built from it.
* optional ``feature_<name>`` columns (0/1; names in :mod:`spinedx.features`, the paper's
  Table 1) and ``reader_<name>`` columns (``benign`` | ``malignant`` | empty = no call).
* optional ``synthetic`` (0/1): 1 marks a simulated patient (``spinedx.synth``); a cohort is
  synthetic when every row says 1, and mixing 0 and 1 is refused.
* optional ``lesion_mask``: a NIfTI uint8 mask (0/1) of the lesion in the T2 series' geometry,
  path relative to the manifest like ``t1``/``t2``; ``spinedx extract`` samples it on the patch grid.

The file is UTF-8 CSV with ``,`` between columns. A first line ``sep=;`` (or ``sep=,``, ``sep=|``, ``sep=`` and a
tab), which Excel writes and reads to know the separator, is understood: the separator it names is used and the
line skipped (:func:`manifest_dialect`; pandas readers use :func:`read_manifest_frame`). Any other separator it
names is refused.

Each row is validated by one schema, the Pydantic model :class:`ManifestRow` (the columns above as typed fields; the
user's own columns are carried beside it, in :attr:`CaseRecord.extra`). Validation collects every problem (row,
column, message) and raises one :class:`spinedx.errors.ManifestError`. Whether the box and slices fit inside the
image is checked when the images are read (``spinedx.preprocess``), not here.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spinedx.cohortrow import (
    READER_VALUES,
    ManifestRow,
    RowContext,
    parse_binary,
    parse_box,
    parse_slices,
    path_problem,
    row_problems,
)
from spinedx.errors import ManifestError
from spinedx.features import FEATURE_NAMES, LABELS

__all__ = ["READER_VALUES", "CaseRecord", "Cohort", "ManifestRow", "RowContext", "load_manifest", "manifest_dialect",
           "parse_box", "parse_slices", "read_manifest_frame", "write_manifest"]

IMAGE_COLUMNS = ("t1", "t1_series_uid", "t2", "t2_series_uid", "lesion_slices", "box", "lesion_mask")
REQUIRED_ALWAYS = ("patient_id", "label")
REQUIRED_IMAGES = ("t1", "t2", "lesion_slices", "box")


@dataclass
class CaseRecord:
    """One patient of the manifest.

    Attributes:
        patient_id: pseudonymous patient identifier (unique in the cohort).
        label: ``benign`` or ``malignant`` (the reference standard).
        t1, t2: absolute paths of the T1W/T2W images (None when the manifest has no images).
        t1_series_uid, t2_series_uid: series to read from a folder holding several.
        lesion_slices: 0-based T2 slice indices of the lesion, ascending (empty without images).
        box: ``(x0, y0, x1, y1)`` T2 pixel box, half-open; ``(0, 0, 0, 0)`` without images.
        features: imaging features (name without the ``feature_`` prefix -> 0/1).
        readers: reader calls (``reader_<name>`` -> ``benign``/``malignant``/None).
        extra: the row's other columns (e.g. a synthetic cohort's ``level``), kept as text so that
            :func:`write_manifest` writes them back unchanged.
        synthetic: True for a simulated patient (manifest column ``synthetic`` = 1).
        lesion_mask: absolute path of the lesion mask (NIfTI, T2 geometry), None when not given.
    """

    patient_id: str
    label: str
    t1: Path | None = None
    t2: Path | None = None
    t1_series_uid: str | None = None
    t2_series_uid: str | None = None
    lesion_slices: tuple[int, ...] = ()
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    features: dict[str, int] = field(default_factory=dict)
    readers: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    synthetic: bool = False
    lesion_mask: Path | None = None

    @property
    def y(self) -> int:
        """The label as 0 (benign) / 1 (malignant)."""
        return LABELS[self.label]

    @property
    def has_images(self) -> bool:
        """True when both images and an annotation are given."""
        return self.t1 is not None and self.t2 is not None and bool(self.lesion_slices)


@dataclass
class Cohort:
    """A loaded manifest.

    Attributes:
        path: the manifest file (None for an in-memory cohort).
        cases: one record per row, in file order.
        feature_names: feature columns present, without prefix, in :data:`spinedx.features.FEATURE_NAMES` order.
        reader_names: reader columns present (``reader_...``), in file order.
    """

    path: Path | None
    cases: list[CaseRecord]
    feature_names: tuple[str, ...] = ()
    reader_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[CaseRecord]:
        return iter(self.cases)

    def __getitem__(self, patient_id: str) -> CaseRecord:
        for case in self.cases:
            if case.patient_id == patient_id:
                return case
        raise KeyError(patient_id)

    @property
    def patient_ids(self) -> list[str]:
        return [c.patient_id for c in self.cases]

    @property
    def synthetic(self) -> bool:
        """True when every patient is simulated (the manifest's ``synthetic`` column is 1 on every row)."""
        return bool(self.cases) and all(c.synthetic for c in self.cases)

    @property
    def has_lesion_masks(self) -> bool:
        """True when every patient has a ``lesion_mask``."""
        return bool(self.cases) and all(c.lesion_mask is not None for c in self.cases)

    @property
    def y(self) -> list[int]:
        """Labels as 0/1, in case order."""
        return [c.y for c in self.cases]

    def to_frame(self) -> Any:
        """A pandas DataFrame: patient_id, label, y, feature_* (int), reader_* (str or None)."""
        import pandas as pd

        rows = []
        for c in self.cases:
            row: dict[str, Any] = {"patient_id": c.patient_id, "label": c.label, "y": c.y}
            row.update({f"feature_{n}": c.features.get(n) for n in self.feature_names})
            row.update({r: c.readers.get(r) for r in self.reader_names})
            rows.append(row)
        cols = ["patient_id", "label", "y", *(f"feature_{n}" for n in self.feature_names), *self.reader_names]
        frame = pd.DataFrame(rows, columns=cols)
        for n in self.feature_names:
            frame[f"feature_{n}"] = frame[f"feature_{n}"].astype("int64")
        frame["y"] = frame["y"].astype("int64")
        return frame


#: Separators a ``sep=X`` first line may name (Excel's hint; ``;`` where the decimal mark is a comma).
SEP_LINE_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
# Excel writes the line bare (sep=;); a spreadsheet that saved it back as a row may quote it or pad it with
# separators (sep=,,,,).
_SEP_LINE = re.compile(r'^"?sep=(.)"?(.*)$', re.DOTALL)


def manifest_dialect(first_line: str, *, where: str = "manifest") -> tuple[str, int]:
    """The separator of a manifest and how many lines precede its header, from its first line.

    Args:
        first_line: the file's first line (BOM removed), with or without its line end.
        where: the file, for the error.

    Returns:
        ``(",", 0)`` for a plain CSV; ``(sep, 1)`` when the line is ``sep=X`` (Excel's separator hint).

    Raises:
        ManifestError: a ``sep=`` line naming a separator other than those of :data:`SEP_LINE_SEPARATORS`.
    """
    m = _SEP_LINE.match(first_line.rstrip("\r\n"))
    if m is None:
        return ",", 0
    sep, rest = m.group(1), m.group(2)
    if sep not in SEP_LINE_SEPARATORS or rest.strip(sep + " \t\"") != "":
        raise ManifestError([("line 1", "-", (f"{first_line.strip()[:40]!r} names a separator spinedx does not read; "
                              "only sep=, sep=; sep=| or sep= and a tab are understood: save the file as 'CSV UTF-8 "
                              "(comma delimited)' (no sep= line)"))], where=where)
    return sep, 1


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return fh.readline()


def read_manifest_frame(path: str | Path, **kwargs: Any) -> Any:
    """The manifest as a pandas DataFrame, honouring a ``sep=X`` first line like :func:`load_manifest`.

    For the readers that need the raw columns (the report's per-case details); ``kwargs`` go to
    ``pandas.read_csv``.

    Raises:
        ManifestError: see :func:`manifest_dialect`.
        UnicodeDecodeError, OSError: as ``pandas.read_csv``.
    """
    import pandas as pd

    sep, skip = manifest_dialect(_first_line(Path(path)), where=str(path))
    return pd.read_csv(path, sep=sep, skiprows=skip, encoding="utf-8-sig", **kwargs)


def _to_case(row: ManifestRow, extra: dict[str, str]) -> CaseRecord:
    """A validated row as a :class:`CaseRecord`, with the user's columns ``extra``."""
    return CaseRecord(
        patient_id=row.patient_id, label=row.label, t1=row.t1, t2=row.t2,  # type: ignore[arg-type]
        t1_series_uid=row.t1_series_uid, t2_series_uid=row.t2_series_uid, lesion_slices=row.lesion_slices,
        box=row.box, features=dict(row.features), readers=dict(row.readers), synthetic=row.synthetic,
        lesion_mask=row.lesion_mask, extra=extra)


# -- loading -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Header:
    """The header row and the column groups it defines."""

    columns: list[str]
    feature_names: tuple[str, ...]
    reader_columns: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """The header's columns that are :class:`ManifestRow` fields of their own."""
        return tuple(c for c in ManifestRow.model_fields if c in self.columns and c not in ("features", "readers"))

    def known(self, col: str) -> bool:
        return col in REQUIRED_ALWAYS + IMAGE_COLUMNS or col == "synthetic" or col.startswith(("feature_", "reader_"))

    def row_input(self, rec: dict[str, str], draft: bool) -> dict[str, Any]:
        """The :class:`ManifestRow` input of a record (a draft's empty feature cells left out)."""
        data: dict[str, Any] = {col: rec[col] for col in self.fields}
        data["features"] = {n: rec[f"feature_{n}"] for n in self.feature_names if rec[f"feature_{n}"] or not draft}
        data["readers"] = {col: rec[col] for col in self.reader_columns}
        return data


def _read_rows(path: Path) -> tuple[list[list[str]], str, int]:
    """The CSV's rows, its separator and the lines before the header (a ``sep=`` line).

    Raises:
        ManifestError: the file is missing, a folder, unreadable, not UTF-8, empty or malformed CSV.
    """
    if not path.is_file():
        problem = path_problem(path)
        why = "is a folder, not a file" if path.is_dir() else ("file not found; check the path" if problem in (
            None, "does not exist") else problem)
        raise ManifestError([("manifest", "-", why)], where=str(path))
    try:
        sep, skip = manifest_dialect(_first_line(path), where=str(path))
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for _ in range(skip):
                fh.readline()
            # strict: a quoted field left open at the end (a truncated file) is an error, not a shorter value
            reader = csv.reader(fh, delimiter=sep, strict=True)
            try:
                rows = [r for r in reader]
            except csv.Error as exc:
                raise ManifestError([(f"line {reader.line_num + skip}", "-", (
                    f"malformed CSV ({exc}): a quoted field is not closed or has text after its closing quote (a "
                    "truncated or hand-edited file?); fix the quoting"))], where=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ManifestError([("manifest", "-", f"not a UTF-8 CSV file ({exc})")], where=str(path)) from None
    except OSError as exc:
        raise ManifestError([("manifest", "-", f"cannot be read ({exc.strerror or exc})")], where=str(path)) from None
    if not rows:
        raise ManifestError([("manifest", "-", "empty file (a header row is needed)")], where=str(path))
    return rows, sep, skip


def _header(rows: list[list[str]], skip: int, require_images: bool, where: str) -> tuple[_Header, list[
        tuple[str, str, str]]]:
    """The header and its problems (duplicate, missing and unknown columns).

    Raises:
        ManifestError: a one-column header holding ``;`` or a tab (another separator than ``,``).
    """
    header = [h.strip() for h in rows[0]]
    if len(header) == 1 and not skip:
        for sep, name in ((";", "semicolon"), ("\t", "tab")):
            if sep in header[0]:
                raise ManifestError([("header", "-", (f"the file looks {name}-separated ({header[0][:60]!r} is one "
                                      "column); save it comma-separated (CSV with ',' between columns, e.g. "
                                      "'CSV UTF-8 (comma delimited)' in a spreadsheet)"))], where=where)
    problems = [("header", h, "column appears twice") for i, h in enumerate(header) if h in header[:i]]
    required = REQUIRED_ALWAYS + (REQUIRED_IMAGES if require_images else ())
    problems += [("header", col, "required column missing") for col in required if col not in header]
    problems += [("header", h, f"unknown feature; known: {', '.join(FEATURE_NAMES)}") for h in header
                 if h.startswith("feature_") and h[len("feature_"):] not in FEATURE_NAMES]
    return _Header(columns=header, feature_names=tuple(n for n in FEATURE_NAMES if f"feature_{n}" in header),
                   reader_columns=tuple(h for h in header if h.startswith("reader_"))), problems


def _lines(ls: list[int]) -> str:
    return ", ".join(str(n) for n in ls[:8]) + (", ..." if len(ls) > 8 else "")


def load_manifest(path: str | Path, *, require_images: bool = True, check_files: bool = True,
                  draft: bool = False) -> Cohort:
    """Load and validate a cohort manifest (CSV, UTF-8, header row).

    Each row is validated by the :class:`ManifestRow` schema; the header, duplicate patients and the cohort-wide
    ``synthetic`` rule are checked here.

    Args:
        path: the CSV file.
        require_images: demand ``t1``, ``t2``, ``lesion_slices`` and ``box`` and check that the
            image paths exist. False accepts a study table (``patient_id``, ``label``,
            ``feature_*``, ``reader_*``): image columns, when present, are parsed but the files
            need not exist.
        check_files: with ``require_images``, also check that every image path exists. False
            leaves that to the reader, so that a batch job can report a missing file as that
            patient's failure and go on with the others (the columns and formats are still
            checked).
        draft: a manifest being annotated (``spinedx index``, ``spinedx serve``): an empty ``label``
            (not yet known) gives ``label=None`` and an empty ``feature_*`` cell leaves that feature out of
            ``features``; what is filled in is still validated.

    Returns:
        The cohort.

    Raises:
        ManifestError: listing every bad row and column at once (patient, column, problem);
            also when the manifest itself is missing or not a UTF-8 CSV.
    """
    path = Path(path).expanduser()
    rows, sep, skip = _read_rows(path)
    header, problems = _header(rows, skip, require_images, str(path))
    context = {"row": RowContext(base=Path(os.path.abspath(path)).parent, require_images=require_images,
                                 check_files=check_files, draft=draft)}
    data_rows = [(i + 2 + skip, r) for i, r in enumerate(rows[1:]) if any(c.strip() for c in r)]
    if not data_rows:
        problems.append(("manifest", "-", "no patient rows"))
    quote = {",": "a box x0,y0,x1,y1 must be quoted", ";": "lesion slices 7;8;9 must be quoted"}.get(
        sep, "a value holding the separator must be quoted")
    cases: list[CaseRecord] = []
    ids: dict[str, int] = {}
    synthetic_rows: dict[bool, list[int]] = {True: [], False: []}
    for line, raw in data_rows:
        if len(raw) != len(header.columns):
            problems.append((f"line {line}", "-", f"{len(raw)} fields but the header has {len(header.columns)} "
                             f"({quote})"))
            continue
        rec = {h: v.strip() for h, v in zip(header.columns, raw, strict=True)}
        pid = rec.get("patient_id", "")
        who = f"line {line} ({pid})" if pid else f"line {line}"
        found: list[tuple[str, str, str]] = []
        if pid in ids:
            found.append((who, "patient_id", f"duplicate of line {ids[pid]}"))
        elif pid:
            ids[pid] = line
        try:
            row = ManifestRow.model_validate(header.row_input(rec, draft), context=context)
        except ValidationError as exc:
            found += row_problems(exc, who)
        if "synthetic" in rec and not any(col == "synthetic" for _, col, _ in found):
            synthetic_rows[parse_binary(rec["synthetic"]) == 1].append(line)
        problems += found
        if not found and "patient_id" in rec and "label" in rec:
            cases.append(_to_case(row, {h: rec[h] for h in header.columns if not header.known(h)}))
    if synthetic_rows[True] and synthetic_rows[False]:
        problems.append(("manifest", "synthetic", (f"mixes 1 (lines {_lines(synthetic_rows[True])}) and 0 (lines "
                         f"{_lines(synthetic_rows[False])}): a cohort is either synthetic or real; do not mix "
                         "simulated and real patients")))
    if problems:
        raise ManifestError(problems, where=str(path))
    return Cohort(path=Path(os.path.abspath(path)), cases=cases, feature_names=header.feature_names,
                  reader_names=header.reader_columns)


def _rel(p: Path | None, base: Path) -> str:
    if p is None:
        return ""
    p = Path(os.path.abspath(Path(p).expanduser()))
    try:
        return Path(os.path.relpath(p, base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(p)


def write_manifest(cases: Iterable[CaseRecord], path: str | Path) -> Path:
    """Write ``cases`` as a manifest that :func:`load_manifest` reads back unchanged.

    Image paths are written relative to the manifest's folder (so a cohort folder can be moved
    or copied whole). Image path columns are left out when no case has images; the series UID
    columns when no case sets one; ``lesion_slices`` and ``box`` when no case has images or an annotation.
    Features come in :data:`spinedx.features.FEATURE_NAMES` order, readers in order of first appearance.
    ``lesion_mask`` is written when a case has one, ``synthetic`` when the cases are simulated; a case's
    ``extra`` columns come last; a label of None is written empty.

    Args:
        cases: the records.
        path: the CSV to write (parent folders are created).

    Returns:
        The path written.

    Raises:
        ValueError: simulated and real cases mixed (the manifest would be refused).
    """
    cases = list(cases)
    n_syn = sum(c.synthetic for c in cases)
    if 0 < n_syn < len(cases):
        raise ValueError(f"{n_syn} of {len(cases)} cases are synthetic: a cohort is either synthetic or real")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.abspath(path)).parent
    any_images = any(c.t1 is not None or c.t2 is not None for c in cases)
    any_uid = any(c.t1_series_uid or c.t2_series_uid for c in cases)
    feats = [n for n in FEATURE_NAMES if any(n in c.features for c in cases)]
    readers: list[str] = []
    for c in cases:
        readers.extend(r for r in c.readers if r not in readers)
    extra: list[str] = []
    for c in cases:
        extra.extend(k for k in c.extra if k not in extra)
    # a draft of a DICOMweb server has series UIDs and (once annotated) slices and a box but no paths: keep them
    any_annotation = any(c.lesion_slices or any(c.box) for c in cases)
    header = ["patient_id", "label"]
    if any_images:
        header += ["t1", "t1_series_uid", "t2", "t2_series_uid"] if any_uid else ["t1", "t2"]
    elif any_uid:
        header += ["t1_series_uid", "t2_series_uid"]
    if any_images or any_annotation:
        header += ["lesion_slices", "box"]
    if any(c.lesion_mask is not None for c in cases):
        header += ["lesion_mask"]
    if n_syn:
        header += ["synthetic"]
    header += [f"feature_{n}" for n in feats] + readers
    header += [k for k in extra if k not in header]  # e.g. a 'synthetic' set through extra by older code
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for c in cases:
            row: dict[str, Any] = {"patient_id": c.patient_id, "label": c.label or "",
                                   "t1": _rel(c.t1, base), "t2": _rel(c.t2, base),
                                   "t1_series_uid": c.t1_series_uid or "", "t2_series_uid": c.t2_series_uid or "",
                                   "lesion_slices": ";".join(str(s) for s in c.lesion_slices),
                                   "box": ",".join(str(v) for v in c.box) if c.lesion_slices or any(c.box) else "",
                                   "lesion_mask": _rel(c.lesion_mask, base), "synthetic": int(c.synthetic)}
            row.update({f"feature_{n}": c.features.get(n, "") for n in feats})
            row.update({r: c.readers.get(r) or "" for r in readers})
            row.update({k: c.extra.get(k, "") for k in extra})
            w.writerow([row[h] for h in header])
    return path
