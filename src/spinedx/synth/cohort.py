"""Render the synthetic cohort: DICOM series, manifest ``cohort.csv`` and ``synth.json``."""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS
from spinedx.synth.dicomwriter import write_series
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
)
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

MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id", "label", "t1", "t2", "lesion_slices", "box", *FEATURE_COLUMNS, *READER_COLUMNS,
)


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
    t2, mask = acquire(anat, geom, T2, Motion.identity(), noise, rng, want_mask=True)
    t1, _ = acquire(anat, geom, T1, motion, noise, rng)
    assert mask is not None
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
    rel_t1, rel_t2 = f"dicom/{pid}/T1", f"dicom/{pid}/T2"
    write_series(out_dir / rel_t1, t1, T1, positions, ROW_DIR, COL_DIR, info, seed)
    write_series(out_dir / rel_t2, t2, T2, positions, ROW_DIR, COL_DIR, info, seed)

    row = truth_row(index, truth)
    row.update({
        "t1": rel_t1, "t2": rel_t2, "lesion_slices": f"{k - 1};{k};{k + 1}", "box": ",".join(map(str, box)),
        "_centre_t2": [round(float(v), 3) for v in centre_t2], "_centre_t1": [round(float(v), 3) for v in centre_t1],
        "_motion_deg": [round(float(v), 3) for v in motion.angles_deg],
        "_motion_mm": [round(float(v), 3) for v in motion.shift], "_n_slices": geom.n_slices,
    })
    return row


def _render_star(args: tuple[str, int, int, int, str]) -> dict[str, Any]:
    return render_patient(*args)


def generate_cohort(
    out_dir: str | Path,
    n_patients: int = 190,
    n_malignant: int = 50,
    seed: int = 0,
    difficulty: str = "medium",
    preview: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write a synthetic cohort of sagittal T1W/T2W DICOM studies and its manifest.

    Reproduces the paper's design (Yeh et al. 2022: 190 patients, 50 malignant; 1.5 T sagittal
    SE T1W 400/15 ms, 320 x 192 and FSE T2W 3200/90 ms, 448 x 224, FOV 30 cm, 4 mm, reconstructed
    to 512 x 512). Same seed, same bytes (DICOM and ``cohort.csv``), whatever ``workers``.

    Args:
        out_dir: output folder (created); ``dicom/<patient_id>/{T1,T2}/IM0001.dcm ...`` go there.
        n_patients: number of patients.
        n_malignant: how many of them have a malignant fracture.
        seed: cohort seed.
        difficulty: ``easy``, ``medium`` or ``hard`` (see :data:`spinedx.synth.phantom.DIFFICULTY`).
        preview: also write ``preview.png`` (contact sheet of lesion crops).
        workers: processes rendering patients in parallel.
        progress: show a rich progress bar.

    Returns:
        Path of ``out_dir/cohort.csv``.
    """
    check_counts(n_patients, n_malignant, difficulty)
    if workers < 1:
        raise SpinedxError(f"--workers must be at least 1, got {workers}", where="synth")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpinedxError("exists and is not a folder; choose another output folder", where=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = assign_labels(n_patients, n_malignant, seed)
    jobs = [(str(out_dir), seed, i, int(labels[i]), difficulty) for i in range(n_patients)]
    rows: list[dict[str, Any]] = []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task("patients", total=n_patients)
        if workers == 1 or n_patients == 1:
            for job in jobs:
                rows.append(_render_star(job))
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, n_patients)) as pool:
                for row in pool.map(_render_star, jobs, chunksize=1):
                    rows.append(row)
                    bar.advance(task)

    df = pd.DataFrame(rows)
    extras = [c for c in df.columns if c.startswith("_")]
    cols = list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS and c not in extras]
    manifest = out_dir / "cohort.csv"
    df[cols].to_csv(manifest, index=False, lineterminator="\n")
    _write_sidecar(out_dir, df, extras, n_patients, n_malignant, seed, difficulty)
    if preview:
        from spinedx.synth.preview import contact_sheet

        contact_sheet(out_dir, out_dir / "preview.png")
    return manifest


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
        "synthetic": "No real patient: every image is an analytic phantom (spinedx.synth).",
        "prevalence": {k: {"benign": v.benign, "malignant": v.malignant, "source": v.source} for k, v in PREVALENCE.items()},
        "patients": {
            r["patient_id"]: {c.lstrip("_"): r[c] for c in extras} for r in df.to_dict(orient="records")
        },
        "provenance": provenance(),
    }
    (out_dir / "synth.json").write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
