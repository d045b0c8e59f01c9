"""Render the synthetic cohort: DICOM series, manifest ``cohort.csv`` and ``synth.json``."""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS
from spinedx.fsutil import TMP_MARK, atomic_dir, remove_stale_tmp
from spinedx.synth.dicomwriter import write_mask, write_series
from spinedx.synth.phantom import DIFFICULTY, Anatomy, sample_anatomy
from spinedx.synth.scanner import (
    COL_DIR,
    FOV_MM,
    RECON,
    ROW_DIR,
    SLICE_MM,
    T1,
    T2,
    Geometry,
    Motion,
    acquire,
    lesion_mask,
)
from spinedx.synth.seeds import tuning_record
from spinedx.synth.study import (
    STREAM_ACQ,
    assign_labels,
    check_counts,
    patient_id,
    patient_rng,
    sample_patient,
    truth_row,
)

#: Margin (mm) around the fractured body in the manifest box.
BOX_MARGIN_MM = 4.0

#: The manifest's columns, in order (the truth extras follow them). ``lesion_mask`` is the lesion mask
#: in the T2 series' geometry; ``synthetic`` = 1 marks every row as a simulated patient.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id", "label", "t1", "t2", "lesion_slices", "box", "lesion_mask", "synthetic", *FEATURE_COLUMNS,
    *READER_COLUMNS,
)

#: Where a patient's lesion mask goes, relative to the cohort folder.
MASK_NAME = "lesion_mask.nii.gz"


def _geometry(rng: np.random.Generator, centre: np.ndarray) -> Geometry:
    """Slice stack planned on the patient: 11-15 sagittal slices, FOV around the spine."""
    n = int(rng.integers(11, 16))
    # the midline falls between slices by a random amount, as in real planning
    x_first = (n - 1) / 2 * SLICE_MM + rng.uniform(-1.5, 1.5)
    y_min = centre[1] - 0.55 * FOV_MM + rng.uniform(-10, 10)
    z_max = FOV_MM / 2 + rng.uniform(-15, 15)
    return Geometry(np.array([x_first, y_min, z_max]), n)


def _box_from_mask(mask: np.ndarray, matrix: tuple[int, int]) -> tuple[int, int, int, int]:
    """Square half-open box (x0, y0, x1, y1) on the 512 x 512 T2 around a mask on the acquisition grid."""
    rows, cols = np.nonzero(mask.any(axis=0))
    fr, fc = RECON / matrix[0], RECON / matrix[1]
    margin = BOX_MARGIN_MM / (FOV_MM / RECON)
    c0, c1 = (cols.min() - 0.5) * fc - margin, (cols.max() + 0.5) * fc + margin
    r0, r1 = (rows.min() - 0.5) * fr - margin, (rows.max() + 0.5) * fr + margin
    side = math.ceil(max(c1 - c0, r1 - r0))
    x0 = round((c0 + c1) / 2 - side / 2)
    y0 = round((r0 + r1) / 2 - side / 2)
    x0 = min(max(x0, 0), RECON - side)
    y0 = min(max(y0, 0), RECON - side)
    return x0, y0, x0 + side, y0 + side


def plan_patient(
    seed: int, index: int, label: int, difficulty: str
) -> tuple[dict[str, Any], Anatomy, Geometry, Motion, np.random.Generator]:
    """Everything drawn for one patient before rendering: truth, anatomy, slice geometry, the
    T1 series' motion, and the acquisition generator (positioned for the noise draws)."""
    truth = sample_patient(seed, index, label)
    anat = sample_anatomy(seed, index, truth, difficulty)
    rng = patient_rng(seed, index, STREAM_ACQ)
    geom = _geometry(rng, anat.lesion_centre())
    # the patient moves about the middle of the field of view between the T2 and T1 series
    motion = Motion.sample(rng, np.array([0.0, geom.origin[1] + FOV_MM / 2, geom.origin[2] - FOV_MM / 2]))
    return truth, anat, geom, motion, rng


def render_patient(out_dir: str | Path, seed: int, index: int, label: int, difficulty: str) -> dict[str, Any]:
    """Render one patient's T1W and T2W series and return its manifest row plus truth extras.

    The extras (keys starting with ``_``) go to ``synth.json``: the fractured body's centre in
    the T2 frame and where it is during the T1 series (after the simulated motion), the motion.
    """
    out_dir = Path(out_dir)
    truth, anat, geom, motion, rng = plan_patient(seed, index, label, difficulty)
    noise = DIFFICULTY[difficulty]["noise"] * float(rng.uniform(0.85, 1.15))
    t2, masks = acquire(anat, geom, T2, Motion.identity(), noise, rng, want_mask=True)
    t1, _ = acquire(anat, geom, T1, motion, noise, rng)
    assert masks is not None
    mask, lesion_acq = masks
    per_slice = mask.sum(axis=(1, 2))
    if per_slice.max() == 0:
        raise SpinedxError("the fractured vertebra fell outside the field of view", where=patient_id(index))
    # widest slice (ties: the one nearest the body's centre); off the edges so both neighbours exist
    centroid = float(np.dot(per_slice, np.arange(len(per_slice))) / per_slice.sum())
    widest = np.flatnonzero(per_slice >= 0.98 * per_slice.max())
    k = int(np.clip(widest[np.argmin(np.abs(widest - centroid))], 1, geom.n_slices - 2))
    box = _box_from_mask(mask, T2.matrix)
    pts = geom.acquisition_points(T2.matrix)[mask].astype(np.float64)
    centre_t2 = pts.mean(axis=0)
    centre_t1 = motion.forward(centre_t2[None, :])[0]

    pid = patient_id(index)
    positions = [geom.position(i) for i in range(geom.n_slices)]
    info = {"id": pid, "sex": truth["sex"], "age": str(truth["age"])}
    rel_t1, rel_t2, rel_mask = f"dicom/{pid}/T1", f"dicom/{pid}/T2", f"dicom/{pid}/{MASK_NAME}"
    write_series(out_dir / rel_t1, t1, T1, positions, ROW_DIR, COL_DIR, info, seed)
    write_series(out_dir / rel_t2, t2, T2, positions, ROW_DIR, COL_DIR, info, seed)
    lesion = lesion_mask(anat, geom, lesion_acq)
    write_mask(out_dir / rel_mask, lesion, geom.affine())

    row = truth_row(index, truth)
    row.update({
        "t1": rel_t1, "t2": rel_t2, "lesion_slices": f"{k - 1};{k};{k + 1}", "box": ",".join(map(str, box)),
        "lesion_mask": rel_mask, "synthetic": 1, "_lesion_voxels": int(lesion.sum()),
        "_reader_evidence": {r: round(v, 4) for r, v in truth["evidence"].items()},
        "_centre_t2": [round(float(v), 3) for v in centre_t2], "_centre_t1": [round(float(v), 3) for v in centre_t1],
        "_motion_deg": [round(float(v), 3) for v in motion.angles_deg],
        "_motion_mm": [round(float(v), 3) for v in motion.shift], "_n_slices": geom.n_slices,
    })
    return row


def _render_job(args: tuple[str, int, int, int, str]) -> tuple[str, Any]:
    """Render one patient in a worker: ``("ok", row)`` or ``("error", (message, where))``.

    SpinedxError is sent back as its parts: an exception with keyword arguments does not survive pickling.
    """
    try:
        return "ok", render_patient(*args)
    except SpinedxError as exc:
        return "error", (exc.message, exc.where)


def _worker_init() -> None:
    """Workers leave Ctrl-C to the main process, which terminates them (no traceback from each worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _render_all(jobs: list[tuple[str, int, int, int, str]], workers: int) -> Iterator[dict[str, Any]]:
    """Rows of the rendered patients, in job order; on any exception (Ctrl-C and SIGTERM included) the worker
    processes are terminated and joined before the exception goes on, so none is left behind."""
    if workers == 1 or len(jobs) == 1:
        results: Iterator[tuple[str, Any]] = (_render_job(job) for job in jobs)
        pool = None
    else:
        import multiprocessing

        # spawn: a fresh interpreter per worker (no fork of the main process's threads, e.g. the progress bar)
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_worker_init)
        results = pool.imap(_render_job, jobs, chunksize=1)
    try:
        for status, value in results:
            if status == "error":
                raise SpinedxError(value[0], where=value[1])
            yield value
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if pool is not None:
            pool.terminate()
            pool.join()
        raise


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, or a folder with content unless ``overwrite`` (issue 8 item 9)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SpinedxError("exists and is not a folder; choose another output folder", where=str(out_dir))
    if out_dir.is_dir() and not overwrite:
        content = sorted(p.name for p in out_dir.iterdir())
        if content:
            shown = ", ".join(content[:3]) + (", ..." if len(content) > 3 else "")
            raise SpinedxError(
                f"the output folder is not empty ({shown}); choose an empty or new folder, or pass --overwrite "
                "(overwrite=True) to replace its whole content", where=str(out_dir),
            )


def generate_cohort(
    out_dir: str | Path,
    n_patients: int = 190,
    n_malignant: int = 50,
    seed: int = 0,
    difficulty: str = "medium",
    preview: bool = False,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic cohort of sagittal T1W/T2W DICOM studies and its manifest.

    Reproduces the paper's design (Yeh et al. 2022: 190 patients, 50 malignant; 1.5 T sagittal
    SE T1W 400/15 ms, 320 x 192 and FSE T2W 3200/90 ms, 448 x 224, FOV 30 cm, 4 mm, reconstructed
    to 512 x 512). Same seed, same bytes (DICOM, lesion masks and ``cohort.csv``), whatever ``workers``.

    The cohort is written into a temporary sibling folder that replaces ``out_dir`` only when
    everything is written (:func:`spinedx.fsutil.atomic_dir`): an error or an interrupt leaves an
    earlier cohort in ``out_dir`` byte-identical and no temporary folder.

    Args:
        out_dir: output folder; ``cohort.csv``, ``synth.json`` and ``dicom/<patient_id>/{T1,T2}/IM0001.dcm ...``,
            ``dicom/<patient_id>/lesion_mask.nii.gz`` go there.
        n_patients: number of patients.
        n_malignant: how many of them have a malignant fracture.
        seed: cohort seed (see :mod:`spinedx.synth.seeds` for the seeds used for tuning).
        difficulty: ``easy``, ``medium`` or ``hard`` (see :data:`spinedx.synth.phantom.DIFFICULTY`).
        preview: also write ``preview.png`` (contact sheet of lesion crops).
        workers: processes rendering patients in parallel.
        progress: show a rich progress bar.
        overwrite: replace the content of a non-empty ``out_dir`` (stale patient folders included);
            without it such a folder is refused.

    Returns:
        Path of ``out_dir/cohort.csv``.

    Raises:
        SpinedxError: impossible counts, unknown difficulty, ``workers`` < 1, ``out_dir`` a file or
            (without ``overwrite``) a folder with content.
    """
    check_counts(n_patients, n_malignant, difficulty)
    if workers < 1:
        raise SpinedxError(f"--workers must be at least 1, got {workers}", where="synth")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    if out_dir.parent.is_dir():  # temporaries of a synth killed outright (SIGKILL, power loss); not this process's
        remove_stale_tmp(out_dir.parent, f".{out_dir.name}{TMP_MARK}", keep_own=True)
    labels = assign_labels(n_patients, n_malignant, seed)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with atomic_dir(out_dir) as tmp:
        jobs = [(str(tmp), seed, i, int(labels[i]), difficulty) for i in range(n_patients)]
        rows: list[dict[str, Any]] = []
        with Progress(
            TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress,
            transient=False,
        ) as bar:
            task = bar.add_task("patients", total=n_patients)
            for row in _render_all(jobs, workers):
                rows.append(row)
                bar.advance(task)

        df = pd.DataFrame(rows)
        extras = [c for c in df.columns if c.startswith("_")]
        cols = list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS and c not in extras]
        df[cols].to_csv(tmp / "cohort.csv", index=False, lineterminator="\n")
        _write_sidecar(tmp, df, extras, n_patients, n_malignant, seed, difficulty)
        if preview:
            from spinedx.synth.preview import contact_sheet

            contact_sheet(tmp, tmp / "preview.png")
    return out_dir / "cohort.csv"


def _write_sidecar(
    out_dir: Path, df: pd.DataFrame, extras: list[str], n_patients: int, n_malignant: int, seed: int, difficulty: str
) -> None:
    """``synth.json``: options, per-patient geometry truth and provenance."""
    from spinedx.provenance import provenance
    from spinedx.synth.prevalence import PREVALENCE

    doc = {
        "config": {
            "n_patients": n_patients, "n_malignant": n_malignant, "seed": seed, "difficulty": difficulty,
            "difficulty_params": DIFFICULTY[difficulty], "box_margin_mm": BOX_MARGIN_MM,
        },
        "synthetic": True,
        "note": "No real patient: every image is an analytic phantom and every reader call is simulated "
                "(spinedx.synth).",
        **tuning_record(seed),
        "prevalence": {k: {"benign": v.benign, "malignant": v.malignant, "source": v.source}
                       for k, v in PREVALENCE.items()},
        "patients": {
            r["patient_id"]: {c.lstrip("_"): r[c] for c in extras} for r in df.to_dict(orient="records")
        },
        "provenance": provenance(),
    }
    (out_dir / "synth.json").write_text(json.dumps(doc, indent=1, default=_json_default, allow_nan=False) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
