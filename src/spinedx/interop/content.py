"""What a DICOM result says: the prediction's values and the algorithm that made them, free of any file format.

:class:`ResultContent` is built from a :class:`spinedx.predict.CasePrediction` by :func:`content_from_prediction`
and is the only input of the SR, Parametric Map and Secondary Capture writers, so all say the same thing. The
decision a prediction states (issue 20: ``decision``, ``refer_reasons``, calibrated ``probability``, ...) is read from
``prediction.json`` by one function, :func:`decision_of`, which falls back to the fields of predictions made before
those existed (``call`` -> decision, ``patient_probability`` -> probability).
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


#: The decisions a prediction can state.
DECISIONS = ("benign", "malignant", "refer")

#: Words for each reason to refer (``prediction.json`` ``refer_reasons``), as the SR and the overlays state them.
REFER_REASONS = {
    "outside_training_data": "outside the training data",
    "conformal_ambiguous": "both calls plausible",
    "conformal_empty": "neither call plausible",
    "models_disagree": "the fold models disagree",
}


@dataclass(frozen=True)
class Decision:
    """The decision of one prediction, as the DICOM results state it.

    Attributes:
        decision: ``benign``, ``malignant`` or ``refer``.
        probability: patient probability of malignancy stated as the result (calibrated when the run has a
            calibrator; else the ensemble mean).
        probability_uncalibrated: the ensemble mean before calibration (None: the prediction does not say).
        threshold: the run's decision threshold.
        refer_reasons: why the prediction refers (names of :data:`REFER_REASONS`, or others as recorded).
        conformal_set: the conformal prediction set (None: not recorded).
        alpha: the conformal miscoverage level (None: not recorded).
        synthetic: the models were trained on a synthetic cohort (None: unknown).
        trained_on: the run's training provenance as ``prediction.json`` records it (patients, prevalence, ...).
        source: ``"decision"`` (the prediction states its decision) or ``"call"`` (a prediction made before the
            decision fields existed: its call at the threshold, nothing checked beyond the probability).
    """

    decision: str
    probability: float
    threshold: float
    probability_uncalibrated: float | None = None
    refer_reasons: tuple[str, ...] = ()
    conformal_set: tuple[str, ...] | None = None
    alpha: float | None = None
    synthetic: bool | None = None
    trained_on: dict[str, Any] | None = None
    source: str = "decision"

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")
        for name in ("probability", "probability_uncalibrated"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} {v} is not a probability in [0, 1]")
        if self.refer_reasons and self.decision != "refer":
            raise ValueError(f"refer_reasons given for a {self.decision} decision")

    @property
    def reasons_text(self) -> str:
        """The reasons to refer in words (``"outside the training data; the fold models disagree"``)."""
        words = [REFER_REASONS.get(r, r.replace("_", " ")) for r in self.refer_reasons]
        return "; ".join(words) if words else "no reason recorded"

    def statement(self) -> str:
        """The decision in one line, as a viewer shows it: ``"spinedx: MALIGNANT"``, ``"spinedx: INDETERMINATE,
        refer (outside the training data)"``."""
        if self.decision == "refer":
            return f"spinedx: INDETERMINATE, refer ({self.reasons_text})"
        return f"spinedx: {self.decision.upper()}"

    def provenance(self) -> str:
        """What the model was trained on, and the notice: ``"trained on a synthetic cohort; research use only"``."""
        cohort = {True: "trained on a synthetic cohort; ", False: "", None: ""}[self.synthetic]
        return f"{cohort}research use only"


def _probability(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpinedxError(f"{name} is not a number ({value!r})", where="prediction.json") from None
    if not (np.isfinite(v) and 0.0 <= v <= 1.0):
        raise SpinedxError(f"{name} {v} is not a probability in [0, 1]", where="prediction.json")
    return v


def _synthetic(trained_on: Any, model: dict[str, Any]) -> bool | None:
    """Whether the models were trained on a synthetic cohort: ``trained_on`` (a flag, or the cohort's kind/origin
    naming "synthetic" or "real"), else the run record's ``model.synthetic``."""
    if isinstance(trained_on, dict):
        if isinstance(trained_on.get("synthetic"), bool):
            return bool(trained_on["synthetic"])
        for key in ("cohort", "kind", "origin", "data"):
            v = str(trained_on.get(key, "")).lower()
            if "synthetic" in v:
                return True
            if v == "real":
                return False
    elif isinstance(trained_on, str):
        return "synthetic" in trained_on.lower()
    flag = model.get("synthetic")
    return bool(flag) if isinstance(flag, bool) else None


def decision_of(record: dict[str, Any]) -> Decision:
    """The decision a ``prediction.json`` document states: the one mapping from its fields to what the DICOM
    results say.

    Reads ``decision``, ``refer_reasons``, ``probability`` (calibrated), ``probability_uncalibrated``,
    ``conformal_set``, ``alpha`` and ``trained_on`` (issue 20); a document made before those fields existed gives its
    ``call`` as the decision and ``patient_probability`` as the probability (``source="call"``).

    Raises:
        SpinedxError: a decision that is not benign/malignant/refer, a probability outside [0, 1], reasons to
            refer on a decision that is not refer, or a document with neither a decision nor a call.
    """
    where = "prediction.json"
    decision = record.get("decision")
    source = "decision"
    if decision is None:
        decision, source = record.get("call"), "call"
    if decision not in DECISIONS or (source == "call" and decision == "refer"):
        raise SpinedxError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}", where=where)
    prob_value = record.get("probability")
    if prob_value is None:
        prob_value = record.get("patient_probability")
    probability = _probability(prob_value, "probability")
    raw = record.get("probability_uncalibrated")
    uncalibrated = None if raw is None else _probability(raw, "probability_uncalibrated")
    reasons = tuple(str(r) for r in (record.get("refer_reasons") or ()))
    if reasons and decision != "refer":
        raise SpinedxError(f"refer_reasons {list(reasons)} given with decision {decision!r}", where=where)
    cset = record.get("conformal_set")
    alpha = record.get("alpha")
    model = record.get("model") or {}
    return Decision(
        decision=str(decision), probability=probability, threshold=float(record.get("threshold", 0.5)),
        probability_uncalibrated=uncalibrated, refer_reasons=reasons,
        conformal_set=None if cset is None else tuple(str(c) for c in cset),
        alpha=None if alpha is None else float(alpha), synthetic=_synthetic(record.get("trained_on"), model),
        trained_on=record.get("trained_on") if isinstance(record.get("trained_on"), dict) else None, source=source)


@dataclass(frozen=True)
class ResultContent:
    """The values a DICOM result carries.

    Attributes:
        probability: patient probability of malignancy stated (unrounded; ``decision.probability``).
        decision: what the prediction decided (:func:`decision_of`).
        threshold: decision threshold applied to the probability.
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
    decision: Decision
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
        if self.probability != self.decision.probability:
            raise ValueError("the probability must be the decision's")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} is outside [0, 1]")
        if len(self.slice_probability) != len(self.slice_index):
            raise ValueError("one probability per lesion slice is needed")
        if self.heatmaps is not None and len(self.heatmaps) != len(self.slice_index):
            raise ValueError("one heatmap per lesion slice is needed")
        if self.heatmaps is not None and not self.heatmap_method:
            raise ValueError("heatmaps need the method that made them (heatmap_method)")

    @property
    def call(self) -> str:
        """The decision (``benign``, ``malignant`` or ``refer``)."""
        return self.decision.decision


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
    decision = decision_of(rec)
    return ResultContent(
        probability=decision.probability, decision=decision, threshold=float(prediction.threshold),
        aggregation=str(rec.get("aggregation", "max over slices, mean over fold models")),
        per_model=tuple(float(v) for v in prediction.per_model), box=box,  # type: ignore[arg-type]
        slice_index=tuple(int(s) for s in prediction.slice_index),
        slice_probability=tuple(float(v) for v in probs.mean(axis=0)), heatmaps=heat, patch_size=patch_size,
        margin=margin, algorithm=algo, heatmap_method=method)
