"""PACS workflows over DICOMweb: predict a study on the server and send the results back; index a server.

:func:`predict_study` is the whole round trip of ``spinedx predict --dicomweb URL --study UID [--store]``:
QIDO-RS to find the series (T1W/T2W chosen as ``spinedx index`` does when their UIDs are not given), WADO-RS to
fetch them into a temporary folder (removed afterwards: patient images are not left behind), the prediction,
its DICOM results (:func:`spinedx.interop.write_dicom_results`), the SR naming the server's earlier spinedx SR of
the study as its predecessor (:mod:`spinedx.interop.publish`) and, with ``store``, STOW-RS back into the study.
:func:`index_server` lists a server's studies as ``spinedx index`` lists a folder; its draft manifest and ``index.json``
are written by the folder's writer, :func:`spinedx.studyindex.write_index`.

The URL recorded (``prediction.json``, ``index.json``, the index's ``root``) is the service root without user-info
(:func:`spinedx.common.redact_url`): credentials are used for the requests and never written.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.common import redact_url
from spinedx.interop.dicomweb import DicomWebAuth, DicomWebClient


@dataclass
class PacsPrediction:
    """The outcome of :func:`predict_study`.

    Attributes:
        prediction: the :class:`spinedx.predict.CasePrediction`.
        results: the DICOM results written (:class:`spinedx.interop.DicomResults`).
        study_uid: the study predicted.
        t1_series_uid: the T1W series used.
        t2_series_uid: the T2W series used.
        stored: SOPInstanceUIDs sent back with STOW-RS (empty without ``store``).
        seconds: wall time of each step (``query_retrieve``, ``predict``, ``dicom``, ``store``).
        supersedes: the server's earlier spinedx SR of the study that this prediction's SR supersedes (None: none).
    """

    prediction: Any
    results: Any
    study_uid: str
    t1_series_uid: str
    t2_series_uid: str
    stored: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    supersedes: Any = None


def predict_study(
    model: str | Path,
    url: str,
    study_uid: str,
    lesion_slices: str | Sequence[int],
    box: str | Sequence[int],
    out_dir: str | Path,
    *,
    t1_series: str | None = None,
    t2_series: str | None = None,
    store: bool = False,
    auth: DicomWebAuth | None = None,
    timeout: float | tuple[float, float] = (5.0, 30.0),
    register: bool | None = None,
    patient_id: str | None = None,
    engine: str = "torch",
) -> PacsPrediction:
    """Predict one study held by a DICOMweb server, write its DICOM results, and optionally store them there.

    Args:
        model: run folder (or model bundle) to predict with.
        url: DICOMweb root of the server.
        study_uid: StudyInstanceUID.
        lesion_slices: T2 lesion slices on spinedx's canonical grid (as for ``spinedx predict``).
        box: lesion box ``x0,y0,x1,y1`` on that grid.
        out_dir: where ``prediction.json``, the PNG overlays and ``dicom/`` go.
        t1_series: T1W SeriesInstanceUID (None: chosen by ``select_t1_t2_series``).
        t2_series: T2W SeriesInstanceUID (None: chosen by ``select_t1_t2_series``).
        store: send the SR and the overlays back with STOW-RS.
        auth: credentials.
        timeout: connect/read timeout of each request (seconds).
        register: force the T2->T1 registration on/off (None: as the run).
        patient_id: name of the case in the outputs (default: the study's PatientID).
        engine: ``torch`` or ``onnx`` (a bundle's ONNX graph), as for :func:`spinedx.predict.predict_case`.

    Raises:
        DicomWebError: server unreachable, HTTP error, study or series missing, ambiguous series.
        SpinedxError: the prediction's own errors (bad slices/box, unreadable series, ...).
    """
    from spinedx.common import json_clean
    from spinedx.errors import SpinedxError
    from spinedx.fsutil import atomic_write_json
    from spinedx.predict import predict_case

    client = DicomWebClient(url, auth=auth, timeout=timeout)
    out = Path(out_dir)
    secs: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="spinedx-dicomweb-") as tmp:
        t0 = time.perf_counter()
        fetched = client.fetch_for_prediction(study_uid, tmp, t1_series=t1_series, t2_series=t2_series)
        secs["query_retrieve"] = time.perf_counter() - t0
        if patient_id is None:
            import pydicom

            first = next(fetched.t2.iterdir())
            patient_id = str(pydicom.dcmread(first, stop_before_pixels=True).get("PatientID", "") or "case")
        t0 = time.perf_counter()
        # predict_case writes prediction.json, the PNG overlays and, the inputs being DICOM, OUT/dicom/
        pred = predict_case(model, fetched.t1, fetched.t2, lesion_slices, box, out, register=register,
                            patient_id=patient_id, engine=engine)
        secs["predict"] = time.perf_counter() - t0
    results = pred.dicom
    if results is None:  # cannot happen for series fetched over DICOMweb; refuse rather than store nothing
        raise SpinedxError("the prediction wrote no DICOM results", where=str(out))
    # prediction.json names the temporary download folders; say where the images really came from.
    # ("select_series" is the recorded value of an automatic choice, kept for readers of prediction.json; the
    # function is spinedx.studyindex.select_t1_t2_series)
    source = {"url": redact_url(client.url), "study_uid": study_uid, "t1_series_uid": fetched.t1_series_uid,
              "t2_series_uid": fetched.t2_series_uid,
              "series_chosen_by": "select_series" if fetched.selection is not None else "caller"}
    pred.record["inputs"].update({"t1": None, "t2": None, "t1_series_uid": fetched.t1_series_uid,
                                  "t2_series_uid": fetched.t2_series_uid, "dicomweb": source})
    # A repeated prediction of the study supersedes the server's latest spinedx SR of it (interop.publish: the
    # server, not the output folder, is the record every run shares).
    from spinedx.interop.publish import latest_spinedx_sr, set_predecessor
    from spinedx.interop.sr import SRReference

    previous = latest_spinedx_sr(client, study_uid)
    if previous is not None:
        set_predecessor(results.sr, previous)
    pred.record["dicom_results"]["supersedes"] = None if previous is None else previous.to_dict()
    stored: list[str] = []
    if store:
        t0 = time.perf_counter()
        stored = client.store(results.files)
        secs["store"] = time.perf_counter() - t0
        pred.record["dicom_results"]["stored"] = {
            "url": redact_url(client.url), "sop_instance_uids": stored,
            "sr": SRReference(results.study_instance_uid, results.sr_series_uid, results.sr_sop_instance_uid).to_dict()}
    atomic_write_json(out / "prediction.json", json_clean(pred.record), indent=2)
    return PacsPrediction(pred, results, study_uid, fetched.t1_series_uid, fetched.t2_series_uid, stored, secs,
                          previous)


def index_server(url: str, options: Any = None, *, auth: DicomWebAuth | None = None,
                 timeout: float | tuple[float, float] = (5.0, 30.0), **filters: Any) -> Any:
    """Index a DICOMweb server as ``spinedx index`` indexes a folder: one entry per study with its T1W/T2W.

    Args:
        url: DICOMweb root.
        options: :class:`spinedx.studyindex.SelectionOptions`.
        auth: credentials.
        timeout: per request.
        filters: QIDO-RS study filters (e.g. ``PatientID="P001"``).

    Returns:
        A :class:`spinedx.studyindex.TreeIndex` whose ``root`` is the URL (series have no files:
        :func:`spinedx.studyindex.write_index` writes rows that name the study and the chosen series).
    """
    from spinedx.studyindex import SelectionOptions, StudyEntry, TreeIndex, select_t1_t2_series
    from spinedx.studyindex.scan import case_keys

    opts = options or SelectionOptions()
    client = DicomWebClient(url, auth=auth, timeout=timeout)
    t0 = time.perf_counter()
    studies = client.list_studies(**filters)
    keys = case_keys([(st.patient_id, st.study_date, st.study_uid) for st in studies])  # as for a folder
    entries: list[StudyEntry] = []
    for key, st in sorted(zip(keys, studies, strict=True), key=lambda it: it[0]):
        headers = client.series_headers(st.study_uid)
        entries.append(StudyEntry(key, st.patient_id, st.study_uid, st.study_date, headers,
                                  select_t1_t2_series(headers, opts)))
    n_instances = sum(h.n_instances for e in entries for h in e.series)
    return TreeIndex(redact_url(client.url), entries, n_files=n_instances, n_dicom=n_instances,
                     seconds=time.perf_counter() - t0, options=opts)
