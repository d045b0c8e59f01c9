"""Extraction of 6-channel lesion patches for one case or a whole cohort (``spinedx extract``).

Output files (see docs/architecture.md): ``patches.npz`` with ``x`` (N, 6, 64, 64) float32, ``patient_id``
(N,) unicode, ``slice_index`` (N,) int64, ``label`` (N,) int64 (1 = malignant), loadable with
``allow_pickle=False``; and ``extract.json`` with the configuration, channel order, versions, per-patient
registration results and the patients skipped with the reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx.errors import PreprocessError, SpinedxError
from spinedx.io.image import Image
from spinedx.preprocess.config import CHANNEL_NAMES, ExtractConfig
from spinedx.preprocess.mapping import Box, check_overlap, crop_grid, validate_annotation
from spinedx.preprocess.patches import raw_sample, zscore
from spinedx.preprocess.registration import RegistrationRecord, register_rigid

if TYPE_CHECKING:
    from spinedx.cohort import CaseRecord

LABEL_NAMES = {0: "benign", 1: "malignant"}


@dataclass
class CasePatches:
    """The samples of one patient: one per lesion slice.

    Attributes:
        patient_id: the patient.
        label: 0 benign, 1 malignant, None when unknown (a new case for ``spinedx predict``).
        x: (n, 6, P, P) float32 z-scored patches, channels in :data:`CHANNEL_NAMES` order.
        slice_index: (n,) int64 T2 lesion slice of each sample.
        registration: the T2 -> T1 registration record.
        edge: per sample, the neighbours replaced by the lesion slice at the volume's edge (``"s-1"``/``"s+1"``).
        crop: the square crop (centre in T2 pixels, side in mm).
        constant_channels: number of channels that were constant and were set to zero.
    """

    patient_id: str
    label: int | None
    x: np.ndarray
    slice_index: np.ndarray
    registration: RegistrationRecord
    edge: list[list[str]] = field(default_factory=list)
    crop: dict[str, Any] = field(default_factory=dict)
    constant_channels: int = 0
    images: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description for ``extract.json`` (without the pixel data)."""
        return {
            "patient_id": self.patient_id,
            "label": None if self.label is None else LABEL_NAMES[self.label],
            "n_samples": len(self.slice_index),
            "slice_index": [int(s) for s in self.slice_index],
            "edge_replicated": [
                {"slice": int(s), "replaced": e} for s, e in zip(self.slice_index, self.edge) if e
            ],
            "crop": self.crop,
            "constant_channels": self.constant_channels,
            "registration": self.registration.to_dict(),
            "images": self.images,
        }


@dataclass
class ExtractResult:
    """What :func:`extract_cohort` wrote.

    Attributes:
        patches_path: ``out_dir/patches.npz``.
        json_path: ``out_dir/extract.json``.
        ok: patients extracted, in manifest order.
        failed: ``(patient_id, one-line reason)`` of the patients skipped.
        samples_per_class: number of samples per label name.
        seconds: wall time.
    """

    patches_path: Path
    json_path: Path
    ok: list[str]
    failed: list[tuple[str, str]]
    samples_per_class: dict[str, int]
    seconds: float

    @property
    def n_samples(self) -> int:
        return sum(self.samples_per_class.values())


def _image_info(img: Image) -> dict[str, Any]:
    return {
        "source": img.source,
        "shape_zyx": list(img.shape),
        "spacing_xyz_mm": [round(float(s), 4) for s in img.spacing],
        "origin_mm": [round(float(o), 3) for o in img.origin],
    }


def extract_patches(
    t1: Image,
    t2: Image,
    lesion_slices: tuple[int, ...] | list[int],
    box: Box,
    config: ExtractConfig | None = None,
    *,
    patient_id: str = "case",
    label: int | None = None,
) -> CasePatches:
    """Patches of one case from its two images (the core of :func:`extract_case`).

    Maps the T2 annotation onto T1 through both images' physical geometry, refines the mapping with the
    bounded rigid registration when ``config.register``, then samples the square crop of the box on the T2
    planes s-1, s, s+1 and T1 at the same physical points, resized to ``patch_size`` and z-scored
    (Yeh et al. 2022, "Deep learning architecture").

    Args:
        t1: the T1-weighted image.
        t2: the T2-weighted image on which the annotation was drawn.
        lesion_slices: 0-based T2 slice indices of the lesion; each becomes one sample.
        box: ``x0,y0,x1,y1`` half-open pixel box on T2.
        config: extraction settings (defaults: :class:`ExtractConfig`).
        patient_id: used in error messages and the result.
        label: 0/1 or None.

    Raises:
        PreprocessError: box outside the image, lesion slice out of range, fewer than 3 T2 slices, series that
            do not overlap, non-finite voxels in the patch.
    """
    config = config or ExtractConfig()
    slices = tuple(dict.fromkeys(int(s) for s in lesion_slices))
    box = tuple(int(v) for v in box)  # type: ignore[assignment]
    validate_annotation(t2, slices, box, where=patient_id)
    check_overlap(t1, t2, box, slices, where=patient_id)

    record = register_rigid(t1, t2, box, slices, config) if config.register else RegistrationRecord()
    grid = crop_grid(t2, box, config.patch_size, config.margin)
    samples, edges = [], []
    for s in slices:
        sample, edge = raw_sample(t1, t2, grid, s, record.transform)
        samples.append(sample)
        edges.append(edge)
    raw = np.stack(samples)
    if not np.isfinite(raw).all():
        bad = [CHANNEL_NAMES[c] for c in range(6) if not np.isfinite(raw[:, c]).all()]
        raise PreprocessError(
            f"non-finite (NaN/inf) voxels inside the lesion crop in channel(s) {bad}; check the image files",
            where=patient_id,
        )
    x, n_const = zscore(raw, config.zscore, config.min_std)
    return CasePatches(
        patient_id=patient_id,
        label=label,
        x=x,
        slice_index=np.asarray(slices, dtype=np.int64),
        registration=record,
        edge=edges,
        crop={"center_px": [round(c, 3) for c in grid.center], "side_mm": round(grid.side_mm, 3)},
        constant_channels=n_const,
        images={"t1": _image_info(t1), "t2": _image_info(t2)},
    )


def extract_case(case: CaseRecord, config: ExtractConfig | None = None) -> CasePatches:
    """Read a manifest case's T1 and T2 series and extract its patches (see :func:`extract_patches`).

    Args:
        case: one manifest row (:class:`spinedx.cohort.CaseRecord`).
        config: extraction settings.

    Raises:
        spinedx.errors.ImageReadError: a series cannot be read.
        PreprocessError: see :func:`extract_patches`.
    """
    from spinedx.features import LABELS
    from spinedx.io import read_image

    pid = case.patient_id
    missing = [name for name, v in (("t1", case.t1), ("t2", case.t2)) if v is None]
    if missing or not case.lesion_slices:
        missing += [] if case.lesion_slices else ["lesion_slices"]
        raise PreprocessError(f"the manifest row has no {', '.join(missing)}; fill in these columns", where=pid)
    t2 = read_image(case.t2, case.t2_series_uid, where=f"{pid} t2")
    t1 = read_image(case.t1, case.t1_series_uid, where=f"{pid} t1")
    label = LABELS.get(case.label)
    return extract_patches(t1, t2, case.lesion_slices, case.box, config, patient_id=pid, label=label)


def _init_worker() -> None:
    """Each worker process uses one thread: parallelism comes from the processes (no oversubscription)."""
    import SimpleITK as sitk

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = "1"
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _run_one(case: CaseRecord, config: ExtractConfig) -> tuple[str, CasePatches | None, str | None]:
    """Extract one case; the error comes back as a line (exceptions with keyword args do not pickle well)."""
    try:
        return case.patient_id, extract_case(case, config), None
    except SpinedxError as exc:
        msg = exc.one_line()
        return case.patient_id, None, msg if case.patient_id in msg else f"{case.patient_id}: {msg}"
    except Exception as exc:  # noqa: BLE001 - one patient's unexpected failure must not stop the cohort
        text = " ".join(str(exc).split())
        return case.patient_id, None, f"{case.patient_id}: unexpected {type(exc).__name__}: {text}"


def _iter_results(cases: list[CaseRecord], config: ExtractConfig,
                  workers: int) -> Iterator[tuple[str, CasePatches | None, str | None]]:
    if workers <= 1 or len(cases) <= 1:
        for case in cases:
            yield _run_one(case, config)
        return
    # spawn: a fresh interpreter per worker, safe with SimpleITK's thread pool (fork after threads is not).
    with ProcessPoolExecutor(max_workers=min(workers, len(cases)), mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = [pool.submit(_run_one, case, config) for case in cases]
        for fut in as_completed(futures):
            yield fut.result()


def write_patches(path: Path, patches: list[CasePatches], patch_size: int) -> None:
    """Write ``patches.npz`` (plain arrays only, so it loads with ``allow_pickle=False``)."""
    n = sum(len(p.slice_index) for p in patches)
    x = np.concatenate([p.x for p in patches]) if patches else np.zeros((0, 6, patch_size, patch_size), np.float32)
    pid = np.array([p.patient_id for p in patches for _ in p.slice_index], dtype=str)
    if n == 0:
        pid = np.zeros(0, dtype="<U1")
    slice_index = (np.concatenate([p.slice_index for p in patches]).astype(np.int64) if patches
                   else np.zeros(0, np.int64))
    label = np.array([-1 if p.label is None else p.label for p in patches for _ in p.slice_index], dtype=np.int64)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, x=x.astype(np.float32, copy=False), patient_id=pid, slice_index=slice_index, label=label)
    os.replace(tmp, path)


def extract_cohort(
    manifest_path: str | Path,
    out_dir: str | Path,
    config: ExtractConfig | None = None,
    workers: int = 1,
    progress: bool = True,
) -> ExtractResult:
    """Extract the patches of every patient of a cohort manifest into ``out_dir``.

    A patient that fails (unreadable series, box outside the image, series that do not overlap, ...) is
    recorded in ``extract.json`` under ``skipped`` and the others go on.

    Args:
        manifest_path: ``cohort.csv``.
        out_dir: output folder (created).
        config: extraction settings.
        workers: number of processes (1 = in this process).
        progress: show a rich progress bar over patients.

    Raises:
        spinedx.errors.ManifestError: the manifest itself is invalid (nothing is extracted).
    """
    from spinedx.cohort import load_manifest
    from spinedx.provenance import provenance, sha256_file

    start = time.perf_counter()
    config = config or ExtractConfig()
    manifest_path = Path(manifest_path)
    out = Path(out_dir)
    # Missing image files are per-patient failures, reported with the others, not a reason to stop.
    cohort = load_manifest(manifest_path, require_images=False)
    cases = list(cohort.cases)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, CasePatches] = {}
    errors: dict[str, str] = {}
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[pid]}"), transient=True)
    else:
        bar = None
    with bar if bar is not None else nullcontext():
        task = bar.add_task("extract", total=len(cases), pid="") if bar is not None else None
        for pid, patches, err in _iter_results(cases, config, workers):
            if patches is not None:
                results[pid] = patches
            else:
                errors[pid] = err or f"{pid}: failed"
            if bar is not None:
                bar.update(task, advance=1, pid=pid)

    ordered = [results[c.patient_id] for c in cases if c.patient_id in results]
    failed = [(c.patient_id, errors[c.patient_id]) for c in cases if c.patient_id in errors]
    patches_path = out / "patches.npz"
    write_patches(patches_path, ordered, config.patch_size)

    per_class = {name: 0 for name in LABEL_NAMES.values()}
    for p in ordered:
        if p.label is not None:
            per_class[LABEL_NAMES[p.label]] += len(p.slice_index)
    seconds = time.perf_counter() - start
    reg_seconds = [p.registration.seconds for p in ordered if p.registration.performed]
    doc = {
        "provenance": provenance(),
        "manifest": {"path": str(manifest_path.resolve()), "sha256": sha256_file(manifest_path)},
        "config": config.to_dict(),
        "channel_names": list(CHANNEL_NAMES),
        "arrays": {"x": "float32 (N, 6, P, P)", "patient_id": "str (N,)", "slice_index": "int64 (N,)",
                   "label": "int64 (N,), 1 = malignant, 0 = benign"},
        "counts": {"patients": len(cases), "ok": len(ordered), "failed": len(failed),
                   "samples": int(sum(per_class.values())), "samples_per_class": per_class},
        "registration_summary": {
            "performed": len(reg_seconds),
            "accepted": sum(p.registration.accepted for p in ordered),
            "mean_seconds": float(np.mean(reg_seconds)) if reg_seconds else 0.0,
        },
        "seconds": round(seconds, 3),
        "workers": workers,
        "patients": [p.summary() for p in ordered],
        "skipped": [{"patient_id": pid, "reason": msg} for pid, msg in failed],
    }
    json_path = out / "extract.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return ExtractResult(patches_path, json_path, [p.patient_id for p in ordered], failed, per_class, seconds)
