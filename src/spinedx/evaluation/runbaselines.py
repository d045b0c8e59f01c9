"""The baselines of a cross-validation run, fitted on the run's own folds and compared with the model.

Every ``spinedx cv`` run fits, next to the CNN and on exactly its patient folds (``splits.json``):

* ``radiomics``: IBSI first-order, GLCM and GLRLM features of every channel of every patch
  (:func:`spinedx.baselines.radiomics_features`, computed once per run), an L2 logistic regression with C
  chosen inside each training fold (:func:`spinedx.baselines.cross_validate`), the slice probabilities
  aggregated per patient by the run's rule (maximum, as the paper) and called at the run's threshold;
* ``features``: the logistic regression on the cohort manifest's imaging features (the paper's Table 1
  regression, :func:`spinedx.evaluation.logistic.feature_logistic`), when the manifest recorded by the
  patches' ``extract.json`` is still there, unchanged, and has ``feature_*`` columns; otherwise the baseline
  is recorded as absent with the reason.

The fitted baselines are stored in ``baselines/`` of the run (or of the repeat) through
:class:`spinedx.runfolder.RunFolder`, keyed by everything they depend on (patches, splits, manifest,
aggregation, threshold, this module's version), so a resumed or re-finished run reuses them instead of
refitting. :func:`baseline_metrics` then scores them like the model (the same metrics and intervals,
:func:`spinedx.evaluation.metrics.classification_report`) and compares each with the model by DeLong's
paired test of the patient AUCs (:func:`spinedx.baselines.delong_test`). The baselines themselves (features, fits,
DeLong) are :mod:`spinedx.baselines`, which knows nothing of run folders; the command line shows them with
:func:`spinedx.cli.cvview.baseline_lines`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx.common import format_p

if TYPE_CHECKING:
    import pandas as pd

    from spinedx.runfolder import PatchSet, RunFolder, RunRecord, Splits

#: Bump when the baselines' definition changes: cached baselines of another version are refitted.
VERSION = 1
#: Baselines in display order, with their descriptions.
DESCRIPTIONS: dict[str, str] = {
    "radiomics": "IBSI first-order, GLCM and GLRLM features of the 6 patch channels, L2 logistic regression "
                 "(C chosen inside each training fold), slice probabilities aggregated per patient like the model's",
    "features": "logistic regression on the cohort manifest's feature_* columns (the paper's Table 1 "
                "regression), one probability per patient",
}
#: Short names for tables and the command line.
LABELS: dict[str, str] = {"radiomics": "radiomics baseline", "features": "feature regression"}


@dataclass
class RunBaselines:
    """The fitted baselines of one cross-validation (run or repeat).

    Attributes:
        doc: ``baselines.json``: key, per baseline its status (``ok``/``absent``), reason, settings, timing.
        tables: baseline name -> out-of-fold patient table (``patient_id, fold, label, probability, prediction``).
        reused: True when read from the run folder instead of fitted now.
    """

    doc: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    reused: bool = False


def radiomics_matrix(patches: PatchSet) -> tuple[np.ndarray, float]:
    """Radiomics features of every patch (N, 6 x 28) and the seconds they took."""
    from spinedx.baselines.radiomics import radiomics_features

    t0 = time.perf_counter()
    feats, _ = radiomics_features(patches.x)
    return feats, time.perf_counter() - t0


def _splits_sha(splits: Splits) -> str:
    return hashlib.sha256(json.dumps(splits.to_dict(), sort_keys=True).encode()).hexdigest()


def _manifest_state(record: RunRecord, patients: list[str], labels: dict[str, int]) -> tuple[Any, str | None, str]:
    """(study table or None, why absent or None, manifest sha256 or a marker) for the feature regression."""
    from spinedx.provenance import sha256_file

    man = record.patches.manifest
    if man is None:
        return None, ("the patches record no cohort manifest (extract.json without 'manifest'), so the imaging "
                      "features are unknown"), "none"
    path = Path(man["path"])
    if not path.is_file():
        return None, f"the cohort manifest recorded at extraction ({path}) no longer exists", "missing"
    sha = sha256_file(path)
    if sha != man["sha256"]:
        return None, (f"the cohort manifest {path} changed since the patches were extracted from it (sha256 "
                      "differs), so its features may describe other patients"), sha
    from spinedx.evaluation.study import load_study_table
    from spinedx.evaluation.tables import feature_columns

    frame = load_study_table(path)
    if not feature_columns(frame):
        return None, f"the cohort manifest {path} has no feature_* columns", sha
    frame = frame.set_index("patient_id", drop=False)
    absent = [p for p in patients if p not in frame.index]
    if absent:
        return None, f"{len(absent)} patient(s) of the run are not in the manifest {path} (e.g. {absent[0]})", sha
    wrong = [p for p in patients if int(frame.loc[p, "y"]) != labels[p]]
    if wrong:
        return None, f"the manifest {path} gives patient {wrong[0]} another label than the patches", sha
    return frame.loc[patients].reset_index(drop=True), None, sha


def _patient_table(pid: np.ndarray, fold: np.ndarray, label: np.ndarray, prob: np.ndarray, rule: str,
                   threshold: float) -> pd.DataFrame:
    import pandas as pd

    from spinedx.evaluation.aggregate import aggregate_patients

    slices = pd.DataFrame({"patient_id": pid, "fold": fold, "label": label, "probability": prob})
    out = aggregate_patients(slices, rule, threshold)
    return out.sort_values("patient_id", kind="stable").reset_index(drop=True)


def fit_baselines(
    rf: RunFolder, record: RunRecord, splits: Splits, patches: PatchSet, *, repeat: int | None = None,
    features: np.ndarray | None = None, feature_seconds: float = 0.0,
) -> RunBaselines:
    """The run's baselines on the folds of ``splits``: reused from ``baselines/`` when fitted with the same
    inputs, else fitted now and written there.

    Args:
        rf: the run folder.
        record: its ``config.yaml``.
        splits: the folds (of ``repeat``).
        patches: the run's patches (checked against the record by the caller).
        repeat: the repeat of a repeated cross-validation (None: the run itself).
        features: radiomics features of ``patches`` already computed (:func:`radiomics_matrix`), if any.
        feature_seconds: the seconds those features took (recorded as ``seconds_features``).
    """
    import pandas as pd

    from spinedx.baselines.fit import cross_validate
    from spinedx.evaluation.splits import patient_labels

    config = record.config
    labels = patient_labels(patches.patient_id, patches.label, where=str(patches.path))
    patients = sorted(labels)
    frame, why_absent, man_sha = _manifest_state(record, patients, labels)
    key = {"version": VERSION, "patches_sha256": patches.sha256, "splits_sha256": _splits_sha(splits),
           "manifest": man_sha, "aggregation": config.aggregation, "threshold": config.threshold}
    cached = rf.read_baselines(repeat)
    if cached is not None and cached[0].get("key") == key:
        return RunBaselines(cached[0], cached[1], reused=True)

    doc: dict[str, Any] = {"format": 1, "key": key, "baselines": {}}
    tables: dict[str, pd.DataFrame] = {}
    seconds_features = feature_seconds
    if features is None:
        features, seconds_features = radiomics_matrix(patches)
    t0 = time.perf_counter()
    oof = cross_validate("radiomics", features, patches.label, patches.patient_id, splits.fold_of, seed=splits.seed)
    tables["radiomics"] = _patient_table(patches.patient_id, oof.fold, patches.label, oof.probability,
                                         config.aggregation, config.threshold)
    doc["baselines"]["radiomics"] = {
        "status": "ok", "reason": None, "description": DESCRIPTIONS["radiomics"], "level": "slice",
        "n_features": int(features.shape[1]), "chosen_c": {str(k): v for k, v in oof.chosen_c.items()},
        "seconds_features": round(seconds_features, 2), "seconds_fit": round(time.perf_counter() - t0, 2),
    }

    if frame is None:
        doc["baselines"]["features"] = {"status": "absent", "reason": why_absent,
                                        "description": DESCRIPTIONS["features"]}
    else:
        from spinedx.evaluation.logistic import feature_logistic

        t0 = time.perf_counter()
        fit = feature_logistic(frame, splits.validation_sets, seed=splits.seed, folds_source="run splits.json",
                               bootstrap_resamples=100)
        prob = dict(zip(fit["oof"]["patient_id"], fit["oof"]["probability"], strict=True))
        kept = [p for p in patients if p in prob]
        table = pd.DataFrame({"patient_id": kept, "fold": [splits.fold_of[p] for p in kept],
                              "label": [labels[p] for p in kept], "probability": [prob[p] for p in kept]})
        table["prediction"] = (table["probability"] >= config.threshold).astype(int)
        tables["features"] = table
        doc["baselines"]["features"] = {
            "status": "ok", "reason": None, "description": DESCRIPTIONS["features"], "level": "patient",
            "n_features": len(fit["features"]), "method": fit["method"], "separation": fit["separation"],
            "n_left_out_missing_features": fit["n_left_out_missing_features"],
            "seconds_fit": round(time.perf_counter() - t0, 2),
        }
    rf.write_baselines(doc, tables, repeat)
    return RunBaselines(doc, tables)


def comparison_sentence(name: str, test: dict[str, Any], model: str = "the CNN") -> str:
    """One sentence on model vs baseline that cannot flatter the model.

    ``the CNN exceeds ...`` only when the whole 95% interval of the AUC difference is above 0; a difference at
    or below 0 reads ``does not exceed``; a positive difference whose interval includes 0 reads ``is not shown
    to exceed``; an interval entirely below 0 reads ``is worse than``.
    """
    label = LABELS.get(name, name)
    d, lo, hi, p = (test.get(k) for k in ("difference", "difference_low", "difference_high", "p_value"))
    if d is None or not math.isfinite(float(d)):
        return f"{model} and the {label} cannot be compared (no AUC)"
    aucs = f"{test['auc_a']:.3f} vs {test['auc_b']:.3f}, " if test.get("auc_a") is not None else ""
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        numbers = f"{aucs}difference {d:+.3f}"
    else:
        numbers = f"{aucs}difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, DeLong p {format_p(p)}"
    verb = {"exceeds": "exceeds", "worse": "is worse than", "does not exceed": "does not exceed",
            "not shown": "is not shown to exceed"}[verdict(test)]
    return f"{model} {verb} the {label} (patient AUC {numbers})"


def verdict(test: dict[str, Any]) -> str:
    """``exceeds``, ``not shown``, ``does not exceed`` or ``worse`` (the verb of :func:`comparison_sentence`)."""
    d, lo, hi = (test.get(k) for k in ("difference", "difference_low", "difference_high"))
    if d is None or not math.isfinite(float(d)):
        return "n/a"
    if lo is not None and math.isfinite(float(lo)) and lo > 0:
        return "exceeds"
    if hi is not None and math.isfinite(float(hi)) and hi < 0:
        return "worse"
    return "does not exceed" if d <= 0 else "not shown"


def baseline_metrics(baselines: RunBaselines, patients: pd.DataFrame, threshold: float, seed: int,
                     n_resamples: int = 2000) -> dict[str, Any]:
    """The ``baselines`` section of ``metrics.json``: per baseline the model's metrics with intervals
    (:func:`~spinedx.evaluation.metrics.classification_report`), per-fold AUCs, and ``vs_model``: DeLong's
    paired test of model minus baseline patient AUC on the patients both scored, with :func:`comparison_sentence`.

    Args:
        baselines: from :func:`fit_baselines`.
        patients: the model's ``oof_patients.csv``.
        threshold: the run's threshold.
        seed: the bootstrap seed (the run's).
        n_resamples: bootstrap resamples of the AUC intervals.
    """
    from spinedx.baselines.compare import delong_test
    from spinedx.evaluation.metrics import classification_report, roc_auc

    out: dict[str, Any] = {}
    model = patients.set_index("patient_id")
    for name, entry in baselines.doc["baselines"].items():
        item: dict[str, Any] = {k: v for k, v in entry.items()}
        item["label"] = LABELS.get(name, name)
        table = baselines.tables.get(name)
        if entry.get("status") != "ok" or table is None:
            out[name] = item
            continue
        y = table["label"].to_numpy()
        p = table["probability"].to_numpy(dtype=float)
        item.update(classification_report(y, p, threshold=threshold, seed=seed, n_resamples=n_resamples))
        item["per_fold_auc"] = [roc_auc(g["label"].to_numpy(), g["probability"].to_numpy())
                                for _, g in table.groupby("fold")]
        common = [pid for pid in table["patient_id"] if pid in model.index]
        b = table.set_index("patient_id").loc[common]
        m = model.loc[common]
        test = delong_test(m["label"].to_numpy(), m["probability"].to_numpy(dtype=float),
                           b["probability"].to_numpy(dtype=float))
        test["n_patients"] = len(common)
        # the AUCs computed as the metrics compute them (DeLong's sums differ in the last bit: 0.8325 printed as
        # 0.832 next to a table's 0.833)
        test["auc_a"] = roc_auc(m["label"].to_numpy(), m["probability"].to_numpy(dtype=float))
        test["auc_b"] = roc_auc(b["label"].to_numpy(), b["probability"].to_numpy(dtype=float))
        test["verdict"] = verdict(test)
        test["sentence"] = comparison_sentence(name, test)
        item["vs_model"] = test
        out[name] = item
    return out
