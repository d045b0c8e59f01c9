"""A model bundle: a run's fold models as one self-contained, versioned, checksummed folder (``spinedx export``).

A run folder (``spinedx cv``) is tied to the machine it was trained on (training patches, out-of-fold patient
tables). A bundle holds only what prediction needs and what a reader must know about the model, and nothing
about the training patients::

    BUNDLE/
      bundle.json        what it is: name, format, intended use and "research use only", model fingerprint,
                         backbone, folds, channels, the preprocessing spec the run was trained with (patch size,
                         margin, registration, orientation, aggregation, threshold), the run's cross-validated
                         performance with intervals (and baselines, where the run has them), software versions
      config.yaml        the run's configuration record, verbatim (read back by the same typed reader)
      folds/<k>/model.pt fold state dicts, byte for byte as in the run (``torch.load(weights_only=True)``)
      metrics.json       the run's cross-validated metrics (when the run has them)
      calibration.json, conformal.json, domain.json
                         the run's calibrator, conformal thresholds, domain and spread references (when the run
                         has them): the bundle decides exactly like its run (spinedx.decision)
      model.onnx         with ``--format onnx``: the ensemble (patches -> per-fold probabilities, each the mean over
                         the run's test-time views, which are in the graph)
      SHA256SUMS         sha256 of every other file (``sha256sum -c SHA256SUMS`` checks it by hand)

:func:`load_bundle` returns the object a run folder loads as (:class:`spinedx.models.RunModels`), after checking every
checksum: a changed, missing or extra file is refused before anything is loaded. :func:`spinedx.inference.load_model`
takes either (the inference layer is the one that knows both); ``spinedx export`` is
:func:`spinedx.inference.export_bundle`, which writes the ONNX graph through this module's :func:`export_bundle`.

Integrity (threat model in docs/interop.md): ``SHA256SUMS`` catches corruption (a truncated copy, a flipped bit).
``bundle.json`` also records the sha256 of every other file (``contents``) at export, and loading compares the files
with it, so a model replaced with ``SHA256SUMS`` recomputed is refused, naming the file; the models are built from
the very bytes checked. Whoever can rewrite ``bundle.json`` too can substitute a whole bundle: the **digest** (the
sha256 of ``SHA256SUMS``, which lists every file's sha256, so one hash pins every byte) printed by ``spinedx export``
and checked by ``predict``/``serve --expect-digest`` catches that.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import SpinedxError
from spinedx.interop.runfacts import DECISION_FILES

#: Layout version of bundles written by this spinedx.
BUNDLE_FORMAT = 1
BUNDLE_JSON = "bundle.json"
SUMS = "SHA256SUMS"
ONNX_FILE = "model.onnx"

#: What the model is for, written into every bundle.
INTENDED_USE = (
    "Research decision support: probability that a vertebral fracture seen on sagittal T1W and T2W spine MRI is "
    "malignant rather than benign (osteoporotic), from a lesion box and lesion slices drawn on the T2W series "
    "(Yeh et al., Eur Spine J 2022). Not a medical device; not validated for clinical use; "
    + RESEARCH_USE_ONLY + "."
)


class BundleError(SpinedxError):
    """A bundle is incomplete, altered, or not one this spinedx can read."""


@dataclass(frozen=True)
class BundleInfo:
    """A checked bundle.

    Attributes:
        path: the folder.
        doc: ``bundle.json``.
        files: relative path -> sha256 of every checked file.
        digest: the bundle's digest: sha256 of its ``SHA256SUMS`` (which lists every other file's sha256), so one
            hash pins every byte of the bundle; ``spinedx export`` prints it, ``--expect-digest`` checks it.
    """

    path: Path
    doc: dict[str, Any]
    files: dict[str, str]
    digest: str = ""

    @property
    def fingerprint(self) -> str:
        """The models' fingerprint (the same as the run's, :func:`spinedx.interop.model_fingerprint`)."""
        return str(self.doc["model"]["fingerprint"])

    @property
    def onnx(self) -> Path | None:
        """The ONNX ensemble, when exported."""
        name = self.doc["model"].get("onnx")
        return None if not name else self.path / name


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder holding ``bundle.json`` (checked in full by :func:`verify_bundle`)."""
    return (Path(path) / BUNDLE_JSON).is_file()


def _files(folder: Path) -> list[str]:
    """Every regular file below ``folder`` (POSIX relative paths, sorted), the checksum file excluded."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != SUMS)


def write_sums(folder: str | Path) -> Path:
    """Write ``SHA256SUMS`` (``<sha256>  <path>`` lines, the format of ``sha256sum``) for every file of ``folder``."""
    folder = Path(folder)
    lines = [f"{sha256_file(folder / rel)}  {rel}\n" for rel in _files(folder)]
    path = folder / SUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def check_digest_text(text: str) -> str:
    """A digest as given on the command line (``--expect-digest``), normalised to 64 lower-case hex digits.

    Raises:
        BundleError: anything else (a prefix is refused too: pinning needs the whole digest).
    """
    value = str(text).strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise BundleError(f"{text!r} is not a bundle digest: give the 64 hex digits spinedx export printed",
                          where="--expect-digest")
    return value


def verify_bundle(path: str | Path, *, expect_digest: str | None = None) -> BundleInfo:
    """Check a bundle against its ``SHA256SUMS`` and against what ``bundle.json`` recorded at export, and read it.

    Args:
        path: the bundle folder.
        expect_digest: the digest the bundle must have (:attr:`BundleInfo.digest`; a deployment pins the bundle it
            validated); checked first.

    Raises:
        BundleError: not a bundle, another digest than ``expect_digest`` (both named), a file missing, altered or not
            listed, a file whose sha256 differs from the one ``bundle.json`` recorded at export (``SHA256SUMS``
            rewritten to match it), or a bundle format this spinedx does not read; the message names the file.
    """
    folder = Path(path)
    sums = folder / SUMS
    if expect_digest is not None:
        expect_digest = check_digest_text(expect_digest)
    if not (folder / BUNDLE_JSON).is_file():
        raise BundleError("not a spinedx model bundle (no bundle.json); pass a bundle written by spinedx export or "
                          "a run folder", where=str(folder))
    if not sums.is_file():
        raise BundleError(f"{SUMS} missing: the bundle cannot be checked; export it again", where=str(folder))
    sums_bytes = sums.read_bytes()  # the digest and the checks below use these very bytes
    bundle_digest = hashlib.sha256(sums_bytes).hexdigest()
    if expect_digest is not None and bundle_digest != expect_digest:
        raise BundleError(f"bundle digest {bundle_digest}, expected {expect_digest} (--expect-digest): this is not "
                          "the bundle that was validated; do not use it, get the validated bundle again",
                          where=str(folder))
    try:
        sums_text = sums_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{SUMS} is not text; export the bundle again", where=str(sums)) from None
    listed: dict[str, str] = {}
    for n, line in enumerate(sums_text.splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise BundleError(f"{SUMS} line {n} is not '<sha256>  <relative path>'; export the bundle again",
                              where=str(sums))
        listed[rel] = digest
    present = set(_files(folder))
    extra = sorted(present - set(listed))
    missing = sorted(set(listed) - present)
    if missing:
        raise BundleError(f"file(s) listed in {SUMS} are missing: {', '.join(missing)}; copy the whole bundle "
                          "again", where=str(folder))
    if extra:
        raise BundleError(f"file(s) not in {SUMS}: {', '.join(extra)}; a bundle is used as exported: remove them "
                          "or export again", where=str(folder))
    for rel, want in listed.items():
        if rel != BUNDLE_JSON and sha256_file(folder / rel) != want:
            raise BundleError(f"checksum mismatch: the file was changed after export; copy the whole bundle again "
                              f"or export it again (expected sha256 {want[:16]}...)", where=str(folder / rel))
    doc_bytes = (folder / BUNDLE_JSON).read_bytes()  # parsed from the bytes checked
    if BUNDLE_JSON not in listed or hashlib.sha256(doc_bytes).hexdigest() != listed[BUNDLE_JSON]:
        raise BundleError("checksum mismatch: the file was changed after export; copy the whole bundle again or "
                          "export it again", where=str(folder / BUNDLE_JSON))
    try:
        doc = json.loads(doc_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle.json is not valid JSON ({getattr(exc, 'msg', exc)})",
                          where=str(folder / BUNDLE_JSON)) from None
    fmt = doc.get("bundle_format") if isinstance(doc, dict) else None
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"bundle format {fmt!r}, this spinedx ({__version__}) reads format {BUNDLE_FORMAT}; use the "
                          "spinedx version that exported it", where=str(folder / BUNDLE_JSON))
    _check_contents(folder, doc, listed)
    return BundleInfo(folder, doc, listed, bundle_digest)


def _check_contents(folder: Path, doc: dict[str, Any], listed: dict[str, str]) -> None:
    """Compare ``SHA256SUMS`` with the sha256 ``bundle.json`` recorded of every other file at export (``contents``):
    whoever replaces a model and recomputes ``SHA256SUMS`` is caught here. Bundles exported before ``contents``
    existed are checked on their models' fingerprint when loaded (:func:`load_bundle`)."""
    contents = doc.get("contents")
    if contents is None:
        return
    remedy = "do not use this bundle: get it again from its source, or export it again from the run"
    if not isinstance(contents, dict) or not all(isinstance(v, str) for v in contents.values()):
        raise BundleError(f"bundle.json contents is not a map of file -> sha256; {remedy}", where=str(folder))
    for rel, digest in sorted(listed.items()):
        if rel == BUNDLE_JSON:
            continue
        if rel not in contents:
            raise BundleError(f"not recorded in bundle.json at export (the file was added and {SUMS} rewritten); "
                              f"{remedy}", where=str(folder / rel))
        if contents[rel] != digest:
            raise BundleError(f"sha256 {digest} (as {SUMS} now says) is not the {contents[rel]} bundle.json recorded "
                              f"at export: the file was replaced and {SUMS} rewritten to match; {remedy}",
                              where=str(folder / rel))
    gone = sorted(set(contents) - set(listed))
    if gone:
        raise BundleError(f"bundle.json records {', '.join(gone)}, which the bundle lacks; {remedy}", where=str(folder))


def _fold_paths(run_dir: Path) -> dict[int, Path]:
    """Every fold model of a finished run, read strictly through the run folder's owner (a missing fold or a
    stray ``folds/1.bak`` is refused, naming it)."""
    from spinedx.runfolder import RunFolder

    return dict(RunFolder(run_dir).fold_models(allow_missing=False).paths)


def _versions() -> dict[str, str]:
    from spinedx.provenance import package_versions

    return {k: str(v) for k, v in package_versions().items()}


def check_output(out: str | Path, run_dir: str | Path | None = None, *, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that is not new, empty, or an earlier complete bundle (replaced whole), unless
    ``overwrite``; a run folder (or the run being exported) is never replaced.

    Raises:
        SpinedxError: naming the folder and what to do.
    """
    out = Path(out)
    if run_dir is not None and out.exists() and out.resolve() == Path(run_dir).resolve():
        raise SpinedxError("the bundle cannot replace its run folder; choose another --out", where=str(out))
    if not out.exists():
        return
    if not out.is_dir():
        raise SpinedxError("exists and is not a folder; choose another --out", where=str(out))
    if not any(out.iterdir()):
        return
    if (out / "config.yaml").is_file() and (out / "folds").is_dir() and not is_bundle(out):
        raise SpinedxError("is a spinedx cv run folder: a bundle never replaces a run; choose another --out",
                           where=str(out))
    if overwrite:
        return
    if not is_bundle(out):
        raise SpinedxError("not empty and not a spinedx model bundle (no bundle.json); choose a new or empty --out "
                           "folder, or pass --overwrite to replace it", where=str(out))
    try:
        verify_bundle(out)
    except BundleError as exc:
        raise SpinedxError(f"holds a bundle that does not pass its checks ({exc.message}), so it is not spinedx "
                           "export's own complete output; choose another --out, or pass --overwrite to replace it",
                           where=str(out)) from None


#: ``graph_writer(folder, facts, onnx_file)``: writes ``folder/onnx_file`` from the fold models in ``folder`` and
#: returns what ``bundle.json`` records of the check (:func:`spinedx.inference.export_bundle` passes one).
GraphWriter = Callable[[Path, Any, str], dict[str, Any]]


def export_bundle(run_dir: str | Path, out: str | Path, *, graph_writer: GraphWriter | None = None,
                  name: str | None = None, overwrite: bool = False) -> BundleInfo:
    """Write a run's fold models as a bundle (layout in the module docstring), whole or not at all.

    Every fold model is checked against the sha256 its ``done.json`` recorded at training time, and the bytes
    checked are the bytes written.

    Args:
        run_dir: a finished ``spinedx cv`` run folder.
        out: the bundle folder to create: new, empty, or an earlier bundle that passes its checks (replaced whole);
            anything else only with ``overwrite`` (never a run folder).
        graph_writer: also write the ensemble's ONNX graph (``model.onnx``), exported from the bundle's own fold
            model bytes and checked by the writer (:func:`spinedx.inference.export_bundle` gives the inference
            layer's); None: the fold models only.
        name: the bundle's name (default ``spinedx-<backbone>-<fingerprint[:12]>``).
        overwrite: replace a folder that is not an earlier bundle.

    Returns:
        The written bundle, checked (:func:`verify_bundle`); its :attr:`BundleInfo.digest` pins it.

    Raises:
        SpinedxError: not a finished run, a fold model that is not the one trained, an output path that may not be
            replaced, an ONNX graph that disagrees with the torch models.
    """
    from spinedx.fsutil import atomic_dir
    from spinedx.interop.runfacts import run_facts
    from spinedx.models.run import check_run_models, fingerprint_lines
    from spinedx.runfolder import RunFolder

    run_dir, out = Path(run_dir), Path(out)
    check_output(out, run_dir, overwrite=overwrite)
    facts = run_facts(run_dir)
    folds = _fold_paths(run_dir)
    data, digests, _ = check_run_models(RunFolder(run_dir), folds)
    fingerprint = fingerprint_lines(digests.items())
    with atomic_dir(out) as tmp:
        shutil.copyfile(facts.config_path, tmp / "config.yaml")
        for k in folds:
            (tmp / "folds" / str(k)).mkdir(parents=True)
            (tmp / "folds" / str(k) / "model.pt").write_bytes(data.pop(k))
        if facts.metrics_path is not None:
            shutil.copyfile(facts.metrics_path, tmp / "metrics.json")
        for rel, src in facts.decision_files.items():  # decides exactly like its run; checked like the models
            shutil.copyfile(src, tmp / rel)
        onnx_check = None
        if graph_writer is not None:
            onnx_check = graph_writer(tmp, facts, ONNX_FILE)
        contents = {rel: sha256_file(tmp / rel) for rel in _files(tmp)}
        doc = {
            "bundle_format": BUNDLE_FORMAT,
            "name": name or f"spinedx-{facts.backbone}-{fingerprint[:12]}",
            "research_use_only": RESEARCH_USE_ONLY,
            "intended_use": INTENDED_USE,
            "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "exported_with": {"spinedx": __version__, "versions": _versions()},
            "model": {
                "fingerprint": fingerprint,
                "fingerprint_rule": "sha256 of the lines '<fold> <sha256 of folds/<fold>/model.pt>' in fold order",
                "backbone": facts.backbone,
                "folds": sorted(folds),
                "files": {str(k): f"folds/{k}/model.pt" for k in sorted(folds)},
                "channel_names": list(facts.channel_names),
                "output": "sigmoid of one logit per patch: probability of a malignant fracture",
                "test_time_augmentation": facts.tta.to_dict() if facts.tta is not None else None,
                "onnx": ONNX_FILE if graph_writer is not None else None,
                "onnx_check": onnx_check,
                "oof_inference": facts.oof_inference,
            },
            "preprocessing": {
                **facts.preprocessing,
                "orientation": ("the canonical sagittal grid of spinedx.io.read_image: rows head->feet, columns "
                                "anterior->posterior, slices left->right; boxes and slices refer to it"),
                "aggregation": facts.aggregation,
                "ensemble": "mean of the fold models' patient probabilities",
                "threshold": facts.threshold,
            },
            "performance": facts.performance,
            "baselines": facts.baselines,
            "baselines_note": None if facts.baselines is not None else (
                "the run records no baseline result; compare with spinedx stats / the report of the run"),
            "synthetic": facts.synthetic,
            "trained_on": facts.trained_on,
            "decision_files": sorted(facts.decision_files),
            "decision_files_note": None if len(facts.decision_files) == len(DECISION_FILES) else (
                f"the run has no {', '.join(n for n in DECISION_FILES if n not in facts.decision_files)} (made before "
                "spinedx decided with them): predictions from this bundle decide from the probability alone where "
                "they are missing"),
            "optimistic": facts.optimistic,
            "training": {"run_dir": str(run_dir.resolve()), "git_commit": facts.git_commit,
                         "versions": facts.versions},
            "contents": contents,
            "contents_rule": "sha256 of every other file at export (all but bundle.json and SHA256SUMS); loading "
                             "compares the files with it, whatever SHA256SUMS says",
        }
        (tmp / BUNDLE_JSON).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        write_sums(tmp)
    return verify_bundle(out)


def _checked_bytes(info: BundleInfo, rel: str) -> bytes:
    """A bundle file's bytes, read once and compared with the sha256 the checks of ``info`` accepted (the file may
    not change between the check and its use)."""
    from spinedx.models.run import read_checked

    return read_checked(info.path / rel, info.files[rel], f"{SUMS} and bundle.json (checked when the bundle was "
                        "opened)")[0]


def load_bundle(path: str | Path, device: Any = "cpu", *, expect_digest: str | None = None) -> Any:
    """A checked bundle's fold models as :class:`spinedx.models.RunModels` (the object ``load_run`` returns).

    The bundle is checked first (:func:`verify_bundle`: ``SHA256SUMS``, what ``bundle.json`` recorded at export,
    ``expect_digest``); the record is the run's own ``config.yaml`` read by the run folder's strict reader, each
    model is built from the bytes checked and compared with the record (fold number, backbone, channels) as
    ``load_run`` checks a run's models, and the models' fingerprint must be the one ``bundle.json`` records.

    Raises:
        BundleError: the bundle fails its checks, is not the ``expect_digest`` one, lacks a fold model of the run, or
            holds models whose fingerprint is not the recorded one.
    """
    import yaml

    from spinedx.models.run import RunModels, fingerprint_lines, load_fold_model, oof_inference_from_doc
    from spinedx.runfolder import RunRecord

    recorded = f"{SUMS} and bundle.json (checked when the bundle was opened)"

    info = verify_bundle(path, expect_digest=expect_digest)
    folder = info.path
    record = RunRecord.from_dict(yaml.safe_load(_checked_bytes(info, "config.yaml").decode("utf-8")),
                                 folder / "config.yaml")
    folds = [int(k) for k in info.doc["model"]["folds"]]
    missing = [k for k in range(record.config.folds) if k not in folds]
    if missing:
        raise BundleError(f"fold(s) {', '.join(map(str, missing))} of the run have no model in the bundle; export "
                          "it from the finished run", where=str(folder))
    models = []
    digests: dict[int, str] = {}
    for k in folds:
        rel = f"folds/{k}/model.pt"
        if rel not in info.files:
            raise BundleError(f"bundle.json lists fold {k}, the bundle has no {rel}; export it again",
                              where=str(folder))
        models.append(load_fold_model(folder / rel, device, fold=k, backbone=record.config.backbone,
                                      sha256=info.files[rel], recorded=recorded))
        digests[k] = info.files[rel]
    fingerprint = fingerprint_lines(digests.items())
    if fingerprint != info.fingerprint:
        raise BundleError(f"the fold models' fingerprint {fingerprint} is not the {info.fingerprint} bundle.json "
                          f"records: a model was replaced and {SUMS} rewritten to match; do not use this bundle, "
                          "export it again from the run", where=str(folder / "folds"))
    return RunModels(folder, record, models, folds, [], digests, info.digest, [],
                     oof_inference_from_doc(info.doc["model"].get("oof_inference")))


def bundle_files_bytes(path: str | Path, rels: Sequence[str], *, expect_digest: str | None = None) -> dict[str, bytes]:
    """A checked bundle's files among ``rels`` (the decision files: ``calibration.json``, ...), each read once and
    compared with the sha256 its checks accepted; a file the bundle does not hold (exported from a run made before
    it) is left out.

    Raises:
        BundleError: not a bundle, one that fails its checks or has another digest than ``expect_digest``.
    """
    info = verify_bundle(path, expect_digest=expect_digest)
    return {rel: _checked_bytes(info, rel) for rel in rels if rel in info.files}


def check_bundle_digest(path: str | Path, expect_digest: str) -> BundleInfo:
    """Refuse ``path`` unless it is a bundle that passes its checks and has the digest ``expect_digest`` (what a
    server checks before it starts; ``load_run(..., expect_digest=)`` does the same while loading).

    Raises:
        BundleError: not a bundle (a run folder has no digest), another digest (both named), or a failed check.
    """
    check_digest_text(expect_digest)
    if not is_bundle(path):
        raise BundleError("--expect-digest pins a model bundle, and this is not one (a run folder has no digest): "
                          "export it (spinedx export RUN --out BUNDLE) and pin the digest export prints",
                          where=str(path))
    return verify_bundle(path, expect_digest=expect_digest)


def bundle_graph(path: str | Path, *, expect_digest: str | None = None) -> tuple[bytes, list[int], str] | None:
    """A checked bundle's ONNX graph (``model.onnx``): its bytes, read once and compared with the checked sha256, the
    fold of each output row, and its path for messages; None for a bundle exported without ``--format onnx``.

    Args:
        path: the bundle.
        expect_digest: the digest the bundle must have (the one its fold models were loaded with).

    Raises:
        BundleError: not a bundle, one that fails its checks, or a ``bundle.json`` naming a graph the bundle lacks.
    """
    if not is_bundle(path):
        raise BundleError("not a spinedx model bundle (no bundle.json)", where=str(path))
    info = verify_bundle(path, expect_digest=expect_digest)
    if info.onnx is None:
        return None
    rel = info.onnx.relative_to(info.path).as_posix()
    if rel not in info.files:
        raise BundleError(f"bundle.json names {rel}, the bundle has none; export it again", where=str(path))
    return _checked_bytes(info, rel), [int(k) for k in info.doc["model"]["folds"]], str(info.onnx)
