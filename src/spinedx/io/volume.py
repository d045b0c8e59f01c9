"""Reading NIfTI, NRRD and MetaImage volumes into :class:`spinedx.io.Image`.

NIfTI stores an index-to-RAS affine (nibabel's ``img.affine``: the sform when its code is set,
else the qform, as in the NIfTI-1 standard); spinedx works in DICOM's LPS, so the first two
rows are negated. A NIfTI whose qform_code and sform_code are both 0 has no orientation in the
patient (nibabel then makes one up from the voxel sizes) and is refused. NRRD/MetaImage are read
by SimpleITK, whose geometry is already LPS.

Every volume is then reoriented to the canonical sagittal grid (rows head -> feet, columns
anterior -> posterior, slices from the patient's left to right; :func:`spinedx.io.geometry.to_canonical`)
by permuting and flipping axes only, so a DICOM series, its dcm2niix NIfTI and an NRRD written from it
give the same array, and the same manifest box means the same anatomy in each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.geometry import to_canonical
from spinedx.io.image import Image

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _squeeze_3d(data: np.ndarray, path: Path, where: str | None) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        w = f"{where}: {path}" if where else str(path)
        raise ImageReadError(f"expected a 3-D volume, got shape {data.shape}; give one 3-D volume per file",
                             where=w)
    return data


def file_order_image(data: np.ndarray, affine: np.ndarray, source: str, meta: dict[str, Any]) -> Image:
    """An Image of ``data[a0, a1, a2]`` in file order: index x = file axis 0, y = axis 1, z = axis 2."""
    return Image(np.transpose(data, (2, 1, 0)), affine, source=source, meta=meta)


def read_nifti(path: str | Path, *, where: str | None = None) -> Image:
    """Read a ``.nii``/``.nii.gz`` file with nibabel, in LPS, on the canonical sagittal grid.

    Args:
        path: the NIfTI file.
        where: prefix for error messages.

    Returns:
        The image; ``meta`` records the qform/sform codes and the ``reorientation`` applied.

    Raises:
        ImageReadError: unreadable file, not 3-D, neither qform nor sform, singular affine.
    """
    import nibabel as nib

    path = Path(path)
    w = f"{where}: {path}" if where else str(path)
    try:
        img: Any = nib.load(str(path))  # a Nifti1Image or Nifti2Image
        hdr = img.header
        qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    except Exception as exc:  # noqa: BLE001 -- nibabel raises many types for corrupt files
        raise ImageReadError(f"unreadable NIfTI file ({type(exc).__name__}: {exc})", where=w) from None
    if qcode == 0 and scode == 0:
        raise ImageReadError(
            "the NIfTI header has neither a qform nor an sform (qform_code = sform_code = 0), so where its rows, "
            "columns and slices lie in the patient is unknown; convert the DICOM series again (e.g. with dcm2niix) "
            "or set the orientation (nibabel: img.set_sform(affine, code=1))", where=w)
    try:
        data = np.asanyarray(img.dataobj)
        slope, inter = hdr.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 -- truncated or corrupt voxel data
        raise ImageReadError(f"unreadable NIfTI file ({type(exc).__name__}: {exc})", where=w) from None
    data = _squeeze_3d(data, path, where)
    # get_fdata would apply scl_slope/inter as float64; do the same in float32 to halve the memory.
    stored = data.dtype
    scaled = (slope is not None and slope not in (0.0, 1.0)) or (inter is not None and inter != 0.0)
    integer_valued = stored.kind in "biu" and not scaled
    # the value range on the stored integers is cheaper than on float32 (masks are checked against it)
    value_range = [float(data.min()), float(data.max())] if integer_valued and data.size else None
    data = data.astype(np.float32)
    if slope is not None and slope not in (0.0, 1.0):
        data *= np.float32(slope)
    if inter is not None and inter != 0.0:
        data += np.float32(inter)
    affine = _RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError("the NIfTI affine is singular or not finite (no usable qform/sform); fix the header",
                             where=w)
    meta = {"format": "nifti", "qform_code": qcode, "sform_code": scode, "affine_from": "sform" if scode else "qform",
            "descrip": str(hdr["descrip"].astype(str)), "stored_dtype": str(stored),
            # integers without scaling: every float32 voxel is a finite whole number (no NaN pass needed)
            "integer_valued": bool(integer_valued), "value_range": value_range}
    return to_canonical(file_order_image(data, affine, str(path), meta))


def read_sitk_volume(path: str | Path, *, where: str | None = None) -> Image:
    """Read an NRRD (``.nrrd``/``.nhdr``) or MetaImage (``.mha``/``.mhd``) file with SimpleITK.

    Args:
        path: the file.
        where: prefix for error messages.

    Returns:
        The image on the canonical sagittal grid (see module docstring).
    """
    import SimpleITK as sitk

    path = Path(path)
    w = f"{where}: {path}" if where else str(path)
    try:
        img = sitk.ReadImage(str(path))
    except Exception as exc:  # noqa: BLE001 -- SimpleITK raises RuntimeError with ITK's text
        raise ImageReadError(f"unreadable image file ({' '.join(str(exc).split())[:300]})", where=w) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError("multi-component (vector/colour) image; give one scalar MR volume", where=w)
    if img.GetDimension() != 3:
        raise ImageReadError(f"expected a 3-D volume, got {img.GetDimension()}-D", where=w)
    # GetArrayFromImage gives (z, y, x): already Image's [k, i, j] with x = the file's first axis.
    arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = img.GetOrigin()
    meta = {"format": path.suffix.lower().lstrip(".")}
    return to_canonical(Image(arr, affine, source=str(path), meta=meta))
