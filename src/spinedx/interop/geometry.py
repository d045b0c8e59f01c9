"""Where a box on the canonical grid lies in the source DICOM files.

spinedx works on the grid of :func:`spinedx.io.read_image` (``Image.array[k, i, j]``, boxes ``x0,y0,x1,y1`` in
column/row pixels of slice ``k``), which may be a reoriented view of the stored files. A DICOM result must
reference the stored image and use its pixel coordinates, so the mapping goes through patient space: the box
corners are placed in LPS millimetres with the image's affine, and then expressed in the pixel frame of the
file whose plane holds them, using that file's own Image Plane module (PS3.3 C.7.6.2.1.1). This is right for
any flip or transpose the reader applied, and refuses (instead of guessing) when no stored plane contains the
slice.

Spatial coordinates in SR (``SCOORD``, PS3.3 C.18.6.1.1) put ``0.0\\0.0`` at the top left corner of the top
left pixel, so a pixel with centre ``(c, r)`` spans ``[c, c + 1] x [r, r + 1]`` there; the half-open spinedx box
``[x0, x1) x [y0, y1)`` covers exactly the corners ``(x0, y0)`` to ``(x1, y1)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import SpinedxError

#: A box corner must lie this close (fraction of the slice spacing) to the referenced file's plane.
PLANE_TOL = 0.25

_FRAME_LABEL = re.compile(r"^(?P<path>.*) \(frame (?P<frame>\d+)\)$")


@dataclass(frozen=True)
class StoredPlane:
    """One stored 2-D image (a single-frame file, or one frame of a multi-frame file) and its geometry.

    Attributes:
        path: the file.
        frame: 1-based frame number in a multi-frame file, None for a single-frame file.
        sop_class_uid: SOPClassUID of the file.
        sop_instance_uid: SOPInstanceUID of the file.
        position: ImagePositionPatient (LPS mm of the centre of the first pixel).
        row_dir: direction of increasing column index (first ImageOrientationPatient triplet).
        col_dir: direction of increasing row index (second triplet).
        spacing: PixelSpacing ``(row spacing, column spacing)`` in mm.
        rows: Rows.
        columns: Columns.
    """

    path: Path
    frame: int | None
    sop_class_uid: str
    sop_instance_uid: str
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]
    rows: int
    columns: int

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the plane (row direction x column direction)."""
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    def to_pixel(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (N, 3) LPS points to (N, 2) continuous pixel-centre indices (column, row) and plane distances (mm)."""
        d = np.atleast_2d(np.asarray(points, dtype=np.float64)) - self.position
        col = d @ self.row_dir / self.spacing[1]
        row = d @ self.col_dir / self.spacing[0]
        return np.stack([col, row], axis=1), d @ self.normal


def split_label(label: str | Path) -> tuple[Path, int | None]:
    """A slice label of ``Image.meta["files"]`` as (file, 1-based frame or None): ``"a.dcm (frame 3)"`` -> frame 3."""
    m = _FRAME_LABEL.match(str(label))
    if m:
        return Path(m.group("path")), int(m.group("frame"))
    return Path(str(label)), None


def _floats(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    try:
        return np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _frame_attr(ds: Any, frame: int | None, seq: str, attr: str) -> Any:
    """An Image Plane attribute of one frame: per-frame functional group, then shared, then the top level."""
    if frame is not None:
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = ds.get(groups)
            if not items:
                continue
            item = items[frame - 1] if groups.startswith("PerFrame") and len(items) >= frame else items[0]
            inner = item.get(seq)
            if inner and attr in inner[0]:
                return inner[0].get(attr)
    return ds.get(attr)


def stored_planes(image: Any, *, where: str | None = None, headers: dict[Path, Any] | None = None) -> list[StoredPlane]:
    """The stored planes of a DICOM :class:`spinedx.io.Image`, from the files its ``meta["files"]`` lists.

    Args:
        image: an image read from DICOM by :func:`spinedx.io.read_image`.
        where: names the series in errors.
        headers: filled with each file's header (pixel data not read), keyed by path.

    Raises:
        SpinedxError: the image was not read from DICOM, or a file lacks its plane geometry.
    """
    import pydicom

    fmt_ok = image.meta.get("format") == "dicom"
    # spinedx.io.to_canonical keeps "files" in canonical slice order, or renames it when the acquired slices
    # became rows or columns of the grid; every stored plane is a candidate either way (see locate_box).
    files = (image.meta.get("files") or image.meta.get("files_acquisition_order")) if fmt_ok else None
    if not files:
        raise SpinedxError("DICOM results need DICOM input images (this image has no source DICOM files); "
                           "predict from the DICOM series", where=where or image.source)
    cache: dict[Path, Any] = {} if headers is None else headers
    planes = []
    for label in files:
        path, frame = split_label(label)
        if path not in cache:
            cache[path] = pydicom.dcmread(path, stop_before_pixels=True)
        ds = cache[path]
        iop = _floats(_frame_attr(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"))
        ipp = _floats(_frame_attr(ds, frame, "PlanePositionSequence", "ImagePositionPatient"))
        sp = _floats(_frame_attr(ds, frame, "PixelMeasuresSequence", "PixelSpacing"))
        if iop is None or ipp is None or sp is None or iop.shape != (6,) or ipp.shape != (3,) or sp.shape != (2,):
            raise SpinedxError("image lacks ImageOrientationPatient/ImagePositionPatient/PixelSpacing; cannot "
                               "reference it from a DICOM result", where=str(label))
        planes.append(StoredPlane(path, frame, str(ds.SOPClassUID), str(ds.SOPInstanceUID), ipp, iop[:3], iop[3:],
                                  (float(sp[0]), float(sp[1])), int(ds.Rows), int(ds.Columns)))
    return planes


@dataclass(frozen=True)
class PlaneBox:
    """A canonical box on one slice, expressed on the stored plane that holds it.

    Attributes:
        slice_index: the canonical slice ``k``.
        plane: the stored image.
        corners: (4, 2) SCOORD corners (column, row) in the stored image, in the order of the canonical
            corners ``(x0, y0), (x1, y0), (x1, y1), (x0, y1)``.
        distance_mm: largest distance of a corner from the stored plane.
    """

    slice_index: int
    plane: StoredPlane
    corners: np.ndarray
    distance_mm: float

    @property
    def polyline(self) -> np.ndarray:
        """(5, 2) closed SCOORD polyline (first point repeated), float32 like SR's GraphicData (FL)."""
        return np.vstack([self.corners, self.corners[:1]]).astype(np.float32)


def canonical_corners(image: Any, box: tuple[int, int, int, int], k: int) -> np.ndarray:
    """(4, 3) LPS points of the outer pixel edges of ``box`` on canonical slice ``k``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    # pixel j covers index [j - 0.5, j + 0.5], so the half-open box [x0, x1) spans [x0 - 0.5, x1 - 0.5]
    idx = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - 0.5
    return image.index_to_physical(np.column_stack([idx, np.full(4, float(k))]))


def locate_box(image: Any, planes: list[StoredPlane], box: tuple[int, int, int, int], k: int,
               *, where: str | None = None) -> PlaneBox:
    """The stored plane holding canonical slice ``k`` and the box's corners in its pixel frame.

    Raises:
        SpinedxError: no stored plane lies within :data:`PLANE_TOL` of a slice spacing of the box, or the
            box falls outside that image.
    """
    pts = canonical_corners(image, box, k)
    spacing = float(image.spacing[2])
    best: PlaneBox | None = None
    for plane in planes:
        px, dist = plane.to_pixel(pts)
        far = float(np.max(np.abs(dist)))
        if best is None or far < best.distance_mm:
            best = PlaneBox(int(k), plane, px + 0.5, far)  # pixel-centre index -> SCOORD (0 = pixel edge)
    if best is None or best.distance_mm > PLANE_TOL * spacing:
        got = "no planes" if best is None else f"the nearest is {best.distance_mm:.2f} mm away"
        raise SpinedxError(f"no stored image holds slice {k} of the series ({got}; slice spacing {spacing:.2f} mm): "
                           "the image's geometry does not match its files", where=where or image.source)
    # The reader's own record (meta["files"] follows the canonical slices) must name the same image: two
    # independent derivations of one fact, so a disagreement is refused rather than written into a report.
    listed = image.meta.get("files")
    if isinstance(listed, list) and len(listed) == image.n_slices:
        path, frame = split_label(listed[k])
        if (path, frame) != (best.plane.path, best.plane.frame):
            raise SpinedxError(f"slice {k}: the reader lists {listed[k]} but the geometry places it in "
                               f"{best.plane.path}{'' if best.plane.frame is None else f' frame {best.plane.frame}'}; "
                               "refusing to reference an image that may be the wrong one", where=where or image.source)
    c = best.corners
    tol = 1e-3
    if (c[:, 0].min() < -tol or c[:, 1].min() < -tol or c[:, 0].max() > best.plane.columns + tol
            or c[:, 1].max() > best.plane.rows + tol):
        raise SpinedxError(f"box {box} on slice {k} falls outside the stored image {best.plane.path.name} "
                           f"({best.plane.columns} x {best.plane.rows})", where=where or image.source)
    return PlaneBox(best.slice_index, best.plane, np.clip(c, 0.0, None), best.distance_mm)


def orientation_letters(direction: np.ndarray, threshold: float = 0.25) -> str:
    """Patient orientation letters of an LPS direction (PS3.3 C.7.6.1.1.1), strongest component first.

    ``(0, 1, 0)`` -> ``"P"``; ``(0, 0, -1)`` -> ``"F"``; an oblique direction gives several letters (``"PF"``).
    """
    v = np.asarray(direction, dtype=np.float64)
    v = v / np.linalg.norm(v)
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    order = np.argsort(-np.abs(v), kind="stable")
    out = "".join(letters[a][int(v[a] > 0)] for a in order if abs(v[a]) >= threshold)
    return out or letters[int(order[0])][int(v[order[0]] > 0)]
