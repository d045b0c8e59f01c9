"""The cases the workstation serves, and their annotations, behind one small interface.

Modelled on MONAI Label's datastore: the server asks a :class:`Datastore` for cases, images and annotations and
never touches files itself, so another store (DICOMweb) can stand behind the same interface. The local store
keeps everything in the cohort manifest (``spinedx.cohort``) next to which it writes:

* the manifest itself, atomically (:func:`spinedx.fsutil.atomic_path`), with every column it did not change
  (features, readers, a synthetic cohort's extra columns) kept as read;
* ``<manifest stem>.audit.jsonl``: one JSON line per save (UTC time, case key, fields changed with old and new
  values; no patient name, no DICOM identifiers);
* ``<manifest stem>.predictions/<case>/``: the last prediction of each case (``prediction.json`` and overlays).

A case's version is a hash of its manifest row; a save naming a stale version (``If-Match``) is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError


class NotFound(SpinedxError):
    """No such case or file (HTTP 404)."""


class Conflict(SpinedxError):
    """The annotation changed since the version the client started from (HTTP 409)."""


class InvalidInput(SpinedxError):
    """Bad annotation input (HTTP 422); the message is the one the CLI gives."""


@dataclass
class Annotation:
    """What the reader sets on a case (the manifest's annotation columns)."""

    label: str | None = None
    lesion_slices: tuple[int, ...] = ()
    box: tuple[int, int, int, int] | None = None
    features: dict[str, int] = field(default_factory=dict)
    readers: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "lesion_slices": list(self.lesion_slices),
                "box": list(self.box) if self.box else None, "features": dict(self.features),
                "readers": dict(self.readers)}


def _annotation(case: Any) -> Annotation:
    box = tuple(case.box) if any(case.box) else None
    return Annotation(case.label, tuple(case.lesion_slices), box, dict(case.features), dict(case.readers))


def row_version(case: Any) -> str:
    """A short hash of everything the manifest row holds (the ``ETag`` of the case)."""
    doc = {"patient_id": case.patient_id, "label": case.label, "t1": str(case.t1), "t2": str(case.t2),
           "t1_series_uid": case.t1_series_uid, "t2_series_uid": case.t2_series_uid,
           "lesion_slices": list(case.lesion_slices), "box": list(case.box), "features": case.features,
           "readers": case.readers, "extra": case.extra, "synthetic": case.synthetic,
           "lesion_mask": str(case.lesion_mask)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _inside(path: Path, roots: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == r or r in real.parents for r in roots)


class LocalDatastore:
    """Cases of one manifest on the local disk (optionally extended by an indexed DICOM tree or DICOMweb server).

    Args:
        manifest: the cohort manifest (``cohort.csv``); created by indexing ``dicom_root`` (or ``dicomweb``) when
            absent.
        dicom_root: a DICOM tree whose studies not yet in the manifest are added as draft rows.
        extra_roots: further folders images may come from.
        dicomweb: a DICOMweb server whose studies not yet in the manifest are added as draft rows (study and
            series UIDs, no paths); a case's series are retrieved with WADO-RS into ``<manifest stem>.dicomweb/``
            when first needed, whole or not at all, and read from there afterwards.
        dicomweb_auth: credentials for that server (:class:`spinedx.interop.dicomweb.DicomWebAuth`).
        allow_modality: image modalities indexed besides MR (``--allow-modality``).
    """

    def __init__(self, manifest: Path, dicom_root: Path | None = None, extra_roots: tuple[Path, ...] = (), *,
                 dicomweb: str | None = None, dicomweb_auth: Any = None, allow_modality: tuple[str, ...] = ()) -> None:
        self.allow_modality = allow_modality
        self.manifest = Path(os.path.abspath(Path(manifest).expanduser()))
        self.dicom_root = Path(os.path.realpath(dicom_root)) if dicom_root is not None else None
        self._lock = threading.RLock()
        self._cohort: Any = None
        self._mtime: float | None = None
        self.added_from_tree = 0
        self.dicomweb = dicomweb
        self._dicomweb_auth = dicomweb_auth
        self._dicomweb_client: Any = None
        self._fetch_lock = threading.Lock()
        if dicom_root is not None:
            self._merge_tree(Path(dicom_root))
        if dicomweb is not None:
            self._merge_server(dicomweb)
        self.roots = [Path(os.path.realpath(self.manifest.parent))]
        if self.dicom_root is not None:
            self.roots.append(self.dicom_root)
        self.roots += [Path(os.path.realpath(r)) for r in extra_roots]
        self._load()

    # -- paths --------------------------------------------------------------------------------------------
    @property
    def audit_path(self) -> Path:
        return self.manifest.with_name(self.manifest.stem + ".audit.jsonl")

    @property
    def predictions_dir(self) -> Path:
        return self.manifest.with_name(self.manifest.stem + ".predictions")

    def prediction_dir(self, case_key: str) -> Path:
        return self.predictions_dir / case_key

    @property
    def dicomweb_cache(self) -> Path:
        """Where series retrieved from the DICOMweb server are kept (``<study>/<series>/``)."""
        return self.manifest.with_name(self.manifest.stem + ".dicomweb")

    # -- loading ------------------------------------------------------------------------------------------
    def _merge_tree(self, root: Path) -> None:
        """Index ``root`` and add its studies that the manifest lacks (all of them when it does not exist)."""
        from spinedx.studyindex import SelectionOptions, index_tree, write_index

        idx = index_tree(root, SelectionOptions(allow_modality=self.allow_modality), progress=False)
        self._add_studies(idx, "DICOM tree", lambda idx: write_index(idx, self.manifest),
                          lambda st: {"t1": st.series_folder("t1"), "t2": st.series_folder("t2")})

    def _merge_server(self, url: str) -> None:
        """Index a DICOMweb server and add its studies that the manifest lacks (all of them when it does not exist).

        The rows name the study and the chosen series (no paths); :meth:`image_source` retrieves the series.
        """
        from spinedx.interop.pacs import index_server
        from spinedx.studyindex import SelectionOptions, write_index

        idx = index_server(url, SelectionOptions(allow_modality=self.allow_modality), auth=self._dicomweb_auth)
        self._add_studies(idx, "server", lambda idx: write_index(idx, self.manifest),
                          lambda st: {"extra": {"study_uid": st.study_uid}})

    def _add_studies(self, idx: Any, source: str, write_new: Any, fields: Any) -> None:
        """Write the index as the manifest when there is none; else append its studies the manifest lacks, as
        draft rows with ``fields(study)`` (refusing to mix a synthetic and a real cohort)."""
        if not self.manifest.exists():
            write_new(idx)
            self.added_from_tree = len(idx.studies)
            return
        from spinedx.cohort import CaseRecord, load_manifest, write_manifest
        from spinedx.fsutil import atomic_path

        cohort = load_manifest(self.manifest, require_images=False, draft=True)
        known = set(cohort.patient_ids)
        new = [st for st in idx.studies if st.case_key not in known]
        if not new:
            return
        if idx.synthetic != cohort.synthetic:
            raise SpinedxError(f"the manifest is {'synthetic' if cohort.synthetic else 'real'} but the {source}'s "
                               f"studies are {'synthetic' if idx.synthetic else 'real'}: a cohort is one or the other; "
                               "give another --cohort", where=str(self.manifest))
        cases = list(cohort.cases)
        for st in new:
            sel = st.selection
            cases.append(CaseRecord(patient_id=st.case_key, label=None,  # type: ignore[arg-type]
                                    t1_series_uid=sel.t1.series_uid if sel.t1 else None,
                                    t2_series_uid=sel.t2.series_uid if sel.t2 else None, synthetic=idx.synthetic,
                                    **fields(st)))
        with atomic_path(self.manifest) as tmp:
            write_manifest(cases, tmp)
        self.added_from_tree = len(new)

    def _has_images(self, case: Any, which: str) -> bool:
        """A path in the manifest, or (browsing a DICOMweb server) a chosen series of a known study."""
        if getattr(case, which) is not None:
            return True
        return bool(self.dicomweb is not None and getattr(case, f"{which}_series_uid")
                    and case.extra.get("study_uid"))

    def _from_server(self, study_uid: str, series_uid: str) -> Path:
        """The local copy of a server series, retrieved (WADO-RS) the first time it is asked for."""
        from spinedx.interop.dicomweb import DicomWebClient

        folder = self.dicomweb_cache / study_uid / series_uid
        with self._fetch_lock:
            if not folder.is_dir():
                if self._dicomweb_client is None:
                    self._dicomweb_client = DicomWebClient(str(self.dicomweb), auth=self._dicomweb_auth)
                self._dicomweb_client.retrieve_series(study_uid, series_uid, folder)
        return folder

    def _load(self) -> None:
        from spinedx.cohort import load_manifest

        with self._lock:
            mtime = self.manifest.stat().st_mtime_ns
            if self._cohort is not None and mtime == self._mtime:
                return
            self._cohort = load_manifest(self.manifest, require_images=False, draft=True)
            self._mtime = mtime

    @property
    def cohort(self) -> Any:
        """The manifest as loaded (reloaded when the file changed on disk)."""
        self._load()
        return self._cohort

    @property
    def synthetic(self) -> bool:
        """True when the manifest marks a synthetic cohort (column ``synthetic`` = 1)."""
        return bool(self.cohort.synthetic)

    # -- reading ------------------------------------------------------------------------------------------
    def case(self, key: str) -> Any:
        """The manifest record of ``key``.

        Raises:
            NotFound: no such case.
        """
        for c in self.cohort.cases:
            if c.patient_id == key:
                return c
        raise NotFound("no such case", where=key)

    def image_source(self, key: str, which: str) -> tuple[Path, str | None]:
        """(path, series UID) of a case's ``t1`` or ``t2``, only when it lies under the served roots.

        Raises:
            NotFound: no such case or series, or a path outside the roots (after resolving symlinks).
        """
        case = self.case(key)
        path = getattr(case, which)
        uid = getattr(case, f"{which}_series_uid")
        study_uid = case.extra.get("study_uid")
        if path is None and self.dicomweb is not None and uid and study_uid:
            return self._from_server(study_uid, uid), uid
        if path is None:
            raise NotFound(f"the case has no {which.upper()}W series; see index.json or set the {which} column",
                           where=key)
        if not _inside(Path(path), self.roots) or not Path(path).exists():
            raise NotFound(f"{which.upper()}W series not available", where=key)
        return Path(path), uid

    def annotation(self, key: str) -> tuple[Annotation, str]:
        """The case's annotation and version."""
        case = self.case(key)
        return _annotation(case), row_version(case)

    def summaries(self) -> list[dict[str, Any]]:
        """``patient_id``, label, annotated, predicted (and series availability) of every case."""
        out = []
        for c in self.cohort.cases:
            ann = _annotation(c)
            out.append({"patient_id": c.patient_id, "label": c.label,
                        "annotated": bool(ann.lesion_slices and ann.box),
                        "predicted": self.stored_prediction(c.patient_id, c) is not None,
                        "images": all(self._has_images(c, w) for w in ("t1", "t2"))})
        return out

    def stored_prediction(self, key: str, case: Any = None) -> dict[str, Any] | None:
        """The last prediction of the case when it was made on the current annotation, else None."""
        case = case if case is not None else self.case(key)
        path = self.prediction_dir(key) / "prediction.json"
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        inputs = doc.get("inputs", {})
        if inputs.get("lesion_slices") != list(case.lesion_slices) or inputs.get("box") != list(case.box):
            return None
        return doc

    # -- writing ------------------------------------------------------------------------------------------
    def save_annotation(self, key: str, changes: dict[str, Any],
                        if_match: str | list[str] | None) -> tuple[Annotation, str]:
        """Apply ``changes`` (already validated) to the case and write the manifest atomically.

        Args:
            key: the case.
            changes: field -> new value (``label``, ``lesion_slices``, ``box``, ``features``, ``readers``); a
                field not given is left as it is.
            if_match: the version the client edited, or a list of versions any of which may be the stored one
                (``"*"``: any; None: accept whatever is stored).

        Returns:
            The saved annotation and its new version.

        Raises:
            Conflict: ``if_match`` names a version that is no longer the stored one.
        """
        from spinedx.cohort import write_manifest
        from spinedx.fsutil import atomic_path

        with self._lock:
            self._load()
            cases = list(self._cohort.cases)
            idx = next((i for i, c in enumerate(cases) if c.patient_id == key), None)
            if idx is None:
                raise NotFound("no such case", where=key)
            old = cases[idx]
            current = row_version(old)
            accepted = [if_match] if isinstance(if_match, str) else list(if_match or ())
            if if_match is not None and "*" not in accepted and current not in accepted:
                raise Conflict(f"the case was changed by someone else (version {current}, yours "
                               f"{', '.join(accepted) or 'none'}); reload it and apply your edit again", where=key)
            new = old
            if "label" in changes:
                new = replace(new, label=changes["label"])
            if "lesion_slices" in changes:
                new = replace(new, lesion_slices=tuple(changes["lesion_slices"]))
            if "box" in changes:
                new = replace(new, box=tuple(changes["box"]) if changes["box"] else (0, 0, 0, 0))
            if "features" in changes:
                feats = dict(new.features)
                for k, v in changes["features"].items():
                    if v is None:
                        feats.pop(k, None)
                    else:
                        feats[k] = int(v)
                new = replace(new, features=feats)
            if "readers" in changes:
                new = replace(new, readers={**new.readers, **changes["readers"]})
            before, after = _annotation(old).to_dict(), _annotation(new).to_dict()
            changed = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
            if changed:
                cases[idx] = new
                with atomic_path(self.manifest) as tmp:
                    write_manifest(cases, tmp)
                self._cohort.cases = cases
                self._mtime = self.manifest.stat().st_mtime_ns
                entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "case": key,
                         "version_before": current, "version_after": row_version(new), "changed": changed}
                with open(self.audit_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, sort_keys=True) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            return _annotation(new), row_version(new)
