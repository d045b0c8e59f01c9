"""Benchmark: ``spinedx index`` with its one hand-made DICOM reader (spinedx.io.fastheader) vs pydicom alone.

Usage::

    .venv/bin/python benchmarks/header.py                          # makes a 12-patient synthetic cohort in a temp dir
    .venv/bin/python benchmarks/header.py --cohort c190/cohort.csv # an existing spinedx synth cohort (its dicom/)
    .venv/bin/python benchmarks/header.py --cohort c190/cohort.csv --clinical-patients 60 --repeat 5

``spinedx index`` reads every file's grouping keys (patient, study, series) before it chooses anything, then reads
every file of each chosen series as the reader will (``spinedx.io.check_dicom_series``, pydicom). The keys come
from :func:`spinedx.io.fastheader.grouping_keys`, a byte-level reader, and from pydicom
(``dcmread(stop_before_pixels=True, specific_tags=...)``) when it gives up; the pydicom path is measured here by
making it give up on every file, in the same process, alternating with the fast path.

Two trees:

* the synthetic cohort's ``dicom/`` folder: every file is in a chosen series (the worst case for the fast reader);
* a clinical-like tree: the same studies (``--clinical-patients`` of them) with the series a lumbar spine MRI study
  also holds and ``spinedx index`` does not choose: a 3-plane localiser (9 images), sagittal STIR (13), axial T2
  (30), axial T1 (30) and sagittal post-contrast T1 (13), 256 x 256, written by pydicom into the same study; about
  four files in five are then in series that are not chosen.

Each repetition times one index of a tree with each path back to back (the order alternates), after one untimed
pass of each (OS file cache, imports); the ratio is the median of the repetitions' ratios (the machine may be shared,
so a pair timed back to back sees the same load). The fast reader earns its place only while the ratio on a
realistic tree is at least 2. Ends with ``RESULT header_index_ratio <ratio on the clinical-like tree>``.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# The series a lumbar spine study holds besides sagittal T1W/T2W: (folder, description, number of images,
# orientation (row, column cosines), extra attributes).
_SAG = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
_AX = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
_EXTRA_SERIES = [
    ("LOC", "LOC 3-PLANE", 9, None, {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "EchoTime": 2.0,
                                       "RepetitionTime": 8.0}),
    ("STIR", "SAG STIR", 13, _SAG, {"ScanningSequence": ["IR"], "InversionTime": 150.0, "EchoTime": 60.0,
                                     "RepetitionTime": 4000.0}),
    ("AXT2", "AX T2 FSE", 30, _AX, {"EchoTime": 100.0, "RepetitionTime": 4000.0}),
    ("AXT1", "AX T1 SE", 30, _AX, {"EchoTime": 12.0, "RepetitionTime": 500.0}),
    ("T1POST", "SAG T1 SE +C", 13, _SAG, {"EchoTime": 12.0, "RepetitionTime": 500.0,
                                          "ContrastBolusAgent": "GADOLINIUM"}),
]


def make_cohort(out: Path, n_patients: int, seed: int) -> Path:
    """A ``spinedx synth`` cohort; returns its manifest."""
    from spinedx.synth import generate_cohort

    n_mal = max(1, round(n_patients * 50 / 190))
    return generate_cohort(out, n_patients=n_patients, n_malignant=n_mal, seed=seed, progress=False)


def make_clinical_tree(dicom_root: Path, out: Path, n_patients: int) -> int:
    """The first ``n_patients`` studies of a synth tree (hard links to their T1/T2 files) with the series of
    :data:`_EXTRA_SERIES` added to each study. Returns the number of DICOM files written or linked."""
    import pydicom
    from pydicom.uid import generate_uid

    n = 0
    for patient in sorted(p for p in dicom_root.iterdir() if p.is_dir())[:n_patients]:
        for role in ("T1", "T2"):
            dst = out / patient.name / role
            dst.mkdir(parents=True)
            for f in sorted((patient / role).glob("*.dcm")):
                os.link(f, dst / f.name)
                n += 1
        template = pydicom.dcmread(sorted((patient / "T1").glob("*.dcm"))[0])
        for number, (folder, desc, count, iop, extra) in enumerate(_EXTRA_SERIES, start=10):
            dst = out / patient.name / folder
            dst.mkdir(parents=True)
            series_uid = generate_uid()
            for k in range(count):
                ds = copy.deepcopy(template)
                ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = desc, number, k + 1
                ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
                orientation = iop if iop is not None else [_SAG, _AX, [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]][k % 3]
                ds.ImageOrientationPatient = orientation
                ds.ImagePositionPatient = [-60.0 + 4.0 * k, -120.0, 120.0] if orientation != _AX else \
                    [-120.0, -120.0, 60.0 - 4.0 * k]
                for key, value in extra.items():
                    setattr(ds, key, value)
                ds.Rows = ds.Columns = 256
                ds.PixelSpacing = [1.2, 1.2]
                ds.PixelData = np.full((256, 256), 100 + k, dtype=np.uint16).tobytes()
                ds.save_as(dst / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
                n += 1
    return n


def time_index(root: Path, fast: bool) -> tuple[float, Any]:
    """Seconds of one ``index_tree`` of ``root`` with the fast key reader or pydicom alone, and the index."""
    from spinedx.io import fastheader
    from spinedx.studyindex import index_tree

    keep: Callable[[str], dict[str, str] | None] = fastheader.grouping_keys
    if not fast:
        fastheader.grouping_keys = lambda path: None  # type: ignore[assignment]  # every file read by pydicom
    try:
        t0 = time.perf_counter()
        idx = index_tree(root, progress=False)
        return time.perf_counter() - t0, idx
    finally:
        fastheader.grouping_keys = keep  # type: ignore[assignment]


def per_file(files: list[str], repeat: int) -> tuple[float, float]:
    """Median seconds per file of the grouping keys: the fast reader, and pydicom as ``spinedx index`` calls it."""
    import pydicom

    from spinedx.io.fastheader import grouping_keys
    from spinedx.studyindex.scan import _READ_TAGS

    def run(fn: Callable[[str], object]) -> float:
        t0 = time.perf_counter()
        for f in files:
            fn(f)
        return (time.perf_counter() - t0) / len(files)

    fast, slow = [], []
    for _ in range(repeat):
        fast.append(run(grouping_keys))
        slow.append(run(lambda f: pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_READ_TAGS)))
    return float(np.median(fast)), float(np.median(slow))


def compare(name: str, root: Path, repeat: int) -> float:
    """Index ``root`` with both paths, alternating; check that they agree; print files/s of each and the ratio."""
    time_index(root, True)  # untimed: OS file cache, imports, lazy initialisation
    time_index(root, False)
    fast_s, slow_s, ratios = [], [], []
    got: dict[bool, Any] = {}
    for r in range(repeat):
        order = (True, False) if r % 2 == 0 else (False, True)
        seconds = {}
        for fast in order:
            seconds[fast], got[fast] = time_index(root, fast)
        fast_s.append(seconds[True])
        slow_s.append(seconds[False])
        ratios.append(seconds[False] / seconds[True])
    idx = got[True]
    if [st.to_dict() for st in idx.studies] != [st.to_dict() for st in got[False].studies] or \
            (idx.n_files, idx.n_dicom, idx.n_skipped) != (got[False].n_files, got[False].n_dicom, got[False].n_skipped):
        raise SystemExit(f"{name}: the index with the fast key reader differs from the index with pydicom alone")
    chosen = sum(len(s.files) for st in idx.studies for s in (st.selection.t1, st.selection.t2) if s is not None)
    f, s = float(np.median(fast_s)), float(np.median(slow_s))
    ratio = float(np.median(ratios))
    print(f"{name}: {idx.n_files} files, {chosen} in chosen series ({100 * chosen / max(idx.n_files, 1):.0f} %), "
          f"{len(idx.studies)} studies; the same index from both paths")
    print(f"  index with the fast key reader: {f:.2f} s ({idx.n_files / f:.0f} files/s, median of {repeat})")
    print(f"  index with pydicom alone:       {s:.2f} s ({idx.n_files / s:.0f} files/s, median of {repeat})")
    print(f"  ratio pydicom/fast: {ratio:.2f} (median of {', '.join(f'{x:.2f}' for x in ratios)})")
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", type=Path, help="an existing spinedx synth cohort.csv (default: make one)")
    ap.add_argument("--n-patients", type=int, default=12, help="patients of the cohort made when --cohort is not given")
    ap.add_argument("--clinical-patients", type=int, default=12, help="studies of the clinical-like tree")
    ap.add_argument("--repeat", type=int, default=3, help="timed pairs per tree (the ratio is their median)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="spinedx-bench-header-") as tmp:
        tmp_path = Path(tmp)
        if args.cohort is None:
            t0 = time.perf_counter()
            manifest = make_cohort(tmp_path / "cohort", args.n_patients, args.seed)
            print(f"made a {args.n_patients}-patient cohort in {time.perf_counter() - t0:.1f} s: {manifest}")
        else:
            manifest = args.cohort
        dicom_root = manifest.parent / "dicom"
        clinical = tmp_path / "clinical"
        t0 = time.perf_counter()
        n = make_clinical_tree(dicom_root, clinical, args.clinical_patients)
        print(f"made a clinical-like tree of {args.clinical_patients} studies, {n} DICOM files, in "
              f"{time.perf_counter() - t0:.1f} s")
        files = sorted(str(p) for p in clinical.rglob("*.dcm"))
        for f in files:  # warm the OS cache, untimed
            Path(f).read_bytes()
        fast, slow = per_file(files[:2000], args.repeat)
        print(f"grouping keys per file: fast reader {1e3 * fast:.3f} ms, pydicom dcmread(stop_before_pixels, "
              f"specific_tags) {1e3 * slow:.3f} ms: {slow / fast:.1f}x")
        compare(f"synthetic cohort ({dicom_root})", dicom_root, args.repeat)
        ratio = compare("clinical-like tree", clinical, args.repeat)
    print(f"RESULT header_index_ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
