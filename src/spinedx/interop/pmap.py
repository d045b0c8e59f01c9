"""The heatmaps as a DICOM Parametric Map (PS3.3 A.75), written with highdicom, so a viewer lays them over the T2.

One multi-frame object per prediction, one frame per lesion slice. Each frame is the stored T2 image of that slice,
pixel for pixel: same rows and columns, ImagePositionPatient, ImageOrientationPatient and PixelSpacing (per-frame
Plane Position, shared Plane Orientation and Pixel Measures), in the T2 series' Frame of Reference, with the T2
image as its derivation source. The heatmap was computed on the patch crop (the box with its margin, resampled to
P x P); it is placed back on the canonical slice as :func:`spinedx.interop.sc.heat_on_slice` does (linear, zero
outside the crop) and then carried onto the stored image's own pixel grid through patient space (the canonical grid
may be a flipped or transposed view of the stored files; the two grids coincide pixel for pixel, which is checked).
Values are float32 in [0, 1] (the heat of the fold models' mean map, as in the overlays), with an identity Real
World Value Mapping (no units) and a window of 0-1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from spinedx.errors import SpinedxError
from spinedx.interop.content import ResultContent
from spinedx.interop.geometry import PlaneBox, StoredPlane

#: How far (pixels) a stored pixel centre may lie from a canonical pixel centre: the grids must coincide.
GRID_TOL = 1e-3


class NoFrameOfReference(SpinedxError):
    """The T2 images carry no FrameOfReferenceUID: a map could not be placed on them (the SR and the Secondary
    Captures do not need one)."""


def heat_on_plane(heat_slice: np.ndarray, image: Any, plane: StoredPlane, k: int) -> np.ndarray:
    """The heat of canonical slice ``k`` (``(ny, nx)``, on the canonical grid) on a stored plane's pixel grid.

    The stored pixel ``(r, c)`` lies at canonical index ``i0 + c * dc + r * dr`` (an affine map); it is the canonical
    pixel grid when ``i0``, ``dc`` and ``dr`` are whole numbers, checked where the deviation is largest (the four
    corners) to :data:`GRID_TOL` pixels, and the plane is slice ``k``.

    Raises:
        SpinedxError: the stored plane is not canonical slice ``k``, or its pixels are not the canonical pixels
            (the reader resampled: the map would be misplaced).
    """
    pts = np.stack([plane.position, plane.position + plane.spacing[1] * plane.row_dir,
                    plane.position + plane.spacing[0] * plane.col_dir])
    i0, ic, ir = image.physical_to_index(pts)  # canonical (column x, row y, slice z) of pixel (0,0), (0,1), (1,0)
    dc, dr = ic - i0, ir - i0
    corners = np.array([i0 + c * dc + r * dr for r in (0, plane.rows - 1) for c in (0, plane.columns - 1)])
    n0, ndc, ndr = np.rint(i0), np.rint(dc), np.rint(dr)
    exact = np.array([n0 + c * ndc + r * ndr for r in (0, plane.rows - 1) for c in (0, plane.columns - 1)])
    if np.max(np.abs(corners - exact)) > GRID_TOL or ndc[2] != 0 or ndr[2] != 0 or n0[2] != k:
        raise SpinedxError(f"the stored image {plane.path.name} is not canonical slice {k} pixel for pixel; the "
                           "heatmap cannot be placed on it", where=str(plane.path))
    r = np.arange(plane.rows)[:, None]
    c = np.arange(plane.columns)[None, :]
    x = (n0[0] + c * ndc[0] + r * ndr[0]).astype(np.int64)
    y = (n0[1] + c * ndc[1] + r * ndr[1]).astype(np.int64)
    ny, nx = heat_slice.shape
    inside = (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
    out = np.zeros((plane.rows, plane.columns), dtype=np.float32)
    out[inside] = heat_slice[y[inside], x[inside]]
    return out


def canonical_slice(image: Any, plane: StoredPlane) -> int:
    """The canonical slice a stored plane holds (its centre pixel's slice index, rounded)."""
    centre = (plane.position + (plane.columns - 1) / 2 * plane.spacing[1] * plane.row_dir
              + (plane.rows - 1) / 2 * plane.spacing[0] * plane.col_dir)
    return int(np.rint(image.physical_to_index(centre[None, :])[0, 2]))


def _source_dataset(ds: Any, identity: Dataset) -> Dataset:
    """What highdicom needs of a source image: its UIDs, geometry and the study's identifiers (nothing else is
    copied into the map)."""
    out = Dataset()
    out.update(identity)
    for kw in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
               "Rows", "Columns", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
               "SliceThickness", "Modality", "NumberOfFrames", "SharedFunctionalGroupsSequence",
               "PerFrameFunctionalGroupsSequence"):
        if kw in ds:
            out[kw] = ds[kw]
    return out


def build_parametric_map(
    content: ResultContent,
    image: Any,
    boxes: list[PlaneBox],
    identity: Dataset,
    headers: dict[Any, Any],
    *,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    slice_heat: list[np.ndarray],
    all_planes: list[StoredPlane] | None = None,
) -> Any:
    """The heatmaps of ``content`` as one Parametric Map over the stored T2 images of the lesion slices.

    Args:
        content: the result (``heatmaps`` must be set).
        image: the canonical T2 image the heatmaps and box refer to.
        boxes: the box on each stored T2 lesion image (their planes are the frames).
        identity: patient/study identifiers (:func:`spinedx.interop.identity.identity_of`).
        headers: the T2 files' headers by path (from :func:`spinedx.interop.geometry.stored_planes`).
        series_instance_uid: the map's new series.
        series_number: its SeriesNumber.
        sop_instance_uid: its SOPInstanceUID.
        slice_heat: each lesion slice's heat on its whole canonical slice (:func:`spinedx.interop.sc.heat_on_slice`;
            computed once by the caller for the map and the Secondary Captures).
        all_planes: every stored T2 plane (one frame each); None: the lesion slices' planes only.

    Raises:
        NoFrameOfReference: the T2 images have no FrameOfReferenceUID.
        SpinedxError: images of different orientation or size, or a stored image that is not its canonical slice
            pixel for pixel.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    from spinedx import RESEARCH_USE_ONLY
    from spinedx.explain import method_caption, method_info
    from spinedx.interop.sr import MANUFACTURER

    if content.heatmaps is None or not content.heatmap_method:
        raise ValueError("the prediction has no heatmaps (predict with explain=True)")
    lesion = {int(k): (i, pb) for i, (k, pb) in enumerate(zip(content.slice_index, boxes, strict=True))}
    planes = list(all_planes) if all_planes is not None else [pb.plane for pb in boxes]
    first = planes[0]
    for p in planes[1:]:
        if (p.rows, p.columns) != (first.rows, first.columns) or not (
                np.allclose(p.row_dir, first.row_dir, atol=1e-4) and np.allclose(p.col_dir, first.col_dir, atol=1e-4)
                and np.allclose(p.spacing, first.spacing, atol=1e-6)):
            raise SpinedxError("the T2 images differ in size, orientation or pixel spacing; one Parametric Map cannot "
                               "cover them", where=str(p.path))
    src = [headers[p.path] for p in planes]
    if any(not str(ds.get("FrameOfReferenceUID", "") or "") for ds in src):
        raise NoFrameOfReference("the T2 images have no FrameOfReferenceUID: no Parametric Map (a viewer could not "
                                 "place it on them)", where=str(first.path))
    frames = []
    for p in planes:
        k = canonical_slice(image, p)
        if k in lesion:
            i, _ = lesion[k]
            frames.append(heat_on_plane(slice_heat[i], image, p, k))
        else:
            frames.append(np.zeros((p.rows, p.columns), dtype=np.float32))
    pixels = np.stack(frames).astype(np.float32)
    orientation = hd.PlaneOrientationSequence("PATIENT", [*first.row_dir.tolist(), *first.col_dir.tolist()])
    thickness = src[0].get("SliceThickness")
    measures = hd.PixelMeasuresSequence(pixel_spacing=[float(first.spacing[0]), float(first.spacing[1])],
                                        slice_thickness=float(thickness) if thickness else float(image.spacing[2]))
    positions = [hd.PlanePositionSequence("PATIENT", p.position.tolist()) for p in planes]
    method = method_info(content.heatmap_method)
    caption = method_caption(method.name)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="HEAT", lut_explanation=f"{method.label} heat, 0-1 (unitless)"[:64],
        unit=dcm_codes.UCUM.NoUnits, value_range=(0.0, 1.0), slope=1.0, intercept=0.0)
    unique = {str(ds.SOPInstanceUID): ds for ds in src}  # the frames of one Enhanced MR file: one source
    pm = hd.pm.ParametricMap(
        source_images=[_source_dataset(ds, identity) for ds in unique.values()],
        pixel_array=pixels,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="spinedx",
        software_versions=content.algorithm.version,
        device_serial_number=content.algorithm.model_hash[:16],
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="HEATMAP",
        content_description=f"spinedx {method.label} heatmap ({RESEARCH_USE_ONLY})"[:64],
        pixel_measures=measures,
        plane_orientation=orientation,
        plane_positions=positions,
        series_description=f"spinedx {method.label} heatmap over T2 (research use only)"[:64],
    )
    for kw in ("SpecificCharacterSet", "IssuerOfPatientID", "PatientIdentityRemoved", "DeidentificationMethod"):
        if kw in identity:
            pm[kw] = identity[kw]
    if str(src[0].get("BodyPartExamined", "") or ""):
        pm.BodyPartExamined = src[0].BodyPartExamined
    else:
        pm.Laterality = ""  # Type 2C without a body part (PS3.3 C.7.3.1): unknown, never invented (as the overlays)
    pm.DerivationDescription = (f"{caption} of the malignant output (mean of {len(content.per_model)} fold models' "
                                f"maps) on the T2 lesion slices {', '.join(map(str, content.slice_index))}, placed on "
                                f"the stored images; model sha256 {content.algorithm.model_hash[:16]}")[:1024]
    return pm
