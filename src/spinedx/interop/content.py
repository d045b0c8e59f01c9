"""What a DICOM result says: the prediction's values and the algorithm that made them, free of any file format.

:class:`ResultContent` is built from a :class:`spinedx.predict.CasePrediction` by :func:`content_from_prediction`
and is the only input of the SR and Secondary Capture writers, so both say the same thing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import SpinedxError

#: Name of the algorithm in DICOM results (TID 4019 Algorithm Name).
ALGORITHM_NAME = "spinedx vertebral fracture classifier"


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identification of the model that produced a result (TID 4019 Algorithm Identification).

    Attributes:
        name: algorithm name.
        version: spinedx version.
        model_hash: sha256 fingerprint of the fold models (:func:`model_fingerprint`).
        description: backbone and ensemble, e.g. ``"resnet18, mean of 2 fold models"``.
    """

    name: str
    version: str
    model_hash: str
    description: str

    def parameters(self, threshold: float, aggregation: str) -> list[str]:
        """The TID 4019 Algorithm Parameters: model hash, ensemble, threshold, and the research-use notice."""
        return [f"model sha256 {self.model_hash}", self.description, f"aggregation: {aggregation}",
                f"decision threshold {threshold:g} on the probability of malignancy", RESEARCH_USE_ONLY]


@dataclass(frozen=True)
class ResultContent:
    """The values a DICOM result carries.

    Attributes:
        probability: ensemble patient probability of malignancy (unrounded).
        call: ``malignant`` or ``benign``.
        threshold: decision threshold applied to ``probability``.
        aggregation: how slices and fold models were combined (words).
        per_model: each fold model's patient probability.
        box: ``x0,y0,x1,y1`` half-open box on the canonical T2 grid.
        slice_index: canonical T2 lesion slices.
        slice_probability: probability of each lesion slice (mean over fold models).
        heatmaps: ``(n_slices, P, P)`` heatmaps on the crop grid, or None.
        patch_size: P.
        margin: crop margin (fraction of the side added on each side), as in extraction.
        algorithm: who made it.
        heatmap_method: the explanation method that made ``heatmaps`` (a name of :data:`spinedx.explain.METHODS`;
            a prediction's ``record["explanation"]["method"]``); required with heatmaps.
    """

    probability: float
    call: str
    threshold: float
    aggregation: str
    per_model: tuple[float, ...]
    box: tuple[int, int, int, int]
    slice_index: tuple[int, ...]
    slice_probability: tuple[float, ...]
    heatmaps: np.ndarray | None
    patch_size: int
    margin: float
    algorithm: AlgorithmInfo
    extra: dict[str, Any] = field(default_factory=dict)
    heatmap_method: str | None = None

    def __post_init__(self) -> None:
        if self.call not in ("malignant", "benign"):
            raise ValueError(f"call must be 'malignant' or 'benign', got {self.call!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} is outside [0, 1]")
        if len(self.slice_probability) != len(self.slice_index):
            raise ValueError("one probability per lesion slice is needed")
        if self.heatmaps is not None and len(self.heatmaps) != len(self.slice_index):
            raise ValueError("one heatmap per lesion slice is needed")
        if self.heatmaps is not None and not self.heatmap_method:
            raise ValueError("heatmaps need the method that made them (heatmap_method)")


def model_fingerprint(run_dir: str | Path, folds: Any = None) -> str:
    """sha256 fingerprint of a run's fold models: the hash of the lines ``<fold> <sha256 of model.pt>``.

    The same weights give the same fingerprint in a run folder and in a bundle exported from it, so a
    DICOM result names the model, not the folder it was loaded from.

    Args:
        run_dir: a run folder or a model bundle.
        folds: the fold numbers whose models answered (a prediction's ``model.folds``); None: every
            ``folds/<k>/model.pt`` of the folder.

    Raises:
        SpinedxError: no fold model, a listed fold without ``model.pt``, or an entry of ``folds/`` that is not
            a fold number (``1.bak``: a reader cannot tell which model it is).
    """
    run_dir = Path(run_dir)
    folds_dir = run_dir / "folds"
    if folds is None:
        found: list[int] = []
        for entry in sorted(folds_dir.iterdir()) if folds_dir.is_dir() else []:
            if entry.name.startswith("."):
                continue  # temporaries of folds being written, desktop files
            if not entry.name.isdigit():
                raise SpinedxError(f"unexpected entry {entry.name!r} in folds/: move it out of the run folder",
                                   where=str(folds_dir))
            if (entry / "model.pt").is_file():
                found.append(int(entry.name))
        folds = found
    paths = {int(k): folds_dir / str(int(k)) / "model.pt" for k in folds}
    if not paths:
        raise SpinedxError("no fold models (folds/<k>/model.pt) to fingerprint", where=str(run_dir))
    for k, p in paths.items():
        if not p.is_file():
            raise SpinedxError(f"fold {k} has no model.pt", where=str(p.parent))
    return fingerprint_lines((k, _sha256_file(p)) for k, p in paths.items())


def fingerprint_lines(items: Any) -> str:
    """The fold models' fingerprint: sha256 of ``"<fold> <sha256 of model.pt>\\n"`` lines in fold order (the same
    weights give the same fingerprint in a run folder and in a bundle exported from it;
    see :func:`model_fingerprint`)."""
    text = "".join(f"{fold} {digest}\n" for fold, digest in sorted(items))
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_from_prediction(prediction: Any, *, model_hash: str | None = None) -> ResultContent:
    """The DICOM result content of a :class:`spinedx.predict.CasePrediction`.

    Args:
        prediction: the prediction (its ``record`` holds the box, crop settings and model).
        model_hash: fingerprint of the models; None: computed from the run folder the record names.

    Raises:
        SpinedxError: the prediction lacks a value the result needs.
    """
    rec = prediction.record
    try:
        box = tuple(int(v) for v in rec["inputs"]["box"])
        cfg = rec["preprocessing"]["extract_config"]
        patch_size, margin = int(cfg["patch_size"]), float(cfg["margin"])
        model = rec["model"]
    except (KeyError, TypeError) as exc:
        raise SpinedxError(f"the prediction record lacks {exc}; it was not made by spinedx.predict",
                           where="prediction") from None
    if model_hash is None:
        model_hash = model_fingerprint(model["run_dir"], model.get("folds"))
    n_models = len(prediction.per_model)
    engine = ", ONNX Runtime" if rec.get("engine") == "onnxruntime" else ""
    algo = AlgorithmInfo(ALGORITHM_NAME, __version__, model_hash,
                         f"{model.get('backbone', 'cnn')}, ensemble mean of {n_models} fold models{engine}")
    probs = np.asarray(prediction.slice_probability, dtype=np.float64)
    heat = None if prediction.heatmaps is None else np.asarray(prediction.heatmaps, dtype=np.float32)
    method = (rec.get("explanation") or {}).get("method") if heat is not None else None
    if heat is not None and not method:
        raise SpinedxError("the prediction has heatmaps but its record names no explanation method",
                           where="prediction")
    return ResultContent(
        probability=float(prediction.probability), call=str(prediction.call), threshold=float(prediction.threshold),
        aggregation=str(rec.get("aggregation", "max over slices, mean over fold models")),
        per_model=tuple(float(v) for v in prediction.per_model), box=box,  # type: ignore[arg-type]
        slice_index=tuple(int(s) for s in prediction.slice_index),
        slice_probability=tuple(float(v) for v in probs.mean(axis=0)), heatmaps=heat, patch_size=patch_size,
        margin=margin, algorithm=algo, heatmap_method=method)
