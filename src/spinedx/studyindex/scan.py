"""``spinedx index``: walk a DICOM tree, group files by patient, study and series, choose T1W/T2W per study.

Headers only. Every file's grouping keys (patient, study, series) come from
:func:`spinedx.io.fastheader.grouping_keys`, spinedx's one hand-made DICOM reader (kept because
``benchmarks/header.py`` measures it at least 2x faster than pydicom on a tree with many series that are not
chosen), or from ``pydicom.dcmread(stop_before_pixels=True, specific_tags=...)`` when that reader gives up; each
series' attributes come from one pydicom header. Each chosen series is then checked as ``spinedx extract`` will read
it (:func:`spinedx.io.check_dicom_series`: every file of its folder, the modality, localiser slices, one regular
sagittal stack of at least 3 slices, ...; headers only, pydicom), so a study the reader would refuse is reported as
not usable, with the reader's reason, instead of found. Any layout works (a PACS export, a CD with a DICOMDIR,
nested or flat folders): files are found by walking the tree, and a DICOMDIR, when present, is recognised and
skipped (its records point to the same files). Files that are not DICOM (no ``DICM`` marker at byte 128, PS3.10
7.1) are skipped quietly and counted.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError
from spinedx.studyindex.header import TAGS, SeriesHeader
from spinedx.studyindex.select import SelectionOptions, StudySelection, select_t1_t2_series

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (PS3.10)
# Tags read from every file: the grouping keys, what SeriesHeader needs, and the enhanced MR shared groups.
_READ_TAGS = sorted({int(t, 16) for t in TAGS.values()} | {0x00080018, 0x00020002, 0x52009229})
# spinedx.synth.dicomwriter.MANUFACTURER (not imported: that package pulls in numpy, pandas and scipy)
SYNTH_MANUFACTURER = "spinedx synthetic phantom"
_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class StudyEntry:
    """One study of the tree and the series chosen in it.

    Attributes:
        case_key: the manifest's ``patient_id`` for this study (PatientID, made unique and URL-safe).
        patient_id: the DICOM PatientID.
        study_uid: StudyInstanceUID.
        study_date: StudyDate.
        series: one header per series.
        selection: the T1W/T2W choice with a verdict per series.
    """

    case_key: str
    patient_id: str
    study_uid: str
    study_date: str
    series: list[SeriesHeader]
    selection: StudySelection

    def series_folder(self, role: str) -> Path | None:
        """The deepest folder holding every file of the chosen series of ``role`` (None when not chosen)."""
        s = getattr(self.selection, role)
        if s is None or not s.files:
            return None
        return Path(os.path.commonpath([os.path.dirname(f) for f in s.files]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``index.json``)."""
        return {"case_key": self.case_key, "patient_id": self.patient_id, "study_uid": self.study_uid,
                "study_date": self.study_date,
                "t1_folder": str(self.series_folder("t1") or "") or None,
                "t2_folder": str(self.series_folder("t2") or "") or None,
                **self.selection.to_dict(),
                "headers": {s.series_uid: s.to_dict() for s in self.series}}


@dataclass
class TreeIndex:
    """What :func:`index_tree` found in a folder, or :func:`spinedx.interop.pacs.index_server` on a DICOMweb server.

    Attributes:
        root: the folder walked (a ``Path``), or the server's DICOMweb URL without user-info (a ``str``).
        studies: one entry per study, ordered by case key.
        n_files: files looked at.
        n_dicom: DICOM files read (DICOMDIR excluded).
        n_skipped: files that are not DICOM (or unreadable, or without a SeriesInstanceUID).
        n_dicomdir: DICOMDIR files seen (and skipped).
        seconds: wall time.
        options: the selection options used.
        skipped_examples: a few skipped files with the reason (for the report).
    """

    root: Path | str
    studies: list[StudyEntry]
    n_files: int = 0
    n_dicom: int = 0
    n_skipped: int = 0
    n_dicomdir: int = 0
    seconds: float = 0.0
    options: SelectionOptions = field(default_factory=SelectionOptions)
    skipped_examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def dicomweb(self) -> str | None:
        """The server's URL when this indexes a DICOMweb server (its series have no files), None for a folder."""
        return None if isinstance(self.root, Path) else str(self.root)

    @property
    def ambiguous(self) -> list[StudyEntry]:
        return [s for s in self.studies if s.selection.status == "ambiguous"]

    @property
    def incomplete(self) -> list[StudyEntry]:
        return [s for s in self.studies if s.selection.status == "incomplete"]

    @property
    def complete(self) -> list[StudyEntry]:
        return [s for s in self.studies if s.selection.status == "ok"]

    @property
    def unusable(self) -> list[StudyEntry]:
        """Studies whose chosen T1W or T2W series the reader refuses (the reason is in the selection)."""
        return [s for s in self.studies if s.selection.status == "unusable"]

    def counts(self) -> dict[str, int]:
        """Studies by status (``index.json`` ``counts``)."""
        return {"studies": len(self.studies), "complete": len(self.complete), "ambiguous": len(self.ambiguous),
                "incomplete": len(self.incomplete), "unusable": len(self.unusable)}

    @property
    def synthetic(self) -> bool:
        """True when every series was written by ``spinedx synth`` (its Manufacturer)."""
        series = [s for st in self.studies for s in st.series]
        return bool(series) and all(s.manufacturer == SYNTH_MANUFACTURER for s in series)


def _walk(root: Path) -> list[str]:
    """Every regular file under ``root`` (hidden names skipped), sorted; symlinked folders are not followed."""
    out: list[str] = []
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.is_file():
                out.append(e.path)
    out.sort()
    return out


def _is_dicom(path: str) -> bool:
    """PS3.10 7.1: 128-byte preamble then ``DICM``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: str) -> Any:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_READ_TAGS)


def _pydicom_keys(path: str) -> tuple[dict[str, str], Any, str]:
    """The grouping keys of a file read by pydicom (the fast reader gave up on it).

    Returns:
        ``(keys, header, "")``, or ``({}, None, reason)`` when the file is to be skipped: not DICOM, or unreadable.
    """
    if not _is_dicom(path):
        return {}, None, "not DICOM (no DICM marker)"
    try:
        ds = _read_header(path)
    except Exception as exc:  # noqa: BLE001 -- a corrupt file is skipped and counted, not fatal
        return {}, None, f"unreadable ({type(exc).__name__})"
    meta_sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
    keys = {k: str(ds.get(k, "") or "") for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                                    "NumberOfFrames")}
    keys["SOPClassUID"] = str(ds.get("SOPClassUID", "") or meta_sop or "")
    return keys, ds, ""


def _n_frames(value: str | None) -> int:
    """A file's NumberOfFrames as a count: 1 when absent, empty or not a number."""
    try:
        return int(float(value or 1))
    except (TypeError, ValueError):
        return 1


def index_tree(root: str | Path, options: SelectionOptions | None = None, *, progress: bool = True) -> TreeIndex:
    """Index a DICOM tree: group every file by patient, study and series, and choose T1W/T2W per study.

    Args:
        root: the folder to walk (recursively).
        options: what the series selection may accept (see :class:`SelectionOptions`).
        progress: show a rich progress bar over the files.

    Returns:
        The index (studies with their selections, counts of files read and skipped).

    Raises:
        SpinedxError: ``root`` is not a folder, or holds no DICOM image file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SpinedxError("not a folder; give the root of a DICOM tree (a PACS export, a CD, ...)", where=str(root))
    opts = options or SelectionOptions()
    import pydicom  # noqa: F401 -- imported before the clock starts: the rate is per file, not per interpreter
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import spinedx.io  # noqa: F401 -- the reader's checks of the chosen series (check_chosen_series), likewise
    from spinedx.io import fastheader

    t0 = time.perf_counter()
    files = _walk(root)
    series_files: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    series_frames: dict[tuple[str, str, str], int] = defaultdict(int)
    first_ds: dict[tuple[str, str, str], Any] = {}
    n_dicom = n_skipped = n_dicomdir = 0
    skipped: list[tuple[str, str]] = []

    def skip(path: str, why: str) -> None:
        nonlocal n_skipped
        n_skipped += 1
        if len(skipped) < 20:
            skipped.append((path, why))

    with Progress(TextColumn("index"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress, transient=True) as bar:
        task = bar.add_task("files", total=len(files))
        for i, path in enumerate(files):
            if i % 64 == 0:
                bar.update(task, completed=i)
            keys = fastheader.grouping_keys(path)
            ds = None
            if keys is None:  # the fast reader gave up on this file: pydicom reads it
                keys, ds, why = _pydicom_keys(path)
                if why:
                    skip(path, why)
                    continue
            if keys.get("SOPClassUID") == _DICOMDIR_SOP or os.path.basename(path) == "DICOMDIR":
                n_dicomdir += 1
                continue
            series_uid = keys.get("SeriesInstanceUID", "")
            if not series_uid:
                skip(path, "DICOM without SeriesInstanceUID")
                continue
            n_dicom += 1
            key = (keys.get("PatientID", ""), keys.get("StudyInstanceUID", ""), series_uid)
            series_files[key].append(path)
            series_frames[key] += _n_frames(keys.get("NumberOfFrames"))
            if key not in first_ds:
                try:  # the series' attributes come from one full header (pydicom)
                    first_ds[key] = ds if ds is not None else _read_header(path)
                except Exception as exc:  # noqa: BLE001
                    series_files[key].pop()
                    n_dicom -= 1
                    skip(path, f"unreadable ({type(exc).__name__})")
                    continue
        bar.update(task, completed=len(files))

    studies_raw: dict[tuple[str, str], list[SeriesHeader]] = defaultdict(list)
    for key, paths in series_files.items():
        hdr = SeriesHeader.from_dataset(first_ds[key], n_instances=len(paths), n_frames=series_frames[key],
                                        files=tuple(paths))
        studies_raw[key[:2]].append(hdr)
    if not studies_raw:
        raise SpinedxError(f"no DICOM image file found ({len(files)} file(s) looked at, {n_skipped} not DICOM); "
                           "check the folder", where=str(root))

    raw = list(studies_raw.items())
    names = case_keys([(pid, series[0].study_date, study_uid) for (pid, study_uid), series in raw])
    studies = [StudyEntry(name, pid, study_uid, series[0].study_date, series, select_t1_t2_series(series, opts))
               for name, ((pid, study_uid), series) in zip(names, raw, strict=True)]
    studies.sort(key=lambda s: s.case_key)
    check_chosen_series(studies, opts)
    return TreeIndex(root.resolve(), studies, n_files=len(files), n_dicom=n_dicom, n_skipped=n_skipped,
                     n_dicomdir=n_dicomdir, seconds=time.perf_counter() - t0, options=opts, skipped_examples=skipped)


def case_keys(studies: list[tuple[str, str, str]]) -> list[str]:
    """The manifest's ``patient_id`` for each study ``(PatientID, StudyDate, StudyInstanceUID)``, in the given order.

    The PatientID made URL-safe (``UNKNOWN`` when empty); a patient with several studies gets ``KEY_<StudyDate>``
    (``KEY_<n>`` without a date, n counting the patient's studies by date and UID) for each; a key already taken gets
    ``_<n>`` appended until it is free. A folder's index and a DICOMweb server's name a study alike, whatever order
    the studies come in.
    """
    by_patient: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for i, (pid, date, uid) in enumerate(studies):
        by_patient[pid].append((date, uid, i))
    out = [""] * len(studies)
    used: set[str] = set()
    for pid in sorted(by_patient):
        items = sorted(by_patient[pid])
        base = _SAFE_KEY.sub("_", pid).strip("_") or "UNKNOWN"
        for n, (date, _, i) in enumerate(items, start=1):
            key = base if len(items) == 1 else f"{base}_{date or n}"
            while key in used:
                key = f"{key}_{n}"
            used.add(key)
            out[i] = key
    return out


def check_chosen_series(studies: list[StudyEntry], options: SelectionOptions) -> None:
    """Read the headers of each chosen series as ``spinedx extract`` will and reject those the reader refuses.

    The check is :func:`spinedx.io.check_dicom_series` on the folder and series UID the manifest row will name, so
    index and reader cannot disagree on anything the headers tell (a localiser slice filed under the series' UID,
    mixed orientations, a missing slice, another modality, a stray non-DICOM file in the folder, ...). A rejected
    role is left empty (:meth:`StudySelection.reject`) and the study is listed as not usable, with the reason.
    """
    from spinedx.errors import ImageReadError
    from spinedx.io import check_dicom_series

    todo = []
    for st in studies:
        for role in ("t1", "t2"):
            chosen, folder = getattr(st.selection, role), st.series_folder(role)
            if chosen is not None and folder is not None:
                todo.append((st, role, chosen, folder))
    last_use = {folder.resolve(): i for i, (_, _, _, folder) in enumerate(todo)}
    scans: dict[Path, Any] = {}  # a folder holding several series (a flat CD) is read once, let go after its last use
    for i, (st, role, chosen, folder) in enumerate(todo):
        try:
            check_dicom_series(folder, chosen.series_uid, allow_modality=options.allow_modality, scans=scans)
        except ImageReadError as exc:
            st.selection.reject(role, exc.one_line())
        if last_use[folder.resolve()] == i:
            scans.pop(folder.resolve(), None)
