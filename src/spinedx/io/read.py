"""One entry point for every image format: :func:`read_image`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.dicom import read_file, read_series
from spinedx.io.discovery import link_problem
from spinedx.io.geometry import SAGITTAL_MIN, orientation_name, to_canonical
from spinedx.io.image import Image
from spinedx.io.volume import read_nifti, read_sitk_volume

_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
MIN_SLICES = 3  # the paper's input is a lesion slice and its two neighbours


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dicom-folder"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(_SITK_SUFFIXES):
        return "sitk"
    return "dicom-file"


def read_image(path: str | Path, series_uid: str | None = None, *, expect_sagittal: bool = True,
               where: str | None = None) -> Image:
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

    Returns:
        The image: float32 voxels ``(nz, ny, nx)``, LPS affine (conventions in
        :mod:`spinedx.io.image`); ``meta['reorientation']`` records the permutation and flips applied.

    Raises:
        ImageReadError: missing/unreadable input, non-finite voxels, fewer than 3 slices, a
            non-sagittal stack when ``expect_sagittal``, and the DICOM problems listed in
            :func:`spinedx.io.dicom.read_dicom_series`.
    """
    path = Path(path).expanduser()
    w = f"{where}: {path}" if where else str(path)
    problem = link_problem(path)
    if problem:
        raise ImageReadError(problem, where=w)
    if not path.exists():
        raise ImageReadError("no such file or folder; check the path in the manifest", where=w)
    kind = _kind(path)
    finite = False  # True when the reader knows every voxel is finite (integer DICOM pixel data)
    if kind in ("dicom-folder", "dicom-file"):
        raw, finite = (read_series if kind == "dicom-folder" else read_file)(path, series_uid, where)
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
    if img.n_slices < MIN_SLICES:
        raise ImageReadError(f"only {img.n_slices} slice(s); at least {MIN_SLICES} are needed (a lesion slice and "
                             "its two neighbours)", where=w)
    # min and max propagate NaN and reach any infinity, so both finite <=> every voxel finite; two
    # reductions cost less than a boolean volume the size of the image.
    arr = img.array
    if check_finite and arr.size and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        bad = int((~np.isfinite(img.array)).sum())
        raise ImageReadError(f"{bad} voxel(s) are NaN or infinite; fix or re-export the image", where=w)
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise ImageReadError("the image geometry (affine) is singular or not finite", where=w)
    if expect_sagittal:
        # Use the normal of the slice plane (x cross y), not the z column: for a sheared stack
        # the z column is tilted while the planes themselves are what the reader sees.
        normal = np.cross(plane.direction[:, 0], plane.direction[:, 1])
        normal /= np.linalg.norm(normal)
        if abs(float(normal[0])) < SAGITTAL_MIN:
            name = orientation_name(normal)
            raise ImageReadError(
                f"{name} series where sagittal is expected (slice normal {np.round(normal, 3).tolist()} in LPS); "
                "point the manifest at the sagittal T1W/T2W series", where=w)
