"""One entry point for every image format: :func:`read_image`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.dicom import SeriesCheck, check_path, read_path
from spinedx.io.discovery import link_problem
from spinedx.io.geometry import MIN_SLICES, check_geometry, to_canonical
from spinedx.io.image import Image
from spinedx.io.volume import read_nifti, read_sitk_volume
from spinedx.studyindex.header import allowed_modalities

__all__ = ["MIN_SLICES", "check_dicom_series", "check_image", "read_image"]

_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dicom-folder"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(_SITK_SUFFIXES):
        return "sitk"
    return "dicom-file"


def _existing(path: str | Path, where: str | None) -> tuple[Path, str]:
    """``path`` expanded, and how messages name it; refused when it is a broken link or does not exist."""
    path = Path(path).expanduser()
    w = f"{where}: {path}" if where else str(path)
    problem = link_problem(path)
    if problem:
        raise ImageReadError(problem, where=w)
    if not path.exists():
        raise ImageReadError("no such file or folder; check the path in the manifest", where=w)
    return path, w


def read_image(path: str | Path, series_uid: str | None = None, *, expect_sagittal: bool = True,
               where: str | None = None, allow_modality: Iterable[str] = ()) -> Image:
    """Read a DICOM series, NIfTI, NRRD or MetaImage file as a checked 3-D stack on the canonical grid.

    Every volume is reoriented (axis permutations and flips only, no resampling) to the canonical
    sagittal display grid of :mod:`spinedx.io.geometry`: ``array[k, i, j]`` with rows ``i`` head -> feet,
    columns ``j`` anterior -> posterior and slices ``k`` from the patient's left to right, the grid of
    ImageOrientationPatient ``[0,1,0,0,0,-1]`` with slices along its normal. Manifest boxes and lesion
    slices refer to this grid, so a DICOM series and its NIfTI or NRRD conversion mean the same thing.

    Args:
        path: a DICOM series folder (searched recursively), one DICOM file (a multi-frame file
            is read alone; a single-frame file stands for its whole series in its folder),
            ``.nii``/``.nii.gz`` (nibabel), or ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` (SimpleITK).
        series_uid: SeriesInstanceUID to pick when a folder holds several series.
        expect_sagittal: refuse stacks whose slice normal is not mostly left-right
            (``|n . (1,0,0)| < 0.7``): the paper works on sagittal T1W/T2W images.
        where: prefix for error messages, e.g. ``"patient P001 t2"``.
        allow_modality: DICOM image modalities accepted besides MR (``("CT",)``; ``--allow-modality``).
            NIfTI/NRRD carry no modality and are read as they are.

    Returns:
        The image: float32 voxels ``(nz, ny, nx)``, LPS affine (conventions in
        :mod:`spinedx.io.image`); ``meta['reorientation']`` records the permutation and flips applied;
        ``meta['warnings']`` what was accepted but matters (pixel data longer than its header describes, a
        modality accepted through ``allow_modality``), also issued as :class:`ImageReadWarning`.

    Raises:
        ImageReadError: missing/unreadable input, non-finite voxels, fewer than 3 slices, a
            non-sagittal stack when ``expect_sagittal``, a DICOM series that is not MR (Modality CT, a SEG or SR
            object, ...) unless allowed, and the DICOM problems listed in
            :func:`spinedx.io.dicom.read_dicom_series`.
    """
    path, w = _existing(path, where)
    kind = _kind(path)
    finite = False  # True when the reader knows every voxel is finite (integer DICOM pixel data)
    if kind in ("dicom-folder", "dicom-file"):
        allow = _allowed(allow_modality)
        raw, finite = read_path(path, series_uid, where, allow_modality=allow, expect_sagittal=expect_sagittal)
        # The plane test is on the acquired slices: reoriented, an axial stack would look sagittal.
        img = to_canonical(raw)
        plane = raw
    else:
        # NIfTI/NRRD have no acquisition plane: the canonical slice axis is the file axis most aligned with
        # left-right, and the plane of the two others must be sagittal.
        img = read_nifti(path, where=where) if kind == "nifti" else read_sitk_volume(path, where=where)
        plane = img
        finite = bool(img.meta.get("integer_valued", False))
    _check_image(img, expect_sagittal, w, check_finite=not finite, plane=plane)
    return img


def check_dicom_series(path: str | Path, series_uid: str | None = None, *, expect_sagittal: bool = True,
                       where: str | None = None, allow_modality: Iterable[str] = (),
                       scans: dict[Path, Any] | None = None) -> SeriesCheck:
    """Every check :func:`read_image` makes on a DICOM series, from its headers alone (no pixel data decoded).

    ``spinedx index`` calls it on each chosen series, so a series the reader would refuse (a localiser slice in it,
    another modality, mixed orientations, a missing slice, too few slices, a stray non-DICOM file in the folder,
    ...) is reported at index time, with the reader's own message. What only the pixels can tell (a corrupt
    compressed stream, pixel data shorter than its header says, non-finite float voxels) is left to the reader.

    Args:
        path: the DICOM folder or file, as the manifest's ``t1``/``t2`` would name it.
        series_uid: the series to check (as ``t1_series_uid``/``t2_series_uid``).
        expect_sagittal: as for :func:`read_image`.
        where: prefix for error messages.
        allow_modality: as for :func:`read_image`.
        scans: a cache of folder scans shared by several calls (one scan per folder: a flat folder holding many
            series is read once); None reads afresh.

    Returns:
        What the reader would read (:class:`SeriesCheck`).

    Raises:
        ImageReadError: the reader's refusal.
    """
    path, w = _existing(path, where)
    if _kind(path) not in ("dicom-folder", "dicom-file"):
        raise ImageReadError("not a DICOM folder or file", where=w)
    return check_path(path, series_uid, where, allow_modality=_allowed(allow_modality),
                      expect_sagittal=expect_sagittal, scans=scans)


def _allowed(values: Iterable[str]) -> tuple[str, ...]:
    try:
        return allowed_modalities(values)
    except ValueError as exc:
        raise ImageReadError(str(exc), where="--allow-modality") from None


def check_image(img: Image, *, expect_sagittal: bool = True, where: str | None = None) -> None:
    """Refuse images spinedx cannot use: too few slices, non-finite voxels, wrong plane.

    Args:
        img: the image.
        expect_sagittal: require the slice normal to be mostly left-right.
        where: names the file/patient in the error.

    Raises:
        ImageReadError: with what is wrong and what to do.
    """
    _check_image(img, expect_sagittal, where, check_finite=True)


def _check_image(img: Image, expect_sagittal: bool, where: str | None, *, check_finite: bool,
                 plane: Image | None = None) -> None:
    w = where or img.source
    plane = img if plane is None else plane
    if img.n_slices < MIN_SLICES:  # before the voxels: the message a 1-slice image needs
        check_geometry(img.n_slices, plane.affine, expect_sagittal=expect_sagittal, where=w)
    # min and max propagate NaN and reach any infinity, so both finite <=> every voxel finite; two
    # reductions cost less than a boolean volume the size of the image.
    arr = img.array
    if check_finite and arr.size and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        bad = int((~np.isfinite(img.array)).sum())
        raise ImageReadError(f"{bad} voxel(s) are NaN or infinite; fix or re-export the image", where=w)
    check_geometry(img.n_slices, plane.affine, expect_sagittal=expect_sagittal, where=w)
