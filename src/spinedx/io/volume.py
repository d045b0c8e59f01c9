"""Reading NIfTI, NRRD and MetaImage volumes into :class:`spinedx.io.Image`.

NIfTI stores an index-to-RAS affine (nibabel's ``img.affine``: the sform when its code is set,
else the qform, as in the NIfTI-1 standard); spinedx works in DICOM's LPS, so the first two
rows are negated. NRRD/MetaImage are read by SimpleITK, whose geometry is already LPS.

Every volume is then turned into a sagittal stack the same way (see ``docs/architecture.md``):
the file axis whose direction is most aligned with patient left-right becomes the slice axis
``z``; the two other file axes become ``x`` (the first in file order) and ``y`` (the second).
Nothing is flipped, so slice ``k`` of the manifest is plane ``k`` along that file axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import ImageReadError
from spinedx.io.image import Image

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sagittal_stack(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Reorder a volume given in file order so that the left-right axis is the slice axis.

    Args:
        data: voxels indexed ``data[a0, a1, a2]`` in file axis order.
        affine: 4x4 LPS affine of those file indices.

    Returns:
        ``(array, affine, (s, a, b))``: ``array`` of shape ``(n_s, n_b, n_a)`` indexed
        ``[k, i, j]``, its affine (columns x = file axis ``a``, y = ``b``, z = ``s``) and the
        file axes used as slice, x and y.
    """
    dirs = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)[None, :]
    s = int(np.argmax(np.abs(dirs[0, :])))  # LPS x is left-right
    a, b = (ax for ax in range(3) if ax != s)
    arr = np.transpose(data, (s, b, a))
    out = np.eye(4)
    out[:3, 0], out[:3, 1], out[:3, 2] = affine[:3, a], affine[:3, b], affine[:3, s]
    out[:3, 3] = affine[:3, 3]
    return arr, out, (s, a, b)


def _squeeze_3d(data: np.ndarray, path: Path, where: str | None) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        w = f"{where}: {path}" if where else str(path)
        raise ImageReadError(f"expected a 3-D volume, got shape {data.shape}; give one 3-D volume per file",
                             where=w)
    return data


def read_nifti(path: str | Path, *, where: str | None = None) -> Image:
    """Read a ``.nii``/``.nii.gz`` file with nibabel as a sagittal stack in LPS.

    Args:
        path: the NIfTI file.
        where: prefix for error messages.

    Returns:
        The image; ``meta`` records the qform/sform codes and the file axes used.
    """
    import nibabel as nib

    path = Path(path)
    w = f"{where}: {path}" if where else str(path)
    try:
        img: Any = nib.load(str(path))  # a Nifti1Image or Nifti2Image
        data = np.asanyarray(img.dataobj)
        hdr = img.header
    except Exception as exc:  # noqa: BLE001 -- nibabel raises many types for corrupt files
        raise ImageReadError(f"unreadable NIfTI file ({type(exc).__name__}: {exc})", where=w) from None
    data = _squeeze_3d(data, path, where)
    # get_fdata would apply scl_slope/inter as float64; do the same in float32 to halve the memory.
    slope, inter = hdr.get_slope_inter()
    data = data.astype(np.float32)
    if slope is not None and slope not in (0.0, 1.0):
        data *= np.float32(slope)
    if inter is not None and inter != 0.0:
        data += np.float32(inter)
    affine = _RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError("the NIfTI affine is singular (no usable qform/sform)", where=w)
    arr, aff, (s, a, b) = sagittal_stack(data, affine)
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    meta = {"format": "nifti", "qform_code": qcode, "sform_code": scode, "affine_from": "sform" if scode else
            ("qform" if qcode else "none"), "file_axes_zxy": [s, a, b], "descrip": str(hdr["descrip"].astype(str))}
    return Image(np.ascontiguousarray(arr), aff, source=str(path), meta=meta)


def read_sitk_volume(path: str | Path, *, where: str | None = None) -> Image:
    """Read an NRRD (``.nrrd``/``.nhdr``) or MetaImage (``.mha``/``.mhd``) file with SimpleITK.

    Args:
        path: the file.
        where: prefix for error messages.

    Returns:
        The image as a sagittal stack (see module docstring).
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
    data = sitk.GetArrayFromImage(img).astype(np.float32).transpose(2, 1, 0)  # file (x, y, z) order
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = img.GetOrigin()
    arr, aff, (s, a, b) = sagittal_stack(data, affine)
    meta = {"format": path.suffix.lower().lstrip("."), "file_axes_zxy": [s, a, b]}
    return Image(np.ascontiguousarray(arr), aff, source=str(path), meta=meta)
