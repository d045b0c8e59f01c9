"""Writing ``spinedx index``'s draft manifest and ``index.json`` without ever losing a user's work.

:func:`write_index` is the one writer of both forms of ``spinedx index``: a folder
(:func:`spinedx.studyindex.index_tree`) and a DICOMweb server (:func:`spinedx.interop.pacs.index_server`). It makes
one manifest row and one ``index.json`` entry per study and hands them to :func:`write_draft`, which decides what
happens at ``--out``:

* **No manifest at ``--out``**: the draft is written (one row per study).
* **A spinedx manifest at ``--out``** (a CSV with ``patient_id`` and ``label`` columns that
  :func:`spinedx.cohort.load_manifest` reads as a draft): it is merged, never rewritten. Every existing row stays
  exactly as it is (label, lesion slices, box, features, reader calls, any other column; the cells are copied as
  text), studies of this index that are already in it are left alone, and only new studies are appended. A study is
  "already in it" when a row names its StudyInstanceUID (``study_uid``), one of its series (``t1_series_uid``,
  ``t2_series_uid``), or one of its folders or files (``t1``, ``t2``); a row with none of these is matched by its
  ``patient_id``. A new study whose case key is taken by another row gets the first free ``KEY_2``, ``KEY_3``, ...
  When nothing is new the manifest is not touched at all.
* **Anything else at ``--out``** (a DICOMDIR, another CSV, a folder, a manifest that does not load) is refused with
  one line naming it: nothing is written.
* ``index.json`` beside the manifest follows the same rule: a spinedx ``index.json`` of this manifest is merged
  (its entries for rows that stay are kept, entries of added studies appended, ``merge`` says what happened); one
  made for another manifest that still exists, or a file that is not a spinedx ``index.json``, is refused.

Both files are written to temporary siblings, checked (the merged manifest must load) and renamed only then.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.errors import SpinedxError

if TYPE_CHECKING:
    from spinedx.studyindex.scan import TreeIndex

_IDENTITY_UID_COLUMNS = ("t1_series_uid", "t2_series_uid")
_IDENTITY_PATH_COLUMNS = ("t1", "t2")


@dataclass(frozen=True)
class WrittenIndex:
    """What :func:`write_draft` wrote. Unpacks as ``(manifest, index_json)``, like the former tuple.

    Attributes:
        manifest: the manifest path.
        index_json: the ``index.json`` path.
        existed: the manifest existed before (it was merged, not created).
        kept: rows of the existing manifest, all kept as they were.
        found_again: studies of this index that were already in the manifest (left alone).
        added: case keys of the rows appended (all studies when the manifest is new).
        renamed: study case key -> the key it was added under (its key was taken by another row).
        manifest_changed: False when the manifest was left byte-identical (nothing to add).
    """

    manifest: Path
    index_json: Path
    existed: bool = False
    kept: int = 0
    found_again: int = 0
    added: tuple[str, ...] = ()
    renamed: dict[str, str] = field(default_factory=dict)
    manifest_changed: bool = True

    def __iter__(self) -> Iterator[Path]:
        yield self.manifest
        yield self.index_json

    def summary(self) -> str:
        """One line for the console: what happened to the manifest."""
        if not self.existed:
            return f"manifest written: {len(self.added)} studies"
        renamed = "".join(f"; {old} added as {new} (its key is taken)" for old, new in self.renamed.items())
        untouched = " (the file is unchanged)" if not self.manifest_changed else ""
        return (f"manifest merged: {self.kept} existing row(s) kept as they were ({self.found_again} of this index's "
                f"studies among them), {len(self.added)} new study(ies) added{untouched}{renamed}")


def write_index(index: TreeIndex, manifest_path: str | Path) -> WrittenIndex:
    """Write the draft manifest (one row per study; label, slices and box empty) and ``index.json`` beside it.

    Studies whose T1W or T2W is ambiguous, missing or not usable get a row with that column empty (never a guess);
    ``index.json`` says for every series why it was chosen or not. The rows of a folder's index name the series'
    folders (``t1``, ``t2``) and UIDs; the rows of a server's index (:attr:`TreeIndex.dicomweb`) name the study and
    the chosen series (``study_uid``, ``t1_series_uid``, ``t2_series_uid``), ready for ``spinedx predict --dicomweb
    URL --study UID``, since the images stay on the server. A synthetic cohort's manifest carries the ``synthetic``
    column (value 1). Over an existing manifest the new studies are merged in and every existing row is kept as it
    was; a file at ``manifest_path`` that is not a spinedx manifest is refused (:func:`write_draft`).

    Args:
        index: from :func:`spinedx.studyindex.index_tree` or :func:`spinedx.interop.pacs.index_server`.
        manifest_path: the CSV to write (``index.json`` goes in the same folder).

    Returns:
        What was written and merged; unpacks as ``(manifest, index_json)``.
    """
    from spinedx import __version__
    from spinedx.cohort import CaseRecord
    from spinedx.common import redact_url

    manifest_path = Path(manifest_path).expanduser()
    synthetic = index.synthetic
    server = index.dicomweb
    cases = []
    for st in index.studies:
        sel = st.selection
        t1_uid, t2_uid = (sel.t1.series_uid if sel.t1 else None), (sel.t2.series_uid if sel.t2 else None)
        if server is None:
            cases.append(CaseRecord(
                patient_id=st.case_key, label=None,  # type: ignore[arg-type]  # unknown until annotated
                t1=st.series_folder("t1"), t2=st.series_folder("t2"), t1_series_uid=t1_uid, t2_series_uid=t2_uid,
                synthetic=synthetic,
            ))
        else:
            extra = {"study_uid": st.study_uid, "t1_series_uid": t1_uid or "", "t2_series_uid": t2_uid or ""}
            if synthetic:
                extra["synthetic"] = "1"
            cases.append(CaseRecord(patient_id=st.case_key, label=None, extra=extra))  # type: ignore[arg-type]
    if server is None:
        source: dict[str, Any] = {"root": str(index.root)}
        counts: dict[str, Any] = {"files": index.n_files, "dicom": index.n_dicom,
                                  "skipped_not_dicom": index.n_skipped, "dicomdir": index.n_dicomdir}
    else:
        source, counts = {"dicomweb": redact_url(server)}, {"instances": index.n_dicom}
    doc: dict[str, Any] = {
        "spinedx_version": __version__,
        **source,
        "manifest": str(manifest_path.resolve()),
        "options": index.options.to_dict(),
        "counts": {**counts, **index.counts()},
        "seconds": round(index.seconds, 3),
        "synthetic": synthetic,
    }
    if server is None:
        doc["skipped_examples"] = [{"file": f, "reason": r} for f, r in index.skipped_examples]
    doc["studies"] = [st.to_dict() for st in index.studies]
    return write_draft(index, cases, doc, manifest_path)


def write_draft(index: Any, cases: list[Any], doc: dict[str, Any], manifest_path: str | Path) -> WrittenIndex:
    """Write (or merge into) the draft manifest and ``index.json`` of an index (rules in the module docstring).

    Args:
        index: the :class:`spinedx.studyindex.TreeIndex` (folder or DICOMweb server).
        cases: one :class:`spinedx.cohort.CaseRecord` per study of ``index.studies``, in that order (the draft rows).
        doc: the ``index.json`` document of this index (its ``studies`` list in the same order).
        manifest_path: the manifest (``--out``); ``index.json`` goes beside it.

    Returns:
        What was written and merged.

    Raises:
        SpinedxError: ``--out`` or the ``index.json`` beside it exists and is not spinedx's (naming it), or a
            synthetic and a real cohort would be mixed.
        spinedx.errors.ManifestError: the existing manifest does not load (its problems listed).
    """
    from spinedx.cohort import load_manifest
    from spinedx.fsutil import atomic_path

    manifest_path = Path(manifest_path).expanduser()
    json_path = manifest_path.parent / "index.json"
    studies = list(index.studies)
    if len(cases) != len(studies) or len(doc.get("studies", [])) != len(studies):
        raise ValueError("write_draft needs one case and one index.json entry per study, in the same order")
    existing = _existing_manifest(manifest_path)
    old_doc = _existing_index_json(json_path, manifest_path, merging=existing is not None)
    doc = dict(doc)
    doc["options"] = {**doc.get("options", {}), **index.options.to_dict()}
    doc["counts"] = {**doc.get("counts", {}), "unusable": len(index.unusable)}
    manifest_path.parent.mkdir(parents=True, exist_ok=True)

    if existing is None:
        from spinedx.cohort import write_manifest

        with atomic_path(manifest_path) as tmp:
            write_manifest(cases, tmp)
            for entry in doc["studies"]:
                entry["manifest_row"] = "added"
            _write_json(json_path, doc)
        return WrittenIndex(manifest_path, json_path, added=tuple(c.patient_id for c in cases))

    cohort = load_manifest(manifest_path, require_images=False, check_files=False, draft=True)
    rows = [dict(zip(existing.header, r, strict=True)) for r in existing.rows]
    taken = {r.get("patient_id", "").strip() for r in rows}
    new_idx, found = [], 0
    for i, st in enumerate(studies):
        if any(_same_study(st, cases[i], r, manifest_path.parent) for r in rows):
            found += 1
        else:
            new_idx.append(i)
    if new_idx and bool(index.synthetic) != cohort.synthetic:
        raise SpinedxError(f"the manifest is {'synthetic' if cohort.synthetic else 'real'} but the indexed studies "
                           f"are {'synthetic' if index.synthetic else 'real'}: a cohort is one or the other; choose "
                           "another --out", where=str(manifest_path))
    renamed: dict[str, str] = {}
    added: list[Any] = []
    for i in new_idx:
        case = cases[i]
        key = _free_key(case.patient_id, taken)
        taken.add(key)
        if key != case.patient_id:
            renamed[case.patient_id] = key
            from dataclasses import replace

            case = replace(case, patient_id=key)
        added.append(case)

    entries = _merged_entries(old_doc, doc["studies"], cases, new_idx, renamed)
    doc["studies"] = entries
    doc["merge"] = {"manifest_existed": True, "rows_kept": len(rows), "found_again": found,
                    "added": [c.patient_id for c in added], "renamed": renamed}
    result = WrittenIndex(manifest_path, json_path, existed=True, kept=len(rows), found_again=found,
                          added=tuple(c.patient_id for c in added), renamed=renamed, manifest_changed=bool(added))
    if not added:  # nothing new: the manifest stays byte-identical
        _write_json(json_path, doc)
        return result
    with atomic_path(manifest_path) as tmp:
        _write_merged(existing, added, cases, tmp, synthetic=bool(index.synthetic))
        try:
            load_manifest(tmp, require_images=False, check_files=False, draft=True)
        except SpinedxError as exc:  # never replace a loadable manifest with one that does not load
            raise SpinedxError(f"merging the new studies would make a manifest that does not load ({exc.one_line()}); "
                               "nothing was written: choose another --out", where=str(manifest_path)) from None
        _write_json(json_path, doc)  # renamed first; the manifest is renamed when this block ends
    return result


# -- the existing files ---------------------------------------------------------------------------------------
@dataclass
class _Csv:
    header: list[str]
    rows: list[list[str]]
    delimiter: str = ","
    sep_line: str | None = None  # a spreadsheet's "sep=;" first line, written back as it was


def _refuse_foreign(path: Path, what: str) -> SpinedxError:
    return SpinedxError(f"exists and is {what}, not a spinedx manifest: spinedx index never replaces it; give --out a "
                        "new file name (e.g. cohort.csv) or an existing spinedx manifest to merge into",
                        where=str(path))


def _existing_manifest(path: Path) -> _Csv | None:
    """The manifest at ``--out`` as text cells, None when there is none; anything that is not one is refused."""
    if not os.path.lexists(path):
        return None
    if path.is_dir():
        raise SpinedxError("is a folder: --out names the manifest file to write (e.g. cohort.csv)", where=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpinedxError(f"exists but cannot be read ({exc.strerror or exc}); spinedx index never replaces a file "
                           "it cannot read", where=str(path)) from None
    if data[128:132] == b"DICM" or path.name.upper() == "DICOMDIR":
        raise _refuse_foreign(path, "a DICOM file (a CD's DICOMDIR?)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refuse_foreign(path, "not a UTF-8 text file") from None
    if "\x00" in text:
        raise _refuse_foreign(path, "a binary file")
    lines = text.splitlines(keepends=True)
    sep_line = None
    delimiter = ","
    if lines and lines[0].strip().lower().startswith("sep=") and len(lines[0].strip()) == 5:
        sep_line, delimiter = lines[0].rstrip("\r\n"), lines[0].strip()[4]
        text = "".join(lines[1:])
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise _refuse_foreign(path, f"not a readable CSV ({exc})") from None
    if not table:
        raise _refuse_foreign(path, "an empty file")
    header = [h.strip() for h in table[0]]
    if "patient_id" not in header or "label" not in header:
        raise _refuse_foreign(path, f"a file whose first line has no patient_id and label columns "
                                    f"({', '.join(header[:6])[:80]!r})")
    rows = [r for r in table[1:] if any(c.strip() for c in r)]
    return _Csv(header, rows, delimiter, sep_line)


def _existing_index_json(path: Path, manifest: Path, *, merging: bool) -> dict[str, Any] | None:
    """The ``index.json`` to merge with (None: none, or a stale one of this manifest to replace); refuse others."""
    if not os.path.lexists(path):
        return None
    if path.is_dir():
        raise SpinedxError("is a folder where spinedx index writes its index.json; move it or write the manifest "
                           "into another folder", where=str(path))
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    if not (isinstance(doc, dict) and "spinedx_version" in doc and isinstance(doc.get("studies"), list)):
        raise SpinedxError("exists and is not a spinedx index.json: spinedx index never replaces it; move it, or "
                           "write the manifest into another folder (index.json goes beside it)", where=str(path))
    recorded = doc.get("manifest")
    if recorded and os.path.realpath(recorded) != os.path.realpath(manifest) and os.path.exists(recorded):
        raise SpinedxError(f"belongs to another manifest ({recorded}), which it explains; write this manifest into "
                           "another folder (index.json goes beside it)", where=str(path))
    return doc if merging else None


# -- matching studies with rows -------------------------------------------------------------------------------
def _resolve(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    return os.path.realpath(p if p.is_absolute() else base / p)


def _same_study(study: Any, case: Any, row: dict[str, str], base: Path) -> bool:
    """Whether a manifest row stands for ``study`` (StudyInstanceUID, else series UIDs, else paths, else key)."""
    cell = {k: (v or "").strip() for k, v in row.items()}
    if cell.get("study_uid"):
        return cell["study_uid"] == study.study_uid
    uids = {cell.get(c, "") for c in _IDENTITY_UID_COLUMNS} - {""}
    if uids:
        return bool(uids & {s.series_uid for s in study.series})
    paths = {_resolve(cell[c], base) for c in _IDENTITY_PATH_COLUMNS if cell.get(c)}
    if paths:
        files = {os.path.realpath(f) for s in study.series for f in s.files}
        folders = {os.path.dirname(f) for f in files}
        return any(p in files or p in folders or any(d.startswith(p + os.sep) for d in folders) for p in paths)
    return cell.get("patient_id", "") == case.patient_id


def _free_key(key: str, taken: set[str]) -> str:
    if key not in taken:
        return key
    n = 2
    while f"{key}_{n}" in taken:
        n += 1
    return f"{key}_{n}"


# -- writing --------------------------------------------------------------------------------------------------
def _write_merged(existing: _Csv, added: list[Any], cases: list[Any], tmp: Path, *, synthetic: bool) -> None:
    """The existing rows cell for cell, then the added rows as :func:`spinedx.cohort.write_manifest` writes them."""
    from spinedx.cohort import write_manifest

    # write_manifest makes the cells (paths relative to the manifest's folder, UIDs, synthetic flag): into a
    # scratch file beside the manifest so relative paths mean the same, then read back as text.
    scratch = tmp.with_name(tmp.name + ".new")
    try:
        write_manifest(added, scratch)
        with open(scratch, newline="", encoding="utf-8") as fh:
            table = list(csv.reader(fh))
    finally:
        scratch.unlink(missing_ok=True)
    new_header, new_rows = table[0], table[1:]
    header = list(existing.header) + [c for c in new_header if c not in existing.header]
    fill = {"synthetic": "1" if synthetic else "0"}  # an existing synthetic column must stay 0/1 on every row
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        if existing.sep_line is not None:
            fh.write(existing.sep_line + "\r\n")
        w = csv.writer(fh, delimiter=existing.delimiter)
        w.writerow(header)
        pad = len(header) - len(existing.header)
        for r in existing.rows:
            w.writerow(list(r) + [""] * pad)
        for r in new_rows:
            cells = dict(zip(new_header, r, strict=True))
            w.writerow([cells.get(h, fill.get(h, "")) for h in header])


def _merged_entries(old_doc: dict[str, Any] | None, new_entries: list[dict[str, Any]], cases: list[Any],
                    new_idx: list[int], renamed: dict[str, str]) -> list[dict[str, Any]]:
    """``index.json`` studies: the previous entries (rows kept), then this index's added studies."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in (old_doc or {}).get("studies", []):
        if isinstance(entry, dict):
            out.append({**entry, "manifest_row": "kept"})
            seen.add(str(entry.get("study_uid", "")))
    added = set(new_idx)
    for i, entry in enumerate(new_entries):
        key = cases[i].patient_id
        if i in added:
            out.append({**entry, "case_key": renamed.get(key, key), "manifest_row": "added"})
        elif str(entry.get("study_uid", "")) not in seen:
            # already in the manifest (its row kept as it was) but not in the previous index.json: this index's view
            out.append({**entry, "manifest_row": "already in the manifest (row kept as it was)"})
    return out


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    from spinedx.fsutil import atomic_write_json

    atomic_write_json(path, doc, indent=1)
