"""``write_dicom_results``: a prediction as DICOM objects that join the source study (SR + heatmaps).

One call from :func:`spinedx.predict.predict_case` (or any caller holding a prediction and its two DICOM
series) writes ``OUT/dicom/sr.dcm`` (TID 1500 Comprehensive 3D SR, :mod:`spinedx.interop.sr`) and, with heatmaps,
``OUT/dicom/heatmap_pmap.dcm`` (Parametric Map over the T2 images, :mod:`spinedx.interop.pmap`: what a viewer lays
over the MR) and ``OUT/dicom/gradcam_sliceKKK.dcm`` (Secondary Captures, :mod:`spinedx.interop.sc`: the same maps
burned into a picture with the probability and "research use only", for viewers without Parametric Map support),
each in a new series of the source study. The folder is written whole or not at all
(:func:`spinedx.fsutil.atomic_dir`).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError
from spinedx.interop.content import ResultContent, content_from_prediction

#: Series numbers of the result series (high, so they sort after the acquired series in a viewer).
SR_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
PMAP_SERIES_NUMBER = 9903
#: Sub-folder of a prediction's output folder that holds the DICOM results.
DICOM_DIR = "dicom"
#: File name of the Parametric Map in it.
PMAP_FILE = "heatmap_pmap.dcm"

_DEVICE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/spinedx/device")


@dataclass
class DicomResults:
    """The DICOM objects written for one prediction.

    Attributes:
        folder: the folder holding them.
        sr: the structured report.
        overlays: the heatmap Secondary Captures, in lesion-slice order.
        study_instance_uid: the source (and results') study.
        sr_series_uid: the SR's series.
        overlay_series_uid: the overlays' series (None without overlays).
        referenced: SOPInstanceUID of the stored T2 image of each lesion slice.
        pmap: the heatmaps as a Parametric Map over the T2 (None without heatmaps).
        pmap_series_uid: its series.
        sr_sop_instance_uid: the SR's SOPInstanceUID.
        pmap_note: why there is no Parametric Map although there are heatmaps (None otherwise).
    """

    folder: Path
    sr: Path
    overlays: list[Path] = field(default_factory=list)
    study_instance_uid: str = ""
    sr_series_uid: str = ""
    overlay_series_uid: str | None = None
    referenced: list[str] = field(default_factory=list)
    pmap: Path | None = None
    pmap_series_uid: str | None = None
    sr_sop_instance_uid: str = ""
    pmap_note: str | None = None

    @property
    def files(self) -> list[Path]:
        """Every file written (SR first, then the Parametric Map, then the Secondary Captures)."""
        return [self.sr, *([self.pmap] if self.pmap is not None else []), *self.overlays]

    def describe(self) -> str:
        """One line for the console: what was written, into which study."""
        heat = "" if self.pmap is None else f" + heatmap Parametric Map {self.pmap}"
        note = f" (no Parametric Map: {self.pmap_note})" if self.pmap_note else ""
        return (f"{self.sr} (TID 1500 SR){heat} + {len(self.overlays)} overlay Secondary Capture(s){note}, "
                f"study {self.study_instance_uid}")

    def summary(self) -> dict[str, Any]:
        """What ``prediction.json`` records about them (paths relative to the prediction folder)."""
        base = self.folder.name
        return {"sr": f"{base}/{self.sr.name}", "overlays": [f"{base}/{p.name}" for p in self.overlays],
                "pmap": None if self.pmap is None else f"{base}/{self.pmap.name}", "pmap_note": self.pmap_note,
                "study_instance_uid": self.study_instance_uid, "sr_series_uid": self.sr_series_uid,
                "sr_sop_instance_uid": self.sr_sop_instance_uid, "overlay_series_uid": self.overlay_series_uid,
                "pmap_series_uid": self.pmap_series_uid, "referenced_t2_sop_instance_uids": self.referenced}

    def relocated(self, folder: Path) -> DicomResults:
        """The same results after their folder was moved to ``folder``."""
        return replace(self, folder=folder, sr=folder / self.sr.name, overlays=[folder / p.name for p in self.overlays],
                       pmap=None if self.pmap is None else folder / self.pmap.name, referenced=list(self.referenced))


def device_uid(model_hash: str) -> str:
    """UID of the observing device for a model: the same model is the same device in every report (PS3.5 B.2)."""
    return "2.25." + str(uuid.uuid5(_DEVICE_NAMESPACE, model_hash).int)


def _image(img: Any, series_uid: str | None, where: str, allow_modality: Sequence[str] = ()) -> Any:
    from spinedx.io import Image, ImageReadWarning, read_image

    if isinstance(img, Image):
        return img
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageReadWarning)  # said once, when the prediction read the series
        return read_image(img, series_uid, where=where, allow_modality=allow_modality)


def write_dicom_results(
    prediction: Any,
    t1: Any,
    t2: Any,
    out_dir: str | Path,
    *,
    t1_series_uid: str | None = None,
    t2_series_uid: str | None = None,
    model_hash: str | None = None,
    content: ResultContent | None = None,
    predecessor: Any = None,
) -> DicomResults:
    """Write the SR, the heatmap Parametric Map and Secondary Captures of a prediction into ``out_dir/dicom``.

    Args:
        prediction: a :class:`spinedx.predict.CasePrediction` (ignored when ``content`` is given).
        t1: the T1 series (an :class:`spinedx.io.Image` read from DICOM, or its path).
        t2: the T2 series the box and slices refer to (Image or path).
        out_dir: the prediction's output folder.
        t1_series_uid: SeriesInstanceUID when ``t1`` is a folder of several series.
        t2_series_uid: the same for ``t2``.
        model_hash: the models' fingerprint; None: computed from the prediction's run folder.
        content: the values to write, when not taken from ``prediction``.
        predecessor: the earlier SR of this case that this one supersedes (:class:`spinedx.interop.sr.SRReference`).

    Returns:
        What was written (:class:`DicomResults`).

    Raises:
        SpinedxError: the inputs are not DICOM, T1 and T2 belong to different studies, or a lesion slice or
            box cannot be placed on a stored T2 image.
    """
    import highdicom as hd

    from spinedx.fsutil import atomic_dir
    from spinedx.interop.geometry import locate_box, stored_planes
    from spinedx.interop.identity import check_same_study, identity_of, reference_dataset
    from spinedx.interop.pmap import NoFrameOfReference, build_parametric_map
    from spinedx.interop.sc import build_overlays, heat_on_slice
    from spinedx.interop.sr import build_sr

    if content is None:
        content = content_from_prediction(prediction, model_hash=model_hash)
    t2_img = _image(t2, t2_series_uid, "t2")
    t1_img = _image(t1, t1_series_uid, "t1")
    h1: dict[Path, Any] = {}
    h2: dict[Path, Any] = {}
    stored_planes(t1_img, where="t1", headers=h1)
    planes = stored_planes(t2_img, where="t2", headers=h2)
    first_t2 = next(iter(h2.values()))
    check_same_study(next(iter(h1.values())), first_t2, where="t1/t2")
    boxes = [locate_box(t2_img, planes, content.box, k, where="t2") for k in content.slice_index]
    identity = identity_of(first_t2)
    if not str(identity.get("StudyInstanceUID", "")):
        raise SpinedxError("the source series has no StudyInstanceUID; results cannot join its study", where="t2")
    # Evidence: every source instance (both series were used); the first, a T2 lesion image, carries the identity.
    lead = boxes[0].plane.path
    ordered = [h2[lead]] + [ds for p, ds in h2.items() if p != lead] + list(h1.values())
    evidence = [reference_dataset(ds, identity if i == 0 else None) for i, ds in enumerate(ordered)]

    sr = build_sr(content, boxes, evidence, series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(),
                  series_number=SR_SERIES_NUMBER, device_uid=device_uid(content.algorithm.model_hash),
                  predecessor=predecessor)
    overlays = []
    overlay_series = pmap_series = pm = pmap_note = None
    if content.heatmaps is not None:
        overlay_series = hd.UID()
        # each lesion slice's heat on the whole slice, once for the overlays and the map
        slice_heat = [heat_on_slice(h, t2_img, content.box, content.margin) for h in content.heatmaps]
        overlays = build_overlays(content, t2_img, boxes, identity, first_t2, series_instance_uid=overlay_series,
                                  series_number=OVERLAY_SERIES_NUMBER,
                                  sop_instance_uids=[hd.UID() for _ in content.slice_index], slice_heat=slice_heat)
        try:
            pm = build_parametric_map(content, t2_img, boxes, identity, h2, series_instance_uid=hd.UID(),
                                      series_number=PMAP_SERIES_NUMBER, sop_instance_uid=hd.UID(),
                                      slice_heat=slice_heat, all_planes=planes)
            pmap_series = str(pm.SeriesInstanceUID)
        except NoFrameOfReference as exc:
            pmap_note = exc.one_line()  # said in prediction.json; the SR and the overlays do not need one
    folder = Path(out_dir) / DICOM_DIR
    with atomic_dir(folder) as tmp:
        sr.save_as(tmp / "sr.dcm", enforce_file_format=True)
        if pm is not None:
            pm.save_as(tmp / PMAP_FILE, enforce_file_format=True)
        names = []
        for k, sc in zip(content.slice_index, overlays, strict=False):  # no overlays without heatmaps
            name = f"gradcam_slice{k:03d}.dcm"
            sc.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
    return DicomResults(folder, folder / "sr.dcm", [folder / n for n in names], str(identity.StudyInstanceUID),
                        str(sr.SeriesInstanceUID), overlay_series, [b.plane.sop_instance_uid for b in boxes],
                        pmap=None if pm is None else folder / PMAP_FILE, pmap_series_uid=pmap_series,
                        sr_sop_instance_uid=str(sr.SOPInstanceUID), pmap_note=pmap_note)


def write_dicom_results_if_dicom(prediction: Any, t1: Any, t2: Any, out_dir: str | Path, *,
                                 t1_series_uid: str | None = None, t2_series_uid: str | None = None,
                                 model_hash: str | None = None,
                                 allow_modality: Sequence[str] = ()) -> DicomResults | None:
    """:func:`write_dicom_results` when both inputs are DICOM series; None (nothing written) for other formats.

    This is the one call :func:`spinedx.predict.predict_case` makes: a NIfTI or NRRD case has no study to join,
    so it gets ``prediction.json`` and the PNG overlays only.
    """
    t1_img = _image(t1, t1_series_uid, "t1", allow_modality)  # allow_modality: as the prediction read them
    t2_img = _image(t2, t2_series_uid, "t2", allow_modality)
    if t1_img.meta.get("format") != "dicom" or t2_img.meta.get("format") != "dicom":
        return None
    return write_dicom_results(prediction, t1_img, t2_img, out_dir, model_hash=model_hash)


def warm() -> None:
    """Load what the first DICOM result of a process would otherwise load: highdicom and pydicom's code
    dictionaries and highdicom's table of IOD module attributes, read from JSON when the first object is made
    (about 0.5 s together). A server calls this at start so the first user's Predict does not pay for it."""
    import highdicom as hd
    import highdicom.pm  # noqa: F401
    import highdicom.sr  # noqa: F401
    import numpy as np

    from spinedx.interop.sr import MANUFACTURER

    hd.sc.SCImage(pixel_array=np.zeros((2, 2, 3), np.uint8), photometric_interpretation="RGB", bits_allocated=8,
                  coordinate_system="PATIENT", study_instance_uid=hd.UID(), series_instance_uid=hd.UID(),
                  series_number=1, sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
                  patient_orientation=("A", "F"))
