"""The end of a cross-validation: gather the finished folds into the run's out-of-fold tables and metrics.

:func:`finish_run` reads every fold's predictions (through :class:`spinedx.runfolder.RunFolder`, strictly),
aggregates slices to patients, computes the metrics with their intervals, fits the baselines on the same folds
(:mod:`spinedx.evaluation.runbaselines`), calibrates and conformalises each fold on honest calibration data
(:mod:`spinedx.evaluation.decisioncv`) and has the run folder write ``oof_slices.csv``, ``oof_patients.csv``,
``oof_decisions.csv``, ``calibration.json`` and ``conformal.json`` (the deployed fits) and ``metrics.json``.
:func:`finish_repeats` does so for every repeat of a repeated cross-validation and adds the spread
across repeats (:func:`repeat_summary`) to the run's ``metrics.json``. Rerunning either on a finished run gives the
same files (the baselines are reused while their key holds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx.common import json_clean
from spinedx.evaluation.aggregate import aggregate_patients
from spinedx.evaluation.metrics import classification_report, patient_bootstrap_report, roc_auc
from spinedx.runfolder import PatchSet, RunFolder, RunFolderError, load_patches
from spinedx.training.config import OPTIMISTIC_WARNING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["REPEAT_METRICS", "finish_repeats", "finish_run", "repeat_summary"]


def finish_run(run_dir: str | Path, repeat: int | None = None, *, patches: PatchSet | None = None,
               features: np.ndarray | None = None, feature_seconds: float = 0.0) -> dict[str, Any]:
    """Gather the finished folds' predictions into ``oof_slices.csv``, ``oof_patients.csv`` and ``metrics.json``,
    with the baselines fitted on the same folds (:mod:`spinedx.evaluation.runbaselines`; reused when already fitted).

    Args:
        run_dir: the run folder.
        repeat: the repeat (None: the run itself).
        patches: the run's patches, if already loaded (else read from the record and checked by sha256).
        features: their radiomics features, if already computed.
        feature_seconds: the seconds those features took (recorded with the baselines).

    Raises:
        RunFolderError: a fold is not finished, or its files disagree with the run.
    """
    import pandas as pd

    from spinedx.evaluation.decisioncv import calibration_data, evaluate_decisions
    from spinedx.evaluation.runbaselines import baseline_metrics, fit_baselines, radiomics_matrix

    rf = RunFolder(run_dir)
    record = rf.read_record()
    config = record.config
    splits = rf.read_splits(repeat)
    scan = rf.scan_folds(config.folds, repeat)
    if scan.missing:
        raise RunFolderError(f"fold(s) {', '.join(map(str, scan.missing))} not finished; rerun spinedx cv in this "
                             "folder", where=str(rf.folds_dir(repeat)))
    frames = [rf.read_fold_predictions(s.fold, splits, repeat) for s in splits.splits]
    notes: list[str] = []
    numerics: dict[int, Any] = {}
    for s in splits.splits:
        done = rf.read_done(s.fold, repeat)
        notes.extend(n for n in done.get("notes", []) if n not in notes)
        numerics[s.fold] = done.get("numerics")
    note = _numerics_note(numerics)
    if note:
        notes.append(note)
    slices = pd.concat(frames, ignore_index=True).sort_values(["patient_id", "slice_index"], kind="stable")
    slices = slices.reset_index(drop=True)
    patients = aggregate_patients(slices, config.aggregation, config.threshold)
    patients = patients.sort_values("patient_id", kind="stable").reset_index(drop=True)
    rf.write_oof(slices, patients, repeat)
    seed = splits.seed  # the run's seed (repeat 0), or the repeat's

    metrics: dict[str, Any] = classification_report(patients["label"].to_numpy(), patients["probability"].to_numpy(),
                                                    threshold=config.threshold, seed=seed)
    # A patient's slices are not independent: slice-level intervals resample patients.
    metrics["slice"] = patient_bootstrap_report(slices["label"].to_numpy(), slices["probability"].to_numpy(),
                                                slices["patient_id"].to_numpy(), threshold=config.threshold,
                                                seed=seed)
    per_fold = []
    for k, grp in patients.groupby("fold"):
        sgrp = slices[slices["fold"] == k]
        per_fold.append({"fold": int(k), "n_patients": len(grp),
                         "auc": roc_auc(grp["label"].to_numpy(), grp["probability"].to_numpy()),
                         "slice_auc": roc_auc(sgrp["label"].to_numpy(), sgrp["probability"].to_numpy())})
    metrics["per_fold"] = per_fold
    metrics["per_fold_auc"] = [f["auc"] for f in per_fold]
    metrics.update({
        "level": "patient", "aggregation": config.aggregation, "threshold": config.threshold,
        "n_patients": len(patients), "n_slices": len(slices), "folds": config.folds,
        "early_stop_on": config.early_stop_on, "optimistic": config.optimistic,
        "warning": OPTIMISTIC_WARNING if config.optimistic else None,
        "weights": record.weights.to_dict(), "profile": config.profile, "backbone": config.backbone,
        "synthetic": record.synthetic, "patches_sha256": record.patches.sha256, "notes": notes,
    })
    if repeat:
        metrics.update({"repeat": int(repeat), "seed": seed})
    patches = record.checked_patches(patches)
    seconds = feature_seconds
    if features is None and not repeat:  # the baselines and the domain reference (below) use them: computed once
        features, seconds = radiomics_matrix(patches)
    baselines = fit_baselines(rf, record, splits, patches, repeat=repeat, features=features, feature_seconds=seconds)
    metrics["baselines"] = baseline_metrics(baselines, patients, config.threshold, seed)
    # calibration and conformal refer: fitted per fold on honest calibration data, scored out of fold; the run
    # deploys the fits on all folds' data (repeat 0 only: predict, serve and export read repeat 0)
    decisions = evaluate_decisions(patients, calibration_data(rf, splits, config.aggregation, repeat), config.alpha,
                                   config.threshold, seed, baselines=baselines.tables)
    metrics["calibration"], metrics["conformal"] = decisions.calibration, decisions.conformal
    if decisions.table is not None:
        rf.write_oof_decisions(decisions.table, repeat)
    else:
        rf.oof_decisions_path(repeat).unlink(missing_ok=True)
    if not repeat:
        if decisions.calibrator is not None and decisions.thresholds is not None:
            rf.write_calibration(decisions.calibrator)
            rf.write_conformal(decisions.thresholds)
        else:
            rf.remove_decision_files()  # an older fit would not describe these folds
    rf.write_metrics(metrics, repeat)
    if not repeat:  # the deployed models' references for new cases: outside the training data, fold-model spread
        from spinedx.decision.domain import fit_run_domain

        fit_run_domain(rf.path, patches=patches, features=features)
    return json_clean(metrics)


def _numerics_note(numerics: dict[int, Any]) -> str | None:
    """A note when the folds were computed under different numerics (``done.json`` ``numerics``: device, threads,
    bf16, compile, CPU kernels), e.g. a Ray cluster of unlike nodes or a run resumed on another machine: each fold's
    probabilities are valid, but they are not the bytes one setting gives. None when they agree (or none records)."""
    known = {k: v for k, v in numerics.items() if isinstance(v, dict)}
    if len({json.dumps(v, sort_keys=True) for v in known.values()}) <= 1:
        return None
    values = list(known.values())
    keys = sorted({key for v in values for key in v if len({json.dumps(w.get(key)) for w in values}) > 1})
    per_fold = "; ".join(f"fold {k}: " + ", ".join(f"{key} {v.get(key)}" for key in keys)
                         for k, v in sorted(known.items()))
    return (f"the folds were computed under different numerics ({per_fold}): each fold's probabilities are valid, "
            "but a rerun in one setting gives other last digits")


#: Metrics whose spread across repeats is reported (patient level).
REPEAT_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv")


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, SD (n-1), min and max of the finite values (None when there are fewer than one / two)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return {"values": values, "mean": float(v.mean()) if len(v) else None,
            "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()) if len(v) else None, "max": float(v.max()) if len(v) else None}


def repeat_summary(per_repeat: list[dict[str, Any]], pooled: pd.DataFrame, threshold: float, seed: int,
                   seeds: list[int]) -> dict[str, Any]:
    """The ``repeats`` section of ``metrics.json``.

    ``spread``: per metric the value of each repeat with their mean, SD (n-1) and range, for the model and each
    baseline; ``pooled``: the metrics with intervals of each patient's out-of-fold probability averaged over the
    repeats (every repeat scored the patient with a model that did not see it, so the average is out-of-fold
    too), called at the run's threshold. The intervals of single repeats ignore training randomness; the spread
    across repeats shows it.
    """
    spread = {k: _spread([m.get(k) for m in per_repeat]) for k in REPEAT_METRICS}
    baselines: dict[str, Any] = {}
    for name in per_repeat[0].get("baselines", {}):
        items = [m.get("baselines", {}).get(name, {}) for m in per_repeat]
        if all(b.get("status") == "ok" for b in items):
            baselines[name] = {k: _spread([b.get(k) for b in items]) for k in REPEAT_METRICS}
            baselines[name]["difference"] = _spread([(b.get("vs_model") or {}).get("difference") for b in items])
            baselines[name]["verdicts"] = [(b.get("vs_model") or {}).get("verdict") for b in items]
    pooled_metrics = classification_report(pooled["label"].to_numpy(), pooled["probability"].to_numpy(),
                                           threshold=threshold, seed=seed)
    return {"n": len(per_repeat), "seeds": seeds, "spread": spread, "baselines": baselines,
            "pooled": pooled_metrics, "pooled_how": "each patient's out-of-fold probability averaged over the "
            f"{len(per_repeat)} repeats, called at threshold {threshold:g}"}


def finish_repeats(run_dir: str | Path, *, patches: PatchSet | None = None) -> dict[str, Any]:
    """Finish every repeat of a repeated cross-validation (:func:`finish_run` each, the radiomics features computed
    once) and add the ``repeats`` section to the run's ``metrics.json`` (repeat 0's metrics).

    Raises:
        RunFolderError: not a repeated run, or a fold of some repeat not finished.
    """
    import pandas as pd

    from spinedx.evaluation.runbaselines import radiomics_matrix

    rf = RunFolder(run_dir)
    plan = rf.read_repeats()
    if plan is None:
        raise RunFolderError("not a repeated cross-validation (no repeats.json)", where=str(rf.path))
    record = rf.read_record()
    if patches is None:
        patches = load_patches(record.patches.path)
    features, seconds = None, 0.0
    if any(rf.read_baselines(r) is None for r in range(plan["repeats"])):
        features, seconds = radiomics_matrix(patches)
    per_repeat = [finish_run(rf.path, r or None, patches=patches, features=features, feature_seconds=seconds)
                  for r in range(plan["repeats"])]
    tables = [rf.read_oof_patients(record, repeat=r or None) for r in range(plan["repeats"])]
    pooled = pd.concat(tables).groupby("patient_id", sort=True).agg(label=("label", "first"),
                                                                    probability=("probability", "mean"))
    metrics = dict(per_repeat[0])
    metrics["repeats"] = repeat_summary(per_repeat, pooled.reset_index(), record.config.threshold,
                                        record.config.seed, list(plan["seeds"]))
    rf.write_metrics(metrics)
    return json_clean(metrics)
