"""Heatmap overlays (explain.DEFAULT_METHOD) as DICOM Secondary Capture images (PS3.3 A.8.1), one per lesion slice.

Each image is the whole T2 lesion slice as spinedx sees it (the canonical grid of :func:`spinedx.io.read_image`,
windowed to its 1st-99th percentile), the heatmap of that slice placed back on the crop it was computed on
(opacity rising with the heat, as in the PNG overlays), the lesion box outlined, and a burned-in line saying
what it is and that it is for research use only. The image carries PatientOrientation (from the image's
axes), BodyPartExamined from the source (validators then need no Laterality) and a SourceImageSequence entry
pointing at the stored T2 image of that slice. Without a BodyPartExamined in the source, Laterality is
present and empty (unknown), which the IOD then requires.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

from spinedx import RESEARCH_USE_ONLY
from spinedx.interop.content import ResultContent
from spinedx.interop.geometry import PlaneBox, orientation_letters
from spinedx.interop.sr import MANUFACTURER

#: Colour of the box outline (RGB).
BOX_RGB = (0, 255, 0)


def heat_on_slice(heatmap: np.ndarray, image: Any, box: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """The crop-grid heatmap ``(P, P)`` resampled onto the whole canonical slice ``(ny, nx)``; 0 outside the crop.

    Inverts :func:`spinedx.preprocess.mapping.crop_grid`: heat pixel ``c`` has its centre at column
    ``gx[c]`` of the slice, so slice column ``j`` is heat column ``(j - gx[0]) / (gx[1] - gx[0])``.
    """
    from spinedx.preprocess.mapping import crop_grid

    heat = np.asarray(heatmap, dtype=np.float64)
    p = heat.shape[0]
    grid = crop_grid(image, box, p, margin)
    gx, gy = grid.x[0, :], grid.y[:, 0]
    ny, nx = image.shape[1], image.shape[2]
    cc = (np.arange(nx) - gx[0]) / (gx[1] - gx[0])
    rr = (np.arange(ny) - gy[0]) / (gy[1] - gy[0])
    r2, c2 = np.meshgrid(rr, cc, indexing="ij")
    out = ndimage.map_coordinates(heat, [r2, c2], order=1, mode="nearest", prefilter=False)
    inside = (r2 >= -0.5) & (r2 <= p - 0.5) & (c2 >= -0.5) & (c2 <= p - 0.5)
    return np.where(inside, np.clip(out, 0.0, 1.0), 0.0)


def render_overlay(slice_px: np.ndarray, heat: np.ndarray, box: tuple[int, int, int, int], text: str) -> np.ndarray:
    """RGB uint8 ``(ny, nx, 3)``: the windowed slice, the heat in the jet colour map, the box, a text line.

    The pixels are :mod:`spinedx.explain.render`'s, as in the PNG overlays; the text is drawn at about a 46th of
    the image height (at least 6 pixels), smaller where its longest line would not fit the width.
    """
    from PIL import Image

    from spinedx.explain.render import blend_heat, draw_label, font, window

    out = blend_heat(window(slice_px), heat)
    x0, y0, x1, y1 = (int(v) for v in box)
    ny, nx = out.shape[:2]
    xa, xb, ya, yb = max(x0, 0), min(x1, nx) - 1, max(y0, 0), min(y1, ny) - 1
    out[ya:yb + 1, [xa, xb]] = BOX_RGB
    out[[ya, yb], xa:xb + 1] = BOX_RGB
    size = max(6, round(ny / 46))
    while size > 6 and max(font(size).getlength(line) for line in text.splitlines()) > nx - 8:
        size -= 1
    img = Image.fromarray(out)
    draw_label(img, (3, 3), text, size, background=(0, 0, 0))
    return np.asarray(img)


def _decision_words(content: ResultContent) -> str:
    d = content.decision
    if d.decision == "refer":
        return f"refer ({d.reasons_text})"
    return f"{d.decision} at {content.threshold:g}"


def build_overlays(
    content: ResultContent,
    image: Any,
    boxes: list[PlaneBox],
    identity: Dataset,
    source: Any,
    *,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uids: list[str],
    slice_heat: list[np.ndarray],
) -> list[Any]:
    """One Secondary Capture per lesion slice (``content.heatmaps`` must be set).

    Args:
        content: what to show.
        image: the canonical T2 image.
        boxes: the box on each stored T2 lesion image (for SourceImageSequence).
        identity: patient/study identifiers (:func:`spinedx.interop.identity.identity_of`).
        source: one source T2 dataset (BodyPartExamined).
        series_instance_uid: the overlays' new series.
        series_number: its SeriesNumber.
        sop_instance_uids: one instance UID per overlay.
        slice_heat: each lesion slice's heat on its whole slice (:func:`heat_on_slice`; computed once by the caller for
            the captures and the map).
    """
    from highdicom.sc import SCImage

    from spinedx.explain import method_caption, method_info

    if content.heatmaps is None or not content.heatmap_method:
        raise ValueError("the prediction has no heatmaps (predict with explain=True)")
    method = method_info(content.heatmap_method)
    caption = method_caption(method.name)
    row_dir, col_dir = image.direction[:, 0], image.direction[:, 1]
    orientation = (orientation_letters(row_dir), orientation_letters(col_dir))
    out = []
    for i, (k, pb) in enumerate(zip(content.slice_index, boxes, strict=True)):
        text = (f"spinedx {method.label}, T2 slice {k + 1}: p(malignant) {content.slice_probability[i]:.3f}\n"
                f"patient {content.probability:.3f}: {_decision_words(content)}\n"
                f"{'TRAINED ON A SYNTHETIC COHORT; ' if content.decision.synthetic else ''}"
                f"{RESEARCH_USE_ONLY.upper()}")
        px = render_overlay(image.array[k], slice_heat[i], content.box, text)
        sc = SCImage(
            pixel_array=px, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            study_instance_uid=str(identity.StudyInstanceUID), series_instance_uid=series_instance_uid,
            series_number=series_number, sop_instance_uid=sop_instance_uids[i], instance_number=i + 1,
            manufacturer=MANUFACTURER, patient_id=str(identity.PatientID), patient_name=identity.PatientName,
            patient_birth_date=str(identity.PatientBirthDate), patient_sex=str(identity.PatientSex) or None,
            accession_number=str(identity.AccessionNumber), study_id=str(identity.StudyID),
            study_date=str(identity.StudyDate) or None, study_time=str(identity.StudyTime) or None,
            referring_physician_name=identity.ReferringPhysicianName, patient_orientation=orientation,
            series_description=f"spinedx {method.label} overlays (research use only)"[:64],
            manufacturer_model_name="spinedx", software_versions=content.algorithm.version,
        )
        for kw in ("SpecificCharacterSet", "IssuerOfPatientID", "PatientIdentityRemoved", "DeidentificationMethod"):
            if kw in identity:
                sc[kw] = identity[kw]
        if str(source.get("BodyPartExamined", "") or ""):
            sc.BodyPartExamined = source.BodyPartExamined
        else:
            # Without a body part, Laterality (Type 2C, PS3.3 C.7.3.1) is required; empty says "unknown" rather
            # than inventing a side or a body part the source does not state.
            sc.Laterality = ""
        ref = Dataset()
        ref.ReferencedSOPClassUID = pb.plane.sop_class_uid
        ref.ReferencedSOPInstanceUID = pb.plane.sop_instance_uid
        if pb.plane.frame is not None:
            ref.ReferencedFrameNumber = pb.plane.frame
        sc.SourceImageSequence = [ref]
        sc.DerivationDescription = (f"{caption} of the malignant output (mean of {len(content.per_model)} fold "
                                    f"models' maps) over T2 slice {k + 1} (numbered from 1), "
                                    f"model sha256 {content.algorithm.model_hash[:16]}")[:1024]
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = f"{RESEARCH_USE_ONLY}; {caption} of the malignant output"
        out.append(sc)
    return out
