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
      model.onnx         with ``--format onnx``: the ensemble (patches -> per-fold probabilities, each the mean over
                         the run's test-time views, which are in the graph)
      SHA256SUMS         sha256 of every other file (``sha256sum -c SHA256SUMS`` checks it by hand)

:func:`open_model` returns the same object for a run folder and a bundle, after checking every checksum of a
bundle: a changed, missing or extra file is refused before anything is loaded.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import SpinedxError

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
    """

    path: Path
    doc: dict[str, Any]
    files: dict[str, str]

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


def verify_bundle(path: str | Path) -> BundleInfo:
    """Check a bundle against its ``SHA256SUMS`` and read ``bundle.json``.

    Raises:
        BundleError: not a bundle, a file missing, altered or not listed, or a bundle format this spinedx does not
            read; the message names the file.
    """
    folder = Path(path)
    sums = folder / SUMS
    if not (folder / BUNDLE_JSON).is_file():
        raise BundleError("not a spinedx model bundle (no bundle.json); pass a bundle written by spinedx export or "
                          "a run folder", where=str(folder))
    if not sums.is_file():
        raise BundleError(f"{SUMS} missing: the bundle cannot be checked; export it again", where=str(folder))
    listed: dict[str, str] = {}
    for n, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
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
    for rel, digest in listed.items():
        if sha256_file(folder / rel) != digest:
            raise BundleError(f"checksum mismatch: the file was changed after export; copy the whole bundle again "
                              f"or export it again (expected sha256 {digest[:16]}...)", where=str(folder / rel))
    try:
        doc = json.loads((folder / BUNDLE_JSON).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle.json is not valid JSON ({exc.msg})", where=str(folder / BUNDLE_JSON)) from None
    fmt = doc.get("bundle_format") if isinstance(doc, dict) else None
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"bundle format {fmt!r}, this spinedx ({__version__}) reads format {BUNDLE_FORMAT}; use the "
                          "spinedx version that exported it", where=str(folder / BUNDLE_JSON))
    return BundleInfo(folder, doc, listed)


def _fold_paths(run_dir: Path) -> dict[int, Path]:
    """Every fold model of a finished run, read strictly through the run folder's owner (a missing fold or a
    stray ``folds/1.bak`` is refused, naming it)."""
    from spinedx.runfolder import RunFolder

    return dict(RunFolder(run_dir).fold_models(allow_missing=False).paths)


def _versions() -> dict[str, str]:
    from spinedx.provenance import package_versions

    return {k: str(v) for k, v in package_versions().items()}


def export_bundle(run_dir: str | Path, out: str | Path, *, onnx: bool = False, name: str | None = None) -> BundleInfo:
    """Write a run's fold models as a bundle (layout in the module docstring), whole or not at all.

    Args:
        run_dir: a finished ``spinedx cv`` run folder.
        out: the bundle folder to create (an existing one is replaced only if it is a bundle).
        onnx: also export the ensemble to ONNX (``model.onnx``); checked against the torch models before writing.
        name: the bundle's name (default ``spinedx-<backbone>-<fingerprint[:12]>``).

    Returns:
        The written bundle, checked (:func:`verify_bundle`).

    Raises:
        SpinedxError: not a finished run, an output path that is not a bundle, an ONNX graph that disagrees with
            the torch models.
    """
    from spinedx.fsutil import atomic_dir
    from spinedx.interop.content import fingerprint_lines
    from spinedx.interop.runfacts import run_facts

    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_bundle(out))):
        raise SpinedxError("exists and is not an (empty) folder or a bundle; choose another --out", where=str(out))
    if out.resolve() == run_dir.resolve():
        raise SpinedxError("the bundle cannot replace its run folder; choose another --out", where=str(out))
    facts = run_facts(run_dir)
    folds = _fold_paths(run_dir)
    fingerprint = fingerprint_lines((k, sha256_file(p)) for k, p in folds.items())
    with atomic_dir(out) as tmp:
        shutil.copyfile(facts.config_path, tmp / "config.yaml")
        for k, p in folds.items():
            (tmp / "folds" / str(k)).mkdir(parents=True)
            shutil.copyfile(p, tmp / "folds" / str(k) / "model.pt")
        if facts.metrics_path is not None:
            shutil.copyfile(facts.metrics_path, tmp / "metrics.json")
        onnx_check = None
        if onnx:
            onnx_check = _export_checked_onnx(tmp, facts.patch_size, len(facts.channel_names), facts.tta)
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
                "onnx": ONNX_FILE if onnx else None,
                "onnx_check": onnx_check,
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
            "optimistic": facts.optimistic,
            "training": {"run_dir": str(run_dir.resolve()), "git_commit": facts.git_commit,
                         "versions": facts.versions},
        }
        (tmp / BUNDLE_JSON).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        write_sums(tmp)
    return verify_bundle(out)


def _export_checked_onnx(folder: Path, patch_size: int, n_channels: int, views: Any) -> dict[str, Any]:
    """Export the bundle's fold models (with the run's test-time ``views``) to ONNX and check ONNX Runtime against
    torch on random patches."""
    import numpy as np

    from spinedx.interop.onnxexport import OPSET, OnnxEnsemble, export_ensemble
    from spinedx.models import load_fold_model, predict_patches

    paths = sorted(folder.glob("folds/*/model.pt"), key=lambda p: int(p.parent.name))
    models = [load_fold_model(p, fold=int(p.parent.name)) for p in paths]
    path = export_ensemble(models, folder / ONNX_FILE, patch_size, n_channels, views)
    x = np.random.default_rng(0).normal(size=(8, n_channels, patch_size, patch_size)).astype(np.float32)
    ref = predict_patches(models, x, bf16=False, views=views)
    got = OnnxEnsemble(path).predict(x)
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= ONNX_TOLERANCE:
        raise SpinedxError(f"the ONNX graph disagrees with the torch models by {diff:.2e} (> {ONNX_TOLERANCE:g}); "
                           "export without --format onnx", where=str(path))
    return {"opset": OPSET, "max_abs_diff_vs_torch": diff, "tolerance": ONNX_TOLERANCE, "n_random_patches": len(x)}


#: Largest difference between ONNX Runtime and torch probabilities accepted at export (and tested).
ONNX_TOLERANCE = 1e-4


def load_bundle(path: str | Path, device: Any = "cpu") -> Any:
    """A checked bundle's fold models as :class:`spinedx.models.RunModels` (the object ``load_run`` returns).

    The record is the run's own ``config.yaml`` read by the run folder's strict reader, and each model is
    checked against it (fold number, backbone, channels) as ``load_run`` checks a run's models.

    Raises:
        BundleError: the bundle fails its checks (:func:`verify_bundle`) or lacks a fold model of the run.
    """
    import yaml

    from spinedx.models.run import RunModels, load_fold_model
    from spinedx.runfolder import RunRecord

    info = verify_bundle(path)
    folder = info.path
    record = RunRecord.from_dict(yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")),
                                 folder / "config.yaml")
    folds = [int(k) for k in info.doc["model"]["folds"]]
    missing = [k for k in range(record.config.folds) if k not in folds]
    if missing:
        raise BundleError(f"fold(s) {', '.join(map(str, missing))} of the run have no model in the bundle; export "
                          "it from the finished run", where=str(folder))
    models = [load_fold_model(folder / "folds" / str(k) / "model.pt", device, fold=k, backbone=record.config.backbone)
              for k in folds]
    return RunModels(folder, record, models, folds, [])


def open_model(path: str | Path, device: Any = "cpu", *, allow_missing_folds: bool = False) -> Any:
    """The fold models of a run folder or a bundle, as the same typed object (:class:`spinedx.models.RunModels`).

    A bundle is checked against its ``SHA256SUMS`` first (:func:`verify_bundle`): a changed, missing or extra
    file is refused before anything is loaded.

    Raises:
        BundleError: a bundle that fails its checks.
        SpinedxError: not a run folder or a bundle.
    """
    import warnings

    from spinedx.models.run import load_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # build_model warns about missing ImageNet weights: irrelevant here
        return load_run(path, device, allow_missing_folds=allow_missing_folds)  # load_run hands bundles to load_bundle


def onnx_probabilities(model_dir: str | Path, x: Any) -> Any:
    """Per-fold probabilities ``(n_models, N)`` of patches ``x`` from a bundle's ``model.onnx`` (ONNX Runtime).

    Raises:
        BundleError: not a bundle, or a bundle exported without ``--format onnx``.
    """
    from spinedx.interop.onnxexport import OnnxEnsemble

    if not is_bundle(model_dir):
        raise BundleError("the ONNX engine needs a model bundle exported with --format onnx (spinedx export RUN --out "
                          "BUNDLE --format onnx), not a run folder", where=str(model_dir))
    info = verify_bundle(model_dir)
    if info.onnx is None:
        raise BundleError("this bundle has no model.onnx; export it again with --format onnx", where=str(model_dir))
    return OnnxEnsemble(info.onnx).predict(x)
