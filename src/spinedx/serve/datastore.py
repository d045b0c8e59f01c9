"""The cases the workstation serves, and their annotations, behind one small interface.

Modelled on MONAI Label's datastore: the server asks a :class:`Datastore` for cases, images and annotations and
never touches files itself, so another store (DICOMweb) can stand behind the same interface. The local store
keeps everything in the cohort manifest (``spinedx.cohort``) next to which it writes:

* the manifest itself, atomically (:func:`spinedx.fsutil.atomic_path`), with every column it did not change
  (features, readers, a synthetic cohort's extra columns) kept as read;
* ``<manifest stem>.audit.jsonl``: one JSON line per save or prediction: UTC time, the user (the name of the
  token used), the action, the opaque case key, the fields changed with old and new values (or the result); no
  patient identifier, no name, no DICOM identifiers;
* ``<manifest stem>.case-key-secret``: the random secret of the case keys (created once, private to the user);
* ``<manifest stem>.predictions/<patient>/``: the last prediction of each case (``prediction.json`` and overlays).

**Case keys.** URLs, logs and the audit log name a case by an opaque key, never by its patient identifier: the
first 16 hex digits of an HMAC-SHA256 of the ``patient_id`` under the secret beside the manifest
(:meth:`LocalDatastore.key_of`). A key is stable while that file stays (across restarts, for the audit log's
lines) and says nothing about the patient without it.

A case's version is a hash of its manifest row; a save naming a stale version (``If-Match``) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
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


KEY_HEX = 16  # hex digits of a case key (64 bits)


def case_key(secret: bytes, patient_id: str) -> str:
    """The opaque key of a case: the first :data:`KEY_HEX` hex digits of HMAC-SHA256(secret, patient_id)."""
    return hmac.new(secret, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:KEY_HEX]


def load_key_secret(path: Path) -> bytes:
    """The case-key secret in ``path`` (64 hex digits), created (random, mode 600, atomically) when absent.

    Raises:
        SpinedxError: a file that is not such a secret.
    """
    from spinedx.fsutil import atomic_path

    if not path.exists():
        with atomic_path(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    try:
        text = path.read_text(encoding="ascii").strip()
        secret = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) != 32:
        raise SpinedxError("not a spinedx case-key secret (64 hex digits): restore it, or delete it to make a new one "
                           "(case keys in earlier audit lines then no longer match)", where=str(path))
    return secret


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
        self._secret: bytes | None = None
        self._keys: tuple[Any, dict[str, str], dict[str, str]] | None = None  # (cases, pid -> key, key -> pid)
        self._load()

    # -- paths --------------------------------------------------------------------------------------------
    @property
    def audit_path(self) -> Path:
        return self.manifest.with_name(self.manifest.stem + ".audit.jsonl")

    @property
    def key_secret_path(self) -> Path:
        return self.manifest.with_name(self.manifest.stem + ".case-key-secret")

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

    # -- case keys ----------------------------------------------------------------------------------------
    def _key_maps(self) -> tuple[dict[str, str], dict[str, str]]:
        """(patient_id -> key, key -> patient_id) of the current manifest (made again when it changed)."""
        with self._lock:
            cases = self.cohort.cases
            if self._keys is not None and self._keys[0] is cases:
                return self._keys[1], self._keys[2]
            if self._secret is None:
                self._secret = load_key_secret(self.key_secret_path)
            to_key = {c.patient_id: case_key(self._secret, c.patient_id) for c in cases}
            to_pid = {k: p for p, k in to_key.items()}
            if len(to_pid) != len(to_key):  # 64 bits: never expected; refused rather than mixing two cases up
                raise SpinedxError("two cases share a case key; delete the case-key secret and start again",
                                   where=str(self.key_secret_path))
            from spinedx.serve.logsafe import register_identifiers

            register_identifiers(to_key)
            self._keys = (cases, to_key, to_pid)
            return to_key, to_pid

    def key_of(self, patient_id: str) -> str:
        """The opaque case key of a manifest row (see the module docstring)."""
        key = self._key_maps()[0].get(patient_id)
        if key is None:
            raise NotFound("no such case", where=patient_id)
        return key

    def patient_of(self, key: str) -> str:
        """The ``patient_id`` of a case key.

        Raises:
            NotFound: no case has this key (a patient identifier is not a key either).
        """
        pid = self._key_maps()[1].get(key)
        if pid is None:
            raise NotFound("no such case: a case is named by its key from the case list (its 'case' field), not by "
                           "its patient ID", where="case")
        return pid

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

    def _problem_kind(self, case: Any, which: str) -> str | None:
        """``empty``, ``outside`` or ``missing`` when the case's ``t1``/``t2`` series cannot be shown, else None."""
        path = getattr(case, which)
        if path is None:
            if self.dicomweb is not None and getattr(case, f"{which}_series_uid") and case.extra.get("study_uid"):
                return None
            return "empty"
        if not _inside(Path(path), self.roots):
            return "outside"
        if not Path(path).exists():
            return "missing"
        return None

    def _problem_text(self, kind: str, whiches: list[str]) -> str:
        """The reason for series ``whiches`` (``["t2", "t1"]``) sharing one problem ``kind``, without a path."""
        names = " and ".join(f"{w.upper()}W" for w in whiches)
        series = "series"
        columns = f"{whiches[0]} column" if len(whiches) == 1 else "t2 and t1 columns"
        if kind == "empty":
            return (f"no {names} {series}: the manifest's {columns} {'is' if len(whiches) == 1 else 'are'} empty "
                    "(index.json says why; set the column to the series folder)")
        if kind == "outside":
            served = "the manifest's folder" + (" and DICOM_ROOT" if self.dicom_root is not None else "")
            verb = "lies" if len(whiches) == 1 else "lie"
            return (f"the {names} {series} {verb} outside the folders this server reads ({served}): serve the tree "
                    f"the manifest was indexed from as well, e.g. spinedx serve TREE --cohort {self.manifest.name}")
        verb = "does" if len(whiches) == 1 else "do"
        return f"the {names} {series} named by the manifest's {columns} {verb} not exist (moved or deleted?)"

    def image_problem(self, case: Any, which: str) -> str | None:
        """Why the case's ``t1`` or ``t2`` series cannot be shown (None: it can), without naming a path.

        The index-then-serve trap is the common case: ``spinedx index TREE --out cohort.csv`` names images under
        TREE, and ``spinedx serve --cohort cohort.csv`` without TREE reads only the manifest's folder.
        """
        kind = self._problem_kind(case, which)
        return None if kind is None else self._problem_text(kind, [which])

    def case_problem(self, case: Any) -> str | None:
        """Why a case's images cannot be shown (both series' problems in one sentence each), or None."""
        kinds: dict[str, list[str]] = {}
        for w in ("t2", "t1"):
            kind = self._problem_kind(case, w)
            if kind is not None:
                kinds.setdefault(kind, []).append(w)
        return "; ".join(self._problem_text(k, ws) for k, ws in kinds.items()) or None

    def image_problems(self) -> dict[str, str]:
        """``patient_id -> reason`` of every case whose images cannot be shown (:meth:`case_problem`)."""
        return {c.patient_id: r for c in self.cohort.cases if (r := self.case_problem(c)) is not None}

    def image_source(self, key: str, which: str) -> tuple[Path, str | None]:
        """(path, series UID) of a case's ``t1`` or ``t2``, only when it lies under the served roots.

        Raises:
            NotFound: no such case or series, a path outside the roots (after resolving symlinks) or missing; the
                message says which (:meth:`image_problem`).
        """
        case = self.case(key)
        problem = self.image_problem(case, which)
        if problem is not None:
            raise NotFound(problem, where=key)
        path = getattr(case, which)
        uid = getattr(case, f"{which}_series_uid")
        study_uid = case.extra.get("study_uid")
        if path is None:
            return self._from_server(study_uid, uid), uid
        return Path(path), uid

    def annotation(self, key: str) -> tuple[Annotation, str]:
        """The case's annotation and version."""
        case = self.case(key)
        return _annotation(case), row_version(case)

    def summaries(self) -> list[dict[str, Any]]:
        """Every case: its key, ``patient_id``, label, annotated, predicted, whether its images can be shown and, when
        not, why (``problem``)."""
        out = []
        to_key = self._key_maps()[0]
        for c in self.cohort.cases:
            ann = _annotation(c)
            problem = self.case_problem(c)
            out.append({"case": to_key[c.patient_id], "patient_id": c.patient_id, "label": c.label,
                        "annotated": bool(ann.lesion_slices and ann.box),
                        "predicted": self.stored_prediction(c.patient_id, c) is not None,
                        "images": problem is None, "problem": problem})
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
    def audit(self, action: str, patient_id: str, user: str, **fields: Any) -> None:
        """Append one line to the audit log: UTC time, user, action, the case's key, ``fields`` (no identifiers)."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user": user, "action": action,
                 "case": self.key_of(patient_id), **fields}
        with self._lock, open(self.audit_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save_annotation(self, key: str, changes: dict[str, Any],
                        if_match: str | list[str] | None, *, user: str = "local") -> tuple[Annotation, str]:
        """Apply ``changes`` (already validated) to the case and write the manifest atomically.

        Args:
            key: the case.
            changes: field -> new value (``label``, ``lesion_slices``, ``box``, ``features``, ``readers``); a
                field not given is left as it is.
            if_match: the version the client edited, or a list of versions any of which may be the stored one
                (``"*"``: any; None: accept whatever is stored).
            user: who saves (the audit log's ``user``).

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
                self.audit("annotate", key, user, version_before=current, version_after=row_version(new),
                           changed=changed)
            return _annotation(new), row_version(new)
