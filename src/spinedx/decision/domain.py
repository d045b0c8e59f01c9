"""Outside the training data, and fold models that disagree: the two checks of a case against its run's training.

**Domain check.** A case is described by the radiomics features the baseline already computes
(:func:`spinedx.baselines.radiomics.radiomics_features`: IBSI first-order, GLCM and GLRLM features of each of the six
z-scored patch channels), averaged over the case's lesion slices. Its distance to the training patients is the
Mahalanobis distance under a Ledoit-Wolf shrunk covariance (:class:`sklearn.covariance.LedoitWolf`; 168 features and
~190 patients need the shrinkage) of the standardised features. The threshold is a high quantile
(:data:`DOMAIN_QUANTILE`) of the training patients' own **cross-fitted** distances: each patient's distance to the
reference fitted on the training patients of the other folds (the run's ``splits.json``), so a training patient is
measured as a new case is, by a reference that never saw it. The deployed reference is fitted on every patient; it
stores a mean and a precision matrix only, no patient's features (a bundle carries nothing about the training
patients). Beyond the threshold the answer is refer with ``outside_training_data``, whatever the probability.

**Model spread.** A new case is out-of-sample for every fold model; a training patient only for the model of its
own fold, so the fold models' spread on training patients (nine of ten trained on them) is no reference. The honest
reference is the disagreement between fold models on patients none of them trained on: each patient's out-of-fold
prediction and the predictions of the fold models that held it out as an inner-validation patient (``splits.json``
``inner_val``; held out of training unless the run's early stopping was ``outer``). The statistic is the mean
absolute difference between two fold models' patient probabilities (Gini's mean difference): on a new case the mean
over all pairs of the fold models, on a training patient over the pairs of models that did not train on it. Both
estimate the same quantity (how far two fold models lie apart on an unseen case), but a new case averages 45 pairs and
a training patient usually one, so the reference's high quantile (:data:`SPREAD_QUANTILE`) lies above the new
cases' (conservative: it refers fewer cases for disagreement, never more than the quantile says).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spinedx.runfolder import PatchSet

__all__ = ["DOMAIN_METHOD", "DOMAIN_QUANTILE", "SPREAD_QUANTILE", "SPREAD_STATISTIC", "DomainReference",
           "SpreadReference", "case_features", "fit_domain", "fit_run_domain", "fit_spread", "pairwise_spread",
           "patient_features"]

#: How the domain distance is computed (recorded in ``domain.json``).
DOMAIN_METHOD = "mahalanobis_ledoit_wolf_radiomics"
#: Quantile of the training patients' cross-fitted distances beyond which a case is outside the training data
#: (chosen on development seeds: docs/decision.md, "Outside the training data").
DOMAIN_QUANTILE = 0.99
#: The spread statistic: mean absolute difference between two fold models' patient probabilities.
SPREAD_STATISTIC = "mean_abs_pairwise_difference"
#: Quantile of the training patients' honest spreads beyond which the fold models disagree.
SPREAD_QUANTILE = 0.95
#: Format of ``domain.json``.
DOMAIN_FORMAT = 1


def case_features(x: np.ndarray) -> np.ndarray:
    """One case's feature vector: the radiomics features of its patches ``(n_slices, C, P, P)``, averaged over
    the slices."""
    from spinedx.baselines.radiomics import radiomics_features

    feats, _ = radiomics_features(np.asarray(x))
    return feats.mean(axis=0)


def patient_features(features: np.ndarray, patient_id: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-patch features ``(N, F)`` averaged per patient: (patient ids in sorted order, ``(n_patients, F)``)."""
    pid = np.asarray(patient_id).astype(str)
    ids = sorted(set(pid.tolist()))
    return ids, np.stack([features[pid == p].mean(axis=0) for p in ids])


@dataclass(frozen=True)
class DomainReference:
    """The training patients' feature distribution and the distance beyond which a case is outside it.

    Attributes:
        center: per-feature mean of the training patients (standardisation).
        scale: per-feature SD (1 where a feature is constant).
        location: Ledoit-Wolf location of the standardised features.
        precision: Ledoit-Wolf precision matrix of the standardised features.
        threshold: distances above it are outside the training data.
        quantile: the quantile of the cross-fitted training distances that ``threshold`` is.
        n_patients: training patients.
        cross_fitted: summary of the training patients' cross-fitted distances (median, max, share above).
        method: :data:`DOMAIN_METHOD`.
    """

    center: np.ndarray
    scale: np.ndarray
    location: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float
    n_patients: int
    cross_fitted: dict[str, Any] = field(default_factory=dict)
    method: str = DOMAIN_METHOD

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of feature vectors ``(n, F)`` (or one ``(F,)``) to the training patients."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != len(self.center):
            raise ValueError(f"{f.shape[1]} features, the domain reference has {len(self.center)}")
        d = (f - self.center) / self.scale - self.location
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``domain.json`` ``domain``)."""
        return {"method": self.method, "threshold": float(self.threshold), "quantile": float(self.quantile),
                "n_patients": int(self.n_patients), "cross_fitted": dict(self.cross_fitted),
                "center": self.center.tolist(), "scale": self.scale.tolist(), "location": self.location.tolist(),
                "precision": self.precision.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainReference:
        """Read :meth:`to_dict`'s output.

        Raises:
            ValueError: a method this spinedx does not know, or arrays of inconsistent shapes.
        """
        if d.get("method") != DOMAIN_METHOD:
            raise ValueError(f"domain method {d.get('method')!r}, this spinedx computes {DOMAIN_METHOD!r}")
        center, scale, location = (np.asarray(d[k], dtype=np.float64) for k in ("center", "scale", "location"))
        precision = np.asarray(d["precision"], dtype=np.float64)
        n = len(center)
        if scale.shape != (n,) or location.shape != (n,) or precision.shape != (n, n) or not n:
            raise ValueError("center, scale, location and precision have inconsistent shapes")
        if not (np.isfinite(precision).all() and (scale > 0).all()):
            raise ValueError("non-finite precision or non-positive scale")
        return cls(center, scale, location, precision, float(d["threshold"]), float(d["quantile"]),
                   int(d["n_patients"]), dict(d.get("cross_fitted") or {}))


def _fit_reference(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    center = f.mean(axis=0)
    scale = f.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature: distances ignore it
    lw = LedoitWolf().fit((f - center) / scale)
    return center, scale, lw.location_, lw.precision_


def fit_domain(features: np.ndarray, fold_of: np.ndarray, quantile: float = DOMAIN_QUANTILE) -> DomainReference:
    """Fit the domain reference on training patients' features with a cross-fitted threshold.

    Args:
        features: ``(n_patients, F)`` patient features (:func:`patient_features`).
        fold_of: each patient's validation fold; patient i's cross-fitted distance is to the reference fitted on
            the patients of the other folds.
        quantile: the quantile of the cross-fitted distances that becomes the threshold.

    Returns:
        The reference fitted on every patient, with the threshold.
    """
    f = np.asarray(features, dtype=np.float64)
    folds = np.asarray(fold_of)
    crossed = np.empty(len(f))
    for k in np.unique(folds):
        held = folds == k
        ref = DomainReference(*_fit_reference(f[~held]), threshold=np.inf, quantile=quantile,
                              n_patients=int((~held).sum()))
        crossed[held] = ref.distance(f[held])
    threshold = float(np.quantile(crossed, quantile))
    summary = {"median": float(np.median(crossed)), "max": float(crossed.max()),
               "share_above_threshold": float(np.mean(crossed > threshold)), "n": len(crossed),
               "how": "each training patient's distance to the reference fitted on the patients of the other folds"}
    return DomainReference(*_fit_reference(f), threshold=threshold, quantile=quantile, n_patients=len(f),
                           cross_fitted=summary)


def pairwise_spread(per_model: np.ndarray) -> float:
    """Mean absolute difference between the fold models' patient probabilities over all pairs (0 for one model)."""
    p = np.asarray(per_model, dtype=np.float64).ravel()
    if len(p) < 2:
        return 0.0
    diff = np.abs(p[:, None] - p[None, :])
    return float(diff[np.triu_indices(len(p), 1)].mean())


@dataclass(frozen=True)
class SpreadReference:
    """The fold models' honest disagreement on patients they did not train on, and the threshold above it.

    Attributes:
        threshold: a case whose :func:`pairwise_spread` exceeds it has disagreeing fold models.
        quantile: the quantile of the reference spreads ``threshold`` is.
        n_patients: training patients with at least two fold models that did not train on them.
        median: median reference spread.
        statistic: :data:`SPREAD_STATISTIC`.
    """

    threshold: float
    quantile: float
    n_patients: int
    median: float
    statistic: str = SPREAD_STATISTIC

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``domain.json`` ``spread``)."""
        return {"statistic": self.statistic, "threshold": float(self.threshold), "quantile": float(self.quantile),
                "n_patients": int(self.n_patients), "median": float(self.median),
                "how": "mean absolute difference between the patient probabilities of fold models that did not "
                       "train on the patient (its out-of-fold model and the models that held it out as an inner "
                       "validation patient)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpreadReference:
        """Read :meth:`to_dict`'s output.

        Raises:
            ValueError: another statistic.
        """
        if d.get("statistic") != SPREAD_STATISTIC:
            raise ValueError(f"spread statistic {d.get('statistic')!r}, this spinedx computes {SPREAD_STATISTIC!r}")
        return cls(float(d["threshold"]), float(d["quantile"]), int(d["n_patients"]), float(d["median"]))


def fit_spread(unseen: dict[str, list[float]], quantile: float = SPREAD_QUANTILE) -> SpreadReference | None:
    """The spread reference from each patient's probabilities by fold models that did not train on it.

    Returns:
        None when fewer than 10 patients have two such predictions (no honest reference).
    """
    spreads = np.array([pairwise_spread(np.array(v)) for v in unseen.values() if len(v) >= 2])
    if len(spreads) < 10:
        return None
    return SpreadReference(float(np.quantile(spreads, quantile)), quantile, len(spreads), float(np.median(spreads)))


def _unseen_predictions(run_dir: Path, patches: PatchSet) -> dict[str, list[float]] | str:
    """Each patient's patient-level probabilities by the fold models that did not train on it, or why there are
    none. The out-of-fold ones come from ``oof_patients.csv``; the inner-validation ones from each fold's
    ``inner_predictions.csv`` (written by ``spinedx cv`` for the calibration) where the run folder has them, else they
    are computed here with the inference layer's torch engine (fp32, the run's views: the same numbers)."""
    import warnings

    from spinedx.common import aggregate
    from spinedx.inference import TorchEngine
    from spinedx.models.run import load_fold_model
    from spinedx.models.tta import TTAViews
    from spinedx.runfolder import RunFolder

    rf = RunFolder(run_dir)
    record = rf.read_record()
    if record.config.optimistic:
        return "the run's early stopping used its validation folds, so its inner patients were trained on"
    splits = rf.read_splits()
    oof = rf.read_oof_patients(record, splits)
    unseen: dict[str, list[float]] = {str(p): [float(v)] for p, v in zip(oof["patient_id"], oof["probability"],
                                                                           strict=True)}
    views = TTAViews.from_config(record.config)
    pid = patches.patient_id.astype(str)
    paths = rf.fold_models(allow_missing=False).paths
    stored = getattr(rf, "read_inner_predictions", None)  # the calibration's inner predictions, when recorded
    for s in splits.splits:
        inner = [str(p) for p in s.inner_val]
        table = stored(s.fold, splits) if stored is not None else None
        if table is not None:
            slice_pid, prob = table["patient_id"].astype(str).to_numpy(), table["probability"].to_numpy()
        else:
            mask = np.isin(pid, inner)
            if not mask.any():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load_fold_model(paths[s.fold], fold=s.fold, backbone=record.config.backbone)
            slice_pid, prob = pid[mask], TorchEngine([model], folds=[s.fold], views=views).predict(patches.x[mask])[0]
        for p in inner:
            sel = slice_pid == p
            if sel.any():
                unseen.setdefault(p, []).append(float(aggregate(prob[sel], record.config.aggregation)))
    return unseen


def fit_run_domain(run_dir: str | Path, *, patches: PatchSet | None = None,
                   features: np.ndarray | None = None) -> dict[str, Any]:
    """Fit a finished run's domain reference and spread reference and write ``domain.json`` through the run folder.

    Called at the end of :func:`spinedx.evaluation.finish.finish_run` (a few seconds: radiomics features when not
    given, one small covariance per fold, each fold model on its inner-validation patches).

    Args:
        run_dir: the run folder (its out-of-fold tables written).
        patches: the run's patches, if loaded (checked by sha256 either way).
        features: their per-patch radiomics features, if computed.

    Returns:
        The document written.
    """
    from spinedx.baselines.radiomics import radiomics_features
    from spinedx.common import json_clean
    from spinedx.runfolder import RunFolder

    rf = RunFolder(run_dir)
    record = rf.read_record()
    splits = rf.read_splits()
    patches = record.checked_patches(patches)
    if features is None:
        features, _ = radiomics_features(patches.x)
    ids, feats = patient_features(features, patches.patient_id)
    fold_of = np.array([splits.fold_of[p] for p in ids])
    domain = fit_domain(feats, fold_of)
    unseen = _unseen_predictions(rf.path, patches)
    spread = fit_spread(unseen) if isinstance(unseen, dict) else None
    doc = {"format": DOMAIN_FORMAT, "domain": domain.to_dict(),
           "features": "radiomics features of the six patch channels (spinedx.baselines.radiomics), mean over a "
                       "patient's lesion slices",
           "spread": None if spread is None else spread.to_dict(),
           "spread_absent_reason": None if spread is not None else (
               unseen if isinstance(unseen, str) else "fewer than 10 patients have two fold models that did not "
                                                      "train on them")}
    rf.write_domain(doc)
    return json_clean(doc)
