"""Results into the PACS: which earlier SR a new one supersedes, storing a workstation prediction, purging copies.

A repeated prediction of a case is a revision of its result, not an unrelated report: its SR names the SR it
supersedes in the Predecessor Documents Sequence (PS3.3 C.17.2.3, Hierarchical SOP Instance Reference Macro),
set with :func:`set_predecessor` on the SR that ``predict_case`` wrote, before it leaves spinedx. Which SR that is:

* ``spinedx predict --dicomweb --store`` asks the server (:func:`latest_spinedx_sr`: QIDO-RS for the study's SR
  series, then their instances' metadata): the server is the record every user and machine shares, while an
  output folder is usually new for each run (``--out`` refuses a folder it did not write) and would miss an SR
  stored from another folder, another machine or the workstation.
* The workstation (``spinedx serve --dicomweb``) keeps it per case in its prediction store
  (``<manifest>.predictions/<case>/prediction.json``, ``dicom_results.supersedes`` and ``.stored``) and asks the
  server only for a case it has never stored (an SR stored by ``predict --store`` or another workstation is then
  superseded too): :func:`store_workstation_prediction`.

A spinedx SR is recognised by its Manufacturer (:data:`spinedx.interop.sr.MANUFACTURER`) and SOP class; of several,
the one no other supersedes is taken, the latest by content date and time when there are several such.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError
from spinedx.interop.sr import COMPREHENSIVE_3D_SR, MANUFACTURER, SRReference


def set_predecessor(sr_path: str | Path, predecessor: SRReference) -> None:
    """Name ``predecessor`` in the SR's Predecessor Documents Sequence (PS3.3 C.17.2.3), rewriting the file whole.

    Only an SR that has not left spinedx yet is amended (its SOP Instance UID is its own, unpublished).

    Raises:
        SpinedxError: the file is not an SR, the predecessor belongs to another study, or is the SR itself.
    """
    import pydicom
    from pydicom.dataset import Dataset

    from spinedx.fsutil import atomic_path

    path = Path(sr_path)
    ds = pydicom.dcmread(path)
    if str(ds.get("Modality", "")) != "SR":
        raise SpinedxError("not a structured report", where=str(path))
    if predecessor.study_instance_uid != str(ds.StudyInstanceUID):
        raise SpinedxError(f"the SR to supersede ({predecessor.sop_instance_uid}) belongs to study "
                           f"{predecessor.study_instance_uid}, not to this SR's study {ds.StudyInstanceUID}",
                           where=str(path))
    if predecessor.sop_instance_uid == str(ds.SOPInstanceUID):
        raise SpinedxError("an SR cannot supersede itself", where=str(path))
    sop = Dataset()
    sop.ReferencedSOPClassUID = predecessor.sop_class_uid
    sop.ReferencedSOPInstanceUID = predecessor.sop_instance_uid
    series = Dataset()
    series.SeriesInstanceUID = predecessor.series_instance_uid
    series.ReferencedSOPSequence = [sop]
    item = Dataset()
    item.StudyInstanceUID = predecessor.study_instance_uid
    item.ReferencedSeriesSequence = [series]
    ds.PredecessorDocumentsSequence = [item]
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _json_value(obj: dict[str, Any], tag: str) -> Any:
    vals = (obj.get(tag) or {}).get("Value") or []
    return vals[0] if vals else None


def latest_spinedx_sr(client: Any, study_uid: str) -> SRReference | None:
    """The study's most recent spinedx SR on the server, the one a new prediction of the study supersedes.

    QIDO-RS lists the study's SR series (``Modality=SR``); WADO-RS gives each instance's metadata (no pixel data
    exists in an SR). spinedx's Comprehensive 3D SRs (by Manufacturer) that no other supersedes are the candidates;
    the latest by ContentDate/ContentTime wins.

    Returns:
        None when the study holds no spinedx SR.

    Raises:
        DicomWebError: the server fails a request.
    """
    rows = client.search_series(study_uid, Modality="SR")
    found: list[dict[str, Any]] = []
    for row in rows:
        series_uid = _json_value(row, "0020000E")
        if series_uid:
            found += client.series_metadata(study_uid, str(series_uid))
    ours = [m for m in found if _json_value(m, "00080070") == MANUFACTURER
            and _json_value(m, "00080016") == COMPREHENSIVE_3D_SR]
    superseded = set()
    for m in ours:
        for item in (m.get("0040A360") or {}).get("Value") or []:
            for series in (item.get("00081115") or {}).get("Value") or []:
                for sop in (series.get("00081199") or {}).get("Value") or []:
                    superseded.add(_json_value(sop, "00081155"))
    heads = [m for m in ours if _json_value(m, "00080018") not in superseded]
    if not heads:
        return None
    best = max(heads, key=lambda m: (str(_json_value(m, "0040A032") or ""),  # ObservationDateTime (rare)
                                     str(_json_value(m, "00080023") or ""), str(_json_value(m, "00080033") or "")))
    return SRReference(study_uid, str(_json_value(best, "0020000E")), str(_json_value(best, "00080018")),
                       COMPREHENSIVE_3D_SR)


def _own_sr(doc: dict[str, Any]) -> SRReference | None:
    """The SR a ``prediction.json`` document's prediction wrote (None: no DICOM results, or an older document that
    does not record its SR's instance UID)."""
    res = doc.get("dicom_results") or {}
    if not res.get("sr_sop_instance_uid"):
        return None
    return SRReference(str(res["study_instance_uid"]), str(res["sr_series_uid"]), str(res["sr_sop_instance_uid"]))


def previous_sr(doc: dict[str, Any] | None, *, store: bool) -> SRReference | None:
    """The SR a case's next prediction supersedes, from its last ``prediction.json`` (the workstation's store).

    Storing, it is the last SR stored for the case: the last prediction's own when it was stored, else the one
    that prediction would have superseded (a prediction without heatmaps, shown first on the page, is not stored).
    Not storing (``--no-store``), it is the last SR written for the case.
    """
    if not doc:
        return None
    res = doc.get("dicom_results") or {}
    if not store:
        return _own_sr(doc)
    stored = (res.get("stored") or {}).get("sr")
    if stored:
        return SRReference.from_dict(stored)
    sup = res.get("supersedes")
    return SRReference.from_dict(sup) if sup else None


def store_workstation_prediction(state: Any, case_key: str, out_dir: Path, prediction: Any) -> dict[str, Any] | None:
    """The workstation's hook after a prediction was written into ``out_dir`` (the case's new prediction folder,
    not yet in place): name the SR it supersedes and, browsing a DICOMweb server with storing on, send the SR,
    the Parametric Map and the Secondary Captures into the study (STOW-RS).

    Only complete results are stored: a prediction with heatmaps (``/explain``, or ``/predict?explain=true``), which
    is what the page's Predict asks for (one request): one SR, one map and its overlays per Predict. A prediction
    without heatmaps (an API client's ``/predict``) is kept locally and supersedes nothing on the server.

    Args:
        state: the server's :class:`spinedx.serve.state.AppState` (settings, datastore).
        case_key: the case.
        out_dir: the new prediction folder (``prediction.json`` and ``dicom/`` written by ``predict_case``).
        prediction: the :class:`spinedx.predict.CasePrediction`.

    Returns:
        What was recorded in ``prediction.json`` under ``dicom_results`` (None: the case has no DICOM results).

    Raises:
        DicomWebError: the server refused or failed the store (the prediction is then not kept: the route fails).
    """
    from spinedx.common import json_clean, redact_url
    from spinedx.fsutil import atomic_write_json

    results = getattr(prediction, "dicom", None)
    if results is None:
        return None
    settings = state.settings
    server = settings.dicomweb
    storing = bool(server) and bool(getattr(settings, "store", True))
    old_path = state.store.prediction_dir(case_key) / "prediction.json"
    old = _read_json(old_path)
    previous = previous_sr(old, store=storing)
    client = None
    if storing:
        from spinedx.interop.dicomweb import DicomWebAuth, DicomWebClient

        client = DicomWebClient(str(server), auth=DicomWebAuth.from_env(settings.dicomweb_user))
        if previous is None:  # never stored from this store: what the server holds (predict --store, elsewhere)
            previous = latest_spinedx_sr(client, results.study_instance_uid)
    sr_path = Path(out_dir) / results.folder.name / results.sr.name
    if previous is not None and previous.study_instance_uid == results.study_instance_uid:
        set_predecessor(sr_path, previous)
    else:
        previous = None
    record = prediction.record.setdefault("dicom_results", {})
    record["supersedes"] = None if previous is None else previous.to_dict()
    complete = prediction.heatmaps is not None
    if storing and complete and client is not None:
        files = [Path(out_dir) / results.folder.name / p.name for p in results.files]
        uids = client.store(files)
        record["stored"] = {"url": redact_url(client.url), "sop_instance_uids": uids,
                            "sr": SRReference(results.study_instance_uid, results.sr_series_uid,
                                              results.sr_sop_instance_uid).to_dict()}
    elif storing:
        record["stored"] = None
        record["not_stored"] = "a prediction without heatmaps is kept locally; the one with heatmaps is stored"
    else:
        record["stored"] = None
        record["not_stored"] = ("spinedx serve --no-store" if server else
                                "the cases are read from a folder, not a DICOMweb server")
    atomic_write_json(Path(out_dir) / "prediction.json", json_clean(prediction.record), indent=2)
    return dict(record)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def purge_workstation_cache(manifest: str | Path) -> str:
    """``spinedx serve --purge-cache``: remove the series the workstation retrieved for ``manifest`` (its
    ``<stem>.dicomweb/`` folder, :attr:`spinedx.serve.datastore.LocalDatastore.dicomweb_cache`).

    Returns:
        The line to print (what was removed, or that there was nothing).
    """
    manifest = Path(manifest)
    folder = manifest.with_name(manifest.stem + ".dicomweb")
    n_series, n_files = purge_dicomweb_cache(folder)
    if not (n_series or n_files) and not folder.exists():
        return f"nothing to remove: {folder} does not exist"
    return f"removed {folder}: {n_series} series, {n_files} files (the server's copies are untouched)"


def purge_dicomweb_cache(folder: str | Path) -> tuple[int, int]:
    """Remove the local copies of series retrieved from a DICOMweb server (``<manifest stem>.dicomweb/``).

    Only a folder laid out as the workstation writes it is removed: ``<study UID>/<series UID>/*.dcm`` (and hidden
    temporaries of an interrupted retrieval); anything else in it is refused by name, so a mistyped path never
    deletes files spinedx did not write.

    Returns:
        (series removed, files removed); (0, 0) when there is no such folder.

    Raises:
        SpinedxError: the folder holds something the workstation does not write there.
    """
    root = Path(folder)
    if not root.exists():
        return 0, 0
    if not root.is_dir() or root.is_symlink():
        raise SpinedxError("not a folder of retrieved series; remove it yourself if it is yours", where=str(root))
    n_series = n_files = 0
    for study in root.iterdir():
        if study.name.startswith("."):
            continue  # a retrieval's temporary folder (spinedx.fsutil.atomic_dir)
        if not study.is_dir() or study.is_symlink() or not _is_uid(study.name):
            raise SpinedxError(f"unexpected entry {study.name!r} (the cache holds <study UID>/<series UID>/*.dcm); "
                               "nothing was removed", where=str(root))
        for series in study.iterdir():
            if series.name.startswith("."):
                continue
            if not series.is_dir() or series.is_symlink() or not _is_uid(series.name):
                raise SpinedxError(f"unexpected entry {study.name + '/' + series.name!r}; nothing was removed",
                                   where=str(root))
            for f in series.iterdir():
                if not (f.is_file() and f.suffix == ".dcm") or f.is_symlink():
                    raise SpinedxError(f"unexpected entry {'/'.join((study.name, series.name, f.name))!r}; nothing "
                                       "was removed", where=str(root))
                n_files += 1
            n_series += 1
    shutil.rmtree(root)
    return n_series, n_files


def _is_uid(name: str) -> bool:
    return bool(name) and len(name) <= 64 and all(c.isdigit() or c == "." for c in name)
