"""Extraction of 6-channel lesion patches for one case or a whole cohort (``spinedx extract``).

Output files (see docs/architecture.md): ``patches.npz`` with ``x`` (N, 6, 64, 64) float32, ``patient_id``
(N,) unicode, ``slice_index`` (N,) int64, ``label`` (N,) int64 (1 = malignant), ``synthetic`` (0-d bool) and,
when the manifest has a ``lesion_mask`` column, ``mask`` (N, 64, 64) float32, loadable with
``allow_pickle=False``; and ``extract.json`` with the configuration, channel order, versions, per-patient
T1/T2 pair checks and registration results, the patients skipped with the reason, and the sha256 of
``patches.npz``.

Outputs are complete or untouched: both files are written to temporary siblings and renamed over the old
ones only when the run succeeded for at least one patient (the two renames are not interrupted by Ctrl-C or
SIGTERM); a failed, interrupted or all-failed run leaves earlier files byte-identical. Worker processes are
killed on an interrupt.

Outputs never shrink or vanish without the user saying so (issue 18): a folder that already holds patches is
rerun only for the same job (the same manifest, by path and sha256, and the same settings) unless
``overwrite``; and a run in which patients failed never replaces a result that holds any of those patients,
``overwrite`` or not (:class:`ResultKept`: nothing is written, the earlier result stays as it was).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx.common import LABEL_NAMES
from spinedx.errors import PreprocessError, SpinedxError
from spinedx.fsutil import check_parent, remove_stale_tmp, stop_pool
from spinedx.io.image import Image
from spinedx.patchset import write_patches
from spinedx.preprocess.config import CHANNEL_NAMES, ExtractConfig
from spinedx.preprocess.mapping import Box, check_overlap, crop_grid, sample_plane, validate_annotation
from spinedx.preprocess.pairing import PairCheck, check_pair
from spinedx.preprocess.patches import raw_sample, zscore
from spinedx.preprocess.registration import RegistrationRecord, register_rigid

if TYPE_CHECKING:
    from spinedx.cohort import CaseRecord


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
        images: source, shape, spacing, origin and reorientation of T1 and T2.
        pair_check: the T1/T2 belonging check (:class:`spinedx.preprocess.pairing.PairCheck`), None when the
            patches were made from two images directly (:func:`extract_patches`).
        mask: (n, P, P) float32 lesion mask of each lesion slice on the crop grid (values 0..1), or None.
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
    pair_check: PairCheck | None = None
    mask: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description for ``extract.json`` (without the pixel data)."""
        return {
            "patient_id": self.patient_id,
            "label": None if self.label is None else LABEL_NAMES[self.label],
            "n_samples": len(self.slice_index),
            "slice_index": [int(s) for s in self.slice_index],
            "edge_replicated": [
                {"slice": int(s), "replaced": e} for s, e in zip(self.slice_index, self.edge, strict=True) if e
            ],
            "crop": self.crop,
            "constant_channels": self.constant_channels,
            "registration": self.registration.to_dict(),
            "pair_check": None if self.pair_check is None else self.pair_check.to_dict(),
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
        warnings: ``"patient: warning"`` lines (T1/T2 from other studies or frames of reference, pair problems
            accepted with ``pair_check="warn"``).
        synthetic: the cohort is synthetic (every manifest row has ``synthetic`` = 1).
    """

    patches_path: Path
    json_path: Path
    ok: list[str]
    failed: list[tuple[str, str]]
    samples_per_class: dict[str, int]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    synthetic: bool = False
    replaced: str | None = None

    @property
    def n_samples(self) -> int:
        return sum(self.samples_per_class.values())


def _earlier_words(earlier: EarlierResult | None, out: Path) -> str:
    if earlier is None:
        return f"nothing was written ({out} holds no earlier patches)"
    return f"nothing was written: the patches already in {out} ({earlier.describe()}) were left as they were"


class NothingExtracted(PreprocessError):
    """Every patient failed: nothing was written (earlier outputs are kept). ``failed`` lists the reasons."""

    def __init__(self, failed: list[tuple[str, str]], out: Path, *, where: str | None = None,
                 earlier: EarlierResult | None = None) -> None:
        self.failed = failed
        super().__init__(f"all {len(failed)} patient(s) failed, so {_earlier_words(earlier, out)}; fix the problems "
                         "reported for each patient and run again", where=where)


class ResultKept(PreprocessError):
    """Patients failed that the result already in the folder holds: the run was not written, the result was kept.

    A run in which patients failed never replaces a more complete result (``overwrite`` or not). ``failed`` lists
    the failures; ``lost`` the patients of the earlier result among them.
    """

    def __init__(self, failed: list[tuple[str, str]], lost: list[str], n_patients: int, earlier: EarlierResult,
                 out: Path) -> None:
        self.failed, self.lost = failed, lost
        shown = ", ".join(lost[:5]) + (", ..." if len(lost) > 5 else "")
        super().__init__(
            f"{len(failed)} of {n_patients} patient(s) failed, so this run was not written: the patches already here "
            f"({earlier.describe()}) hold {len(lost)} of the failed patients ({shown}) and were kept as they were; "
            "fix the failures and rerun, or choose a new --out folder to keep a partial result", where=str(out))


@dataclass(frozen=True)
class EarlierResult:
    """The patches a folder already holds, as its ``extract.json`` describes them."""

    manifest_path: str
    manifest_sha256: str
    config: dict[str, Any]
    patients: tuple[str, ...]
    samples: int

    def describe(self) -> str:
        return f"{len(self.patients)} patient(s), {self.samples} sample(s)"

    def differences(self, manifest_path: Path, manifest_sha256: str, config: ExtractConfig) -> list[str]:
        """What differs from a new job: ``"manifest: a.csv there, b.csv now"``, ``"patch_size: 64 there, 32 now"``.

        Settings that the earlier ``extract.json`` does not record (added to spinedx since) are not compared.
        """
        out = []
        if self.manifest_path != str(manifest_path.resolve()):
            out.append(f"manifest: {self.manifest_path} there, {manifest_path.resolve()} now")
        elif self.manifest_sha256 != manifest_sha256:
            out.append(f"manifest: {self.manifest_sha256[:12]}... there, {manifest_sha256[:12]}... now (sha256: the "
                       "file was edited since)")
        new = config.to_dict()
        out += [f"{k}: {self.config[k]!r} there, {new[k]!r} now" for k in new if k in self.config
                and self.config[k] != new[k]]
        return out


def _read_earlier(out: Path, overwrite: bool) -> EarlierResult | None:
    """The result already in ``out``, None when there is none; a foreign or damaged one is refused unless
    ``overwrite`` (then None: there is nothing trustworthy to compare with)."""
    npz, js = out / "patches.npz", out / "extract.json"
    if not npz.exists() and not js.exists():
        return None
    problem = None
    if not js.is_file():
        problem = "holds patches.npz without extract.json (not written by spinedx extract?)"
    elif not npz.is_file():
        problem = "holds extract.json without patches.npz"
    else:
        try:
            doc = json.loads(js.read_text(encoding="utf-8"))
            return EarlierResult(
                manifest_path=str(doc["manifest"]["path"]), manifest_sha256=str(doc["manifest"]["sha256"]),
                config=dict(doc["config"]), patients=tuple(str(p["patient_id"]) for p in doc["patients"]),
                samples=int(doc["counts"]["samples"]))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            problem = f"holds an extract.json that cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})"
    if overwrite:
        return None
    raise PreprocessError(f"{problem}; pass --overwrite (overwrite=True) to replace patches.npz and extract.json, "
                          "or choose a new --out folder", where=str(out))


def _image_info(img: Image) -> dict[str, Any]:
    info = {
        "source": img.source,
        "shape_zyx": list(img.shape),
        "spacing_xyz_mm": [round(float(s), 4) for s in img.spacing],
        "origin_mm": [round(float(o), 3) for o in img.origin],
    }
    if "reorientation" in img.meta:
        info["reorientation"] = img.meta["reorientation"]
    return info


def _check_mask(mask: Image, t2: Image, where: str) -> None:
    """The lesion mask must lie on the T2 grid (same shape, affine within 1e-3 mm) and hold only 0 and 1."""
    if mask.shape != t2.shape:
        raise PreprocessError(f"the lesion mask {mask.source} has shape {list(mask.shape)} (slices, rows, columns) but "
                              f"the T2 series {list(t2.shape)}: the mask must be drawn on the T2 series' voxels",
                              where=where)
    # Corners of the grid in mm: the affine may differ by float32 storage only.
    shape_xyz = np.array(t2.shape[::-1], dtype=float) - 1.0
    corners = np.array([[x, y, z] for x in (0, shape_xyz[0]) for y in (0, shape_xyz[1]) for z in (0, shape_xyz[2])])
    off = float(np.abs(mask.index_to_physical(corners) - t2.index_to_physical(corners)).max())
    if off > 1e-3:
        raise PreprocessError(f"the lesion mask {mask.source} is not on the T2 grid: its voxels lie up to {off:.3g} mm "
                              "from the T2 voxels; write the mask with the T2 series' geometry", where=where)
    arr = mask.array
    value_range = mask.meta.get("value_range")
    if mask.meta.get("integer_valued") and value_range and 0.0 <= value_range[0] and value_range[1] <= 1.0:
        return  # whole numbers between 0 and 1 (the reader's range of the stored integers)
    other = (arr != 0) & (arr != 1)  # two comparisons: far cheaper than np.unique on a whole volume
    if other.any():
        examples = np.unique(arr[other][:1000])[:4].tolist()
        raise PreprocessError(f"the lesion mask {mask.source} holds values other than 0 and 1 (e.g. {examples}): a "
                              "mask is 0 (background) and 1 (lesion) only", where=where)


def extract_patches(
    t1: Image,
    t2: Image,
    lesion_slices: tuple[int, ...] | list[int],
    box: Box,
    config: ExtractConfig | None = None,
    *,
    patient_id: str = "case",
    label: int | None = None,
    mask: Image | None = None,
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
        mask: a lesion mask on the T2 grid; its lesion slice is sampled on the crop grid (bilinear, 0..1).

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
    mask_patches = None
    if mask is not None:
        _check_mask(mask, t2, patient_id)
        mask_patches = np.clip(np.stack([sample_plane(mask, s, grid) for s in slices]), 0.0, 1.0).astype(np.float32)
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
        mask=mask_patches,
    )


@dataclass
class CaseImages:
    """A manifest case's series as read and checked by :func:`read_case` (the canonical grid of
    :func:`spinedx.io.read_image`): T1, T2, their pair check and the lesion mask (None without one)."""

    t1: Image
    t2: Image
    pair_check: PairCheck
    mask: Image | None = None


def read_case(case: CaseRecord, config: ExtractConfig | None = None, *,
              allow_modality: Sequence[str] = ()) -> CaseImages:
    """Read a manifest case's T1 and T2 series (and lesion mask) and check they belong together.

    The first half of :func:`extract_case`, for a caller that uses the images again (``spinedx predict`` writes
    its DICOM results on the T2 it read here, without reading the series twice).

    Raises:
        spinedx.errors.ImageReadError: a series cannot be read (another modality than MR unless allowed).
        PreprocessError: the manifest row has no T1, T2 or lesion slices; the pair check fails.
    """
    from spinedx.io import ImageReadWarning, read_image

    pid = case.patient_id
    missing = [name for name, v in (("t1", case.t1), ("t2", case.t2)) if v is None]
    if missing or not case.lesion_slices:
        missing += [] if case.lesion_slices else ["lesion_slices"]
        raise PreprocessError(f"the manifest row has no {', '.join(missing)}; fill in these columns", where=pid)
    config = config or ExtractConfig()
    assert case.t1 is not None and case.t2 is not None  # checked above
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageReadWarning)  # kept in meta["warnings"], reported with the patient
        t2 = read_image(case.t2, case.t2_series_uid, where=f"{pid} t2", allow_modality=allow_modality)
        t1 = read_image(case.t1, case.t1_series_uid, where=f"{pid} t1", allow_modality=allow_modality)
    pair = check_pair(t1, t2, mode=config.pair_check, patient_id=pid)
    pair.warnings += [f"{role}: {w}" for role, img in (("t1", t1), ("t2", t2)) for w in img.meta.get("warnings", [])]
    mask_path = getattr(case, "lesion_mask", None)
    mask = read_image(mask_path, where=f"{pid} lesion_mask") if mask_path is not None else None
    return CaseImages(t1, t2, pair, mask)


def extract_case(case: CaseRecord, config: ExtractConfig | None = None, *,
                 allow_modality: Sequence[str] = (), images: CaseImages | None = None) -> CasePatches:
    """Read a manifest case's T1 and T2 series, check they belong together, and extract its patches.

    The pair check (:func:`spinedx.preprocess.pairing.check_pair`, mode ``config.pair_check``) refuses a T1
    that is the T2 series, another patient's series, or a swapped T1/T2; ``spinedx predict`` goes through
    here too. A ``lesion_mask`` of the case is read on the canonical grid and sampled with the patches.

    Args:
        case: one manifest row (:class:`spinedx.cohort.CaseRecord`).
        config: extraction settings.
        allow_modality: DICOM image modalities read besides MR (``--allow-modality``; what the reader accepted
            this way, and pixel data longer than its header, are recorded in the pair check's warnings).
        images: the case's series already read by :func:`read_case` (with the same ``config``); None reads them.

    Raises:
        spinedx.errors.ImageReadError: a series cannot be read (another modality than MR unless allowed).
        PreprocessError: the pair check fails, or see :func:`extract_patches`.
    """
    from spinedx.features import LABELS

    config = config or ExtractConfig()
    if images is None:
        images = read_case(case, config, allow_modality=allow_modality)
    label = LABELS.get(case.label)
    cp = extract_patches(images.t1, images.t2, case.lesion_slices, case.box, config, patient_id=case.patient_id,
                         label=label, mask=images.mask)
    cp.pair_check = images.pair_check
    return cp


def _init_worker() -> None:
    """Each worker uses one thread (parallelism comes from the processes) and leaves Ctrl-C to the parent.

    A terminal's Ctrl-C reaches every process of the group; the parent stops the pool and kills the workers,
    so a worker ignoring SIGINT neither prints its own traceback nor dies half-way through a result.
    """
    import SimpleITK as sitk

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = "1"
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _run_one(case: CaseRecord, config: ExtractConfig,
             allow_modality: Sequence[str] = ()) -> tuple[str, CasePatches | None, str | None]:
    """Extract one case; the error comes back as a line (exceptions with keyword args do not pickle well).

    Only ``Exception`` is caught: ``KeyboardInterrupt`` and :class:`spinedx.fsutil.Terminated` stop the run.
    """
    try:
        return case.patient_id, extract_case(case, config, allow_modality=allow_modality), None
    except SpinedxError as exc:
        msg = exc.one_line()
        return case.patient_id, None, msg if case.patient_id in msg else f"{case.patient_id}: {msg}"
    except Exception as exc:  # noqa: BLE001 - one patient's unexpected failure must not stop the cohort
        text = " ".join(str(exc).split())
        return case.patient_id, None, f"{case.patient_id}: unexpected {type(exc).__name__}: {text}"


@contextlib.contextmanager
def _results(cases: list[CaseRecord], config: ExtractConfig, workers: int,
             allow_modality: Sequence[str] = ()) -> Iterator[Iterator[tuple[str, CasePatches | None, str | None]]]:
    """The per-case results, in completion order; with workers, the pool is stopped on any exception."""
    if workers <= 1 or len(cases) <= 1:
        yield (_run_one(case, config, allow_modality) for case in cases)
        return
    # spawn: a fresh interpreter per worker, safe with SimpleITK's thread pool (fork after threads is not).
    pool = ProcessPoolExecutor(max_workers=min(workers, len(cases)), mp_context=get_context("spawn"),
                               initializer=_init_worker)
    try:
        futures = [pool.submit(_run_one, case, config, tuple(allow_modality)) for case in cases]
        yield (fut.result() for fut in as_completed(futures))
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _npz_arrays(patches: list[CasePatches], patch_size: int, synthetic: bool) -> dict[str, np.ndarray]:
    n = sum(len(p.slice_index) for p in patches)
    x = np.concatenate([p.x for p in patches]) if patches else np.zeros((0, 6, patch_size, patch_size), np.float32)
    pid = np.array([p.patient_id for p in patches for _ in p.slice_index], dtype=str)
    if n == 0:
        pid = np.zeros(0, dtype="<U1")
    slice_index = (np.concatenate([p.slice_index for p in patches]).astype(np.int64) if patches
                   else np.zeros(0, np.int64))
    label = np.array([-1 if p.label is None else p.label for p in patches for _ in p.slice_index], dtype=np.int64)
    arrays = {"x": x.astype(np.float32, copy=False), "patient_id": pid, "slice_index": slice_index, "label": label,
              "synthetic": np.array(bool(synthetic))}
    masks = [p.mask for p in patches]
    if patches and all(m is not None for m in masks):
        arrays["mask"] = np.concatenate(masks).astype(np.float32, copy=False)  # type: ignore[arg-type]
    return arrays


def extract_cohort(
    manifest_path: str | Path,
    out_dir: str | Path,
    config: ExtractConfig | None = None,
    workers: int = 1,
    progress: bool = True,
    allow_modality: Sequence[str] = (),
    *,
    overwrite: bool = False,
) -> ExtractResult:
    """Extract the patches of every patient of a cohort manifest into ``out_dir``.

    A patient that fails (unreadable series, box outside the image, series that do not overlap, T1 and T2
    that do not belong together, ...) is recorded in ``extract.json`` under ``skipped`` and the others go on.
    The outputs replace earlier ones only when at least one patient succeeded, and never when a patient the
    earlier result holds failed now.

    Args:
        manifest_path: ``cohort.csv``.
        out_dir: output folder (created).
        config: extraction settings.
        workers: number of processes (1 = in this process).
        progress: show a rich progress bar over patients.
        allow_modality: DICOM image modalities read besides MR (``--allow-modality CT``).
        overwrite: replace patches that ``out_dir`` already holds although they were made from another manifest
            or with other settings (or cannot be read); without it such a folder is refused before any work. A
            rerun of the same job (same manifest path and sha256, same settings) needs no ``overwrite``.

    Raises:
        spinedx.errors.ManifestError: the manifest itself is invalid, e.g. a required column is missing
            (nothing is extracted).
        SpinedxError: ``out_dir`` is a file; ``out_dir`` holds patches of another job (without ``overwrite``).
        NothingExtracted: every patient failed (nothing written; ``failed`` has the reasons).
        ResultKept: patients failed that the earlier result holds (nothing written, the earlier result kept).
    """
    from spinedx.cohort import load_manifest
    from spinedx.provenance import provenance, sha256_file

    start = time.perf_counter()
    config = config or ExtractConfig()
    manifest_path = Path(manifest_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpinedxError("is a file, not a folder: --out names the folder that receives patches.npz and "
                           "extract.json; choose another path", where=str(out))
    # Columns and formats are checked up front (a missing box column stops here, once); a missing image
    # file is that patient's failure, reported with the others.
    cohort = load_manifest(manifest_path, require_images=True, check_files=False)
    cases = list(cohort.cases)
    manifest_sha256 = sha256_file(manifest_path)
    earlier = _read_earlier(out, overwrite) if out.is_dir() else None
    if earlier is not None and not overwrite:
        diff = earlier.differences(manifest_path, manifest_sha256, config)
        if diff:
            raise PreprocessError(f"this folder already holds patches made from another manifest or with other "
                                  f"settings ({'; '.join(diff)}); rerun with the same manifest and options to redo "
                                  "them, pass --overwrite (overwrite=True) to replace them, or choose a new --out "
                                  "folder", where=str(out))

    results: dict[str, CasePatches] = {}
    errors: dict[str, str] = {}
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[pid]}"), transient=True)
    else:
        bar = None
    with bar if bar is not None else nullcontext(), _results(cases, config, workers, allow_modality) as stream:
        task = bar.add_task("extract", total=len(cases), pid="") if bar is not None else None
        for pid, patches, err in stream:
            if patches is not None:
                results[pid] = patches
            else:
                errors[pid] = err or f"{pid}: failed"
            if bar is not None and task is not None:
                bar.update(task, advance=1, pid=pid)

    ordered = [results[c.patient_id] for c in cases if c.patient_id in results]
    failed = [(c.patient_id, errors[c.patient_id]) for c in cases if c.patient_id in errors]
    if not ordered:
        raise NothingExtracted(failed, out, where=str(manifest_path), earlier=earlier)
    lost = [pid for pid, _ in failed if earlier is not None and pid in earlier.patients]
    if lost:
        assert earlier is not None
        raise ResultKept(failed, lost, len(cases), earlier, out)
    warnings = [f"{p.patient_id}: {w}" for p in ordered if p.pair_check is not None for w in p.pair_check.warnings]

    per_class = {name: 0 for name in LABEL_NAMES.values()}
    for p in ordered:
        if p.label is not None:
            per_class[LABEL_NAMES[p.label]] += len(p.slice_index)
    reg_seconds = [p.registration.seconds for p in ordered if p.registration.performed]
    arrays = _npz_arrays(ordered, config.patch_size, cohort.synthetic)
    doc = {
        "provenance": provenance(),
        "manifest": {"path": str(manifest_path.resolve()), "sha256": manifest_sha256},
        "synthetic": cohort.synthetic,
        "config": config.to_dict(),
        "channel_names": list(CHANNEL_NAMES),
        "orientation": "canonical sagittal grid: rows head->feet, columns anterior->posterior, slices from the "
                       "patient's left to right (spinedx.io.geometry)",
        "arrays": {"x": "float32 (N, 6, P, P)", "patient_id": "str (N,)", "slice_index": "int64 (N,)",
                   "label": "int64 (N,), 1 = malignant, 0 = benign", "synthetic": "bool ()",
                   **({"mask": "float32 (N, P, P), lesion mask of slice s on the crop grid, 0..1"}
                      if "mask" in arrays else {})},
        "counts": {"patients": len(cases), "ok": len(ordered), "failed": len(failed),
                   "samples": int(sum(per_class.values())), "samples_per_class": per_class},
        "pair_check": config.pair_check,
        # image modalities read besides MR (--allow-modality): a record of what the models were trained on
        "allow_modality": sorted(str(m) for m in allow_modality),
        "warnings": warnings,
        "registration_summary": {
            "performed": len(reg_seconds),
            "accepted": sum(p.registration.accepted for p in ordered),
            "mean_seconds": float(np.mean(reg_seconds)) if reg_seconds else 0.0,
        },
        "seconds": 0.0,
        "workers": workers,
        "patients": [p.summary() for p in ordered],
        "skipped": [{"patient_id": pid, "reason": msg} for pid, msg in failed],
    }
    check_parent(out / "patches.npz")
    remove_stale_tmp(out)
    seconds = time.perf_counter() - start
    doc["seconds"] = round(seconds, 3)
    patches_path, json_path = write_patches(out, arrays, doc)  # the patches folder's one writer
    return ExtractResult(patches_path, json_path, [p.patient_id for p in ordered], failed, per_class, seconds,
                         warnings, cohort.synthetic, None if earlier is None else earlier.describe())
