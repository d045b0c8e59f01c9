"""Study statistics: readers vs model, imaging features, and error analysis.

Implements the "Statistical analysis" section of Yeh et al., Eur Spine J 2022;31:2022-2030:

* **Table 2** - sensitivity, specificity, accuracy, PPV and NPV of every reader and of the model's
  out-of-fold patient predictions, with Wilson 95% intervals (:mod:`spinedx.evaluation.metrics`),
  and McNemar tests between every pair of raters, separately on malignant patients (sensitivity)
  and on benign patients (specificity).
* **Table 1** - the 15 binary imaging features scored by the senior reader, compared between
  malignant and benign patients with Fisher's exact test and odds ratios; then a logistic
  regression on all features (the paper reports 0.94 accuracy).
* **Error analysis** - features of one reader's false positives vs true negatives (benign
  patients) and false negatives vs true positives (malignant patients), as the paper does for
  the first-year resident (R1).

The pieces live by role: :mod:`spinedx.evaluation.stattests` (tests from counts),
:mod:`spinedx.evaluation.tables` (Tables 1 and 2, McNemar, error analysis) and
:mod:`spinedx.evaluation.logistic` (the feature logistic regression); this module loads the study
table and the run (through :mod:`spinedx.runfolder`), runs everything and writes the files. Its
names are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from spinedx.common import SYNTHETIC_ILLUSTRATION, json_clean, label_name
from spinedx.errors import SpinedxError
from spinedx.evaluation.logistic import (
    INNER_FOLDS,
    PAPER_LOGISTIC_ACCURACY,
    REGULARISED_CS,
    detect_separation,
    feature_logistic,
)
from spinedx.evaluation.metrics import auc_with_ci
from spinedx.evaluation.stattests import (
    ALPHA,
    MCNEMAR_EXACT_BELOW,
    FisherResult,
    McNemarResult,
    discordant_counts,
    fisher_from_counts,
    holm,
    mcnemar_from_counts,
)
from spinedx.evaluation.tables import (
    ERROR_COLUMNS,
    HOLM_NOTE,
    MCNEMAR_COLUMNS,
    MODEL_RATER,
    PERF_COLUMNS,
    TABLE1_COLUMNS,
    default_error_reader,
    error_analysis,
    feature_columns,
    feature_table,
    mcnemar_table,
    rater_calls,
    rater_performance,
    reader_columns,
)
from spinedx.runfolder import RunFolder, RunRecord

__all__ = [
    "ALPHA", "ERROR_COLUMNS", "HOLM_NOTE", "INNER_FOLDS", "MCNEMAR_COLUMNS", "MCNEMAR_EXACT_BELOW", "MODEL_RATER",
    "PAPER_LOGISTIC_ACCURACY", "PERF_COLUMNS", "READER_STUDY_JSON", "REGULARISED_CS", "TABLE1_COLUMNS",
    "FisherResult", "McNemarResult", "ReaderStudyInput", "RunPredictions", "StudyResult", "compute_study",
    "default_error_reader", "detect_separation", "discordant_counts", "error_analysis", "feature_columns",
    "feature_logistic", "feature_table",
    "fisher_from_counts", "holm", "load_run", "load_study_table", "mcnemar_from_counts", "mcnemar_table", "rater_calls",
    "rater_performance", "reader_columns", "run_study", "write_study",
]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_study_table(path: str | Path) -> pd.DataFrame:
    """Load the study table (cohort manifest) for :func:`run_study`.

    Uses :func:`spinedx.cohort.load_manifest` with ``require_images=False``: only
    ``patient_id``, ``label``, ``feature_*`` and ``reader_*`` are needed, so a study table
    without images works too.

    Args:
        path: The cohort manifest CSV.

    Returns:
        ``patient_id`` (str), ``label``, ``y`` (1 malignant), ``feature_*`` (0/1), ``reader_*``
        (``'benign'``/``'malignant'``/None).

    Raises:
        ManifestError: missing file or column, listing every bad label, feature or reader value.
    """
    from spinedx.cohort import load_manifest

    cohort = load_manifest(path, require_images=False)
    frame = cohort.to_frame()
    frame["patient_id"] = frame["patient_id"].astype(str)
    frame.attrs["synthetic"] = bool(cohort.synthetic)
    return frame


@dataclass
class RunPredictions:
    """The model's out-of-fold patient predictions from a CV run folder (``spinedx cv``)."""

    run_dir: Path
    oof: pd.DataFrame  # patient_id (str), fold, label, probability, prediction (0/1)
    folds: list[list[str]]
    folds_source: str
    threshold: float
    optimistic: bool
    record: RunRecord

    @property
    def synthetic(self) -> bool:
        """True when the run was trained on a synthetic cohort."""
        return self.record.synthetic

    def calls_for(self, patient_ids: Sequence[str]) -> np.ndarray:
        """The model's calls aligned with ``patient_ids`` (NaN where the run has no prediction)."""
        m = dict(zip(self.oof["patient_id"], self.oof["prediction"].astype(float), strict=True))
        return np.array([m.get(str(p), np.nan) for p in patient_ids], dtype=float)


def load_run(run_dir: str | Path, patient_ids: Sequence[str] | None = None,
             labels: Mapping[str, int] | None = None) -> RunPredictions:
    """Read a CV run folder's ``config.yaml``, ``splits.json`` and ``oof_patients.csv`` (through
    :class:`spinedx.runfolder.RunFolder`, strictly) and check them against the cohort.

    Args:
        run_dir: The folder written by ``spinedx cv``.
        patient_ids: The cohort's patients; every patient in the run must be among them.
        labels: patient_id -> y of the cohort; the run's labels must agree.

    Raises:
        SpinedxError: not a run folder, a damaged or unfinished one, patients not in the cohort, labels that
            disagree with the cohort.
    """
    rf = RunFolder(run_dir)
    record = rf.read_record()
    splits = rf.read_splits()
    oof = rf.read_oof_patients(record, splits)
    if patient_ids is not None:
        missing = sorted(set(splits.patients) - set(map(str, patient_ids)))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise SpinedxError(f"patient {missing[0]}{more} of the run is not in the cohort; use the cohort "
                               "manifest the run was made from", where=str(rf.oof_patients_path))
    if labels is not None:
        for pid, lab in zip(oof["patient_id"], oof["label"], strict=True):
            if pid in labels and labels[pid] != int(lab):
                raise SpinedxError(f"patient {pid}: label {label_name(int(lab))} in the run disagrees with the "
                                   "cohort; use the cohort manifest the run was made from",
                                   where=str(rf.oof_patients_path))
    return RunPredictions(rf.path, oof, splits.validation_sets, "splits.json", record.threshold,
                          record.optimistic, record)


# --------------------------------------------------------------------------------------------
# The whole study
# --------------------------------------------------------------------------------------------


class ReaderStudyInput(Protocol):
    """A reader study analysed for the statistics folder (:class:`spinedx.readers.study_analysis.StudyAnalysis`):
    the files it adds to ``RUN/stats`` and what ``stats.json`` records as its input. A protocol, so that this
    module writes them without depending on the reader-study layer that computes them."""

    def stats_files(self) -> dict[str, Any]:
        """File name -> DataFrame (written as CSV) or dict (written as JSON)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies the reader study (a rerun with another one is another job)."""
        ...


#: The reader study's JSON in ``RUN/stats`` (its summary goes into ``stats.json``).
READER_STUDY_JSON = "reader_study.json"


@dataclass
class StudyResult:
    """Everything ``spinedx stats`` computes; :func:`write_study` writes it."""

    table2: pd.DataFrame
    mcnemar: pd.DataFrame
    table1: pd.DataFrame
    logistic: dict[str, Any] | None
    error_analysis: pd.DataFrame | None
    error_reader: str | None
    summary: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    reader_study: dict[str, Any] | None = None


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json_clean(df.to_dict(orient="records"))


def compute_study(
    frame: pd.DataFrame, run: RunPredictions | None = None, reader: str | None = None, *,
    alpha: float = ALPHA, bootstrap_resamples: int = 2000, seed: int = 0,
) -> StudyResult:
    """All study statistics from a loaded study table and (optionally) a CV run.

    Args:
        frame: From :func:`load_study_table` (or ``Cohort.to_frame()``).
        run: From :func:`load_run`; adds the ``model`` rater and gives the logistic regression
            the run's patient folds.
        reader: Rater for the error analysis (a ``reader_*`` column or ``model``); default the
            least experienced reader present (:func:`default_error_reader`).
        alpha: Significance level (and 1 - confidence level of the intervals).
        bootstrap_resamples: Bootstrap resamples of the AUC intervals.
        seed: Seed of the stratified folds (no run) and of the bootstraps.
    """
    ids = frame["patient_id"].astype(str).tolist()
    y = frame["y"].to_numpy(dtype=int)
    calls = rater_calls(frame)
    model_info: dict[str, Any] | None = None
    if run is not None:
        calls[MODEL_RATER] = run.calls_for(ids)
        model_info = {"run": str(run.run_dir), "threshold": run.threshold, "optimistic": run.optimistic,
                      "synthetic": run.synthetic,
                      "folds_source": run.folds_source}

    # Checked first: a typo in --reader should fail before the slow parts.
    if reader is None:
        reader = default_error_reader(frame)
    elif reader not in calls:
        if f"reader_{reader}" in calls:
            reader = f"reader_{reader}"
        else:
            raise SpinedxError(f"no rater '{reader}'; choose one of " + ", ".join(calls), where="--reader")

    if run is not None and model_info is not None and "probability" in run.oof.columns:
        prob = dict(zip(run.oof["patient_id"], run.oof["probability"], strict=True))
        p = np.array([prob.get(pid, np.nan) for pid in ids], dtype=float)
        has = ~np.isnan(p)
        auc, low, high = auc_with_ci(y[has], p[has], alpha=alpha, n_resamples=bootstrap_resamples, seed=seed)
        model_info.update(auc=auc, auc_low=low, auc_high=high, n_auc=int(has.sum()))

    table2 = rater_performance(y, calls, alpha=alpha)
    mcn = mcnemar_table(y, calls)
    table1 = feature_table(frame)

    logistic = None
    if feature_columns(frame):
        folds = run.folds if run is not None else None
        logistic = feature_logistic(frame, folds, seed=seed, bootstrap_resamples=bootstrap_resamples,
                                    folds_source=f"run {run.folds_source}" if folds is not None and run else None)

    errors = error_analysis(frame, calls[reader], reader) if reader is not None and feature_columns(frame) else None

    synthetic = bool(frame.attrs.get("synthetic", False)) or bool(run is not None and run.synthetic)
    summary = {
        "n_patients": len(frame), "n_malignant": int(np.sum(y == 1)), "n_benign": int(np.sum(y == 0)),
        "synthetic": synthetic,
        "illustration": SYNTHETIC_ILLUSTRATION if synthetic else None,
        "raters": list(calls), "alpha": alpha,
        "table2": _records(table2),
        "mcnemar_significant": _records(mcn[mcn["p_value"] < alpha]),
        "model": model_info,
        "features_significant": table1.loc[table1["p_value"] < alpha, "feature"].tolist(),
        "features_significant_holm": table1.loc[table1["p_holm"] < alpha, "feature"].tolist(),
        "logistic": None if logistic is None else {k: v for k, v in logistic.items() if k not in ("oof",)},
        "error_analysis": None if errors is None else {
            "reader": reader,
            "significant": _records(errors.loc[errors["p_value"] < alpha,
                                               ["comparison", "feature", "group1_n", "group1_total", "group2_n",
                                                "group2_total", "p_value", "p_holm"]]),
        },
        "methods": {
            "proportions": "Wilson score 95% intervals (statsmodels proportion_confint)",
            "mcnemar": f"statsmodels mcnemar: exact binomial when b + c < {MCNEMAR_EXACT_BELOW} (the chi-square "
                       "approximation is unreliable with few discordant pairs), else chi-square with continuity "
                       "correction; b = patients rater_a got right and rater_b got wrong, c = the reverse; "
                       "'malignant' compares sensitivity, 'benign' specificity",
            "fisher": "scipy fisher_exact two-sided; odds ratio = conditional maximum-likelihood estimate with its "
                      "exact conditional 95% interval (scipy.stats.contingency.odds_ratio, kind conditional), "
                      "consistent with the test; no correction for zero cells (the estimate is then 0 or "
                      "infinite and the interval one-sided)",
            "multiplicity": HOLM_NOTE + "; Table 1, the McNemar tests and the error analysis are each one family",
            "logistic": "accuracy reported twice: in-sample (fitted and scored on all patients, what the paper "
                        "reported as 0.94) and out-of-fold (the run's folds or stratified folds by patient)",
            "missing_calls": "patients without a rater's call are left out of that rater's figures (n_missing)",
        },
    }
    return StudyResult(table2, mcn, table1, logistic, errors, reader, json_clean(summary))


#: The inputs recorded in ``stats.json`` that decide its content: a folder made from other ones is another job.
STATS_IDENTITY = ("cohort_sha256", "run", "reader", "bootstrap_resamples", "seed", "study")


def check_stats_folder(out_dir: str | Path, inputs: Mapping[str, Any], overwrite: bool = False) -> None:
    """Refuse to replace statistics made from other inputs (another cohort, run, reader, resamples or seed).

    Only the inputs the earlier ``stats.json`` records are compared (older versions recorded fewer). A rerun of
    the same job replaces the folder (its figures are those the same inputs give now); ``overwrite`` replaces
    statistics of another job. A folder that is no statistics folder is refused by :func:`write_study`.

    Raises:
        SpinedxError: the differences, one line, naming the folder.
    """
    out = Path(out_dir)
    path = out / "stats.json"
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))["inputs"]
        if not isinstance(old, dict):
            raise TypeError("inputs is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SpinedxError(f"holds a stats.json that cannot be read ({type(exc).__name__}); pass --overwrite to "
                           "replace the folder, or choose another --out", where=str(out)) from None
    diff = []
    for key in STATS_IDENTITY:
        if key in old and old[key] != inputs.get(key):
            if key == "study" and old[key] is None:
                continue  # adding a reader study to statistics made without one loses nothing
            if key == "cohort_sha256":
                diff.append(f"cohort: {old.get('cohort')} (sha256 {str(old[key])[:12]}...) there, "
                            f"{inputs.get('cohort')} (sha256 {str(inputs.get(key))[:12]}...) now")
            elif key == "study":
                diff.append(f"reader study: {_study_name(old[key])} there, {_study_name(inputs.get(key))} now")
            else:
                diff.append(f"{key}: {old[key]!r} there, {inputs.get(key)!r} now")
    if diff:
        raise SpinedxError(f"these statistics were made from other inputs ({'; '.join(diff)}); rerun with the same "
                           "inputs to redo them, pass --overwrite to replace them, or choose another --out",
                           where=str(out))


def _study_name(identity: Any) -> str:
    """``none``, ``simulated`` or the study folder, for the list of differences."""
    if not isinstance(identity, dict):
        return "none"
    return "simulated" if identity.get("kind") == "simulated" else str(identity.get("path"))


def _requested_reader(frame: pd.DataFrame, run: RunPredictions | None, reader: str | None) -> str | None:
    """The rater :func:`compute_study` will analyse (``r1`` -> ``reader_r1``, None -> the default), for the
    check before the slow parts; an unknown name is left for compute_study to refuse."""
    if reader is None:
        return default_error_reader(frame)
    known = set(reader_columns(frame)) | ({MODEL_RATER} if run is not None else set())
    return f"reader_{reader}" if reader not in known and f"reader_{reader}" in known else reader


def write_study(result: StudyResult, out_dir: str | Path, inputs: Mapping[str, Any] | None = None,
                reader_study: ReaderStudyInput | None = None) -> dict[str, Path]:
    """Write the tables, ``feature_logistic.json`` and ``stats.json`` (with provenance) to ``out_dir``.

    The folder is written whole into a temporary sibling and renamed when complete (an earlier statistics
    folder is replaced, never mixed); an existing folder that is not empty and holds no ``stats.json`` is
    refused rather than replaced. ``reader_study`` adds its files (``reader_study.json`` and its tables).
    """
    from spinedx.fsutil import atomic_dir
    from spinedx.provenance import provenance

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpinedxError("exists and is not a folder; choose another --out", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / "stats.json").is_file():
        raise SpinedxError("not empty and not a spinedx stats folder (no stats.json); choose a new or empty --out",
                           where=str(out))
    names = {"table2": "table2_performance.csv", "mcnemar": "mcnemar.csv", "table1": "table1_features.csv"}
    if result.logistic is not None:
        names["logistic"] = "feature_logistic.json"
    if result.error_analysis is not None:
        names["error_analysis"] = "error_analysis.csv"
    extra = reader_study.stats_files() if reader_study is not None else {}
    for name in extra:
        names[name.rsplit(".", 1)[0]] = name
    names["stats"] = "stats.json"
    with atomic_dir(out) as tmp:
        result.table2.to_csv(tmp / names["table2"], index=False)
        result.mcnemar.to_csv(tmp / names["mcnemar"], index=False)
        result.table1.to_csv(tmp / names["table1"], index=False)
        if result.logistic is not None:
            (tmp / names["logistic"]).write_text(json.dumps(json_clean(result.logistic), indent=2,
                                                            allow_nan=False))
        if result.error_analysis is not None:
            result.error_analysis.to_csv(tmp / names["error_analysis"], index=False)
        for name, content in extra.items():
            if isinstance(content, pd.DataFrame):
                content.to_csv(tmp / name, index=False)
            else:
                doc = {**content, "provenance": provenance()}
                (tmp / name).write_text(json.dumps(json_clean(doc), indent=2, allow_nan=False))
        summary = {**result.summary, "inputs": json_clean(dict(inputs or {})), "files": names,
                   "provenance": provenance()}
        if READER_STUDY_JSON in extra:
            rs = extra[READER_STUDY_JSON]
            summary["reader_study"] = json_clean({
                "file": READER_STUDY_JSON, "simulated": bool(rs.get("simulated")),
                "aided_minus_unaided": rs.get("aided_minus_unaided"), "notes": rs.get("notes")})
            result.reader_study = rs
        (tmp / names["stats"]).write_text(json.dumps(json_clean(summary), indent=2, allow_nan=False))
    files = {k: out / v for k, v in names.items()}
    result.out_dir, result.files = out, files
    return files


def run_study(
    cohort_csv: str | Path, out_dir: str | Path | None = None, run_dir: str | Path | None = None,
    reader: str | None = None, *, bootstrap_resamples: int = 2000, seed: int = 0, overwrite: bool = False,
    reader_study: ReaderStudyInput | None = None,
) -> StudyResult:
    """``spinedx stats``: load the study table (and run), compute everything, write the files.

    Args:
        cohort_csv: Cohort manifest (only patient_id, label, feature_*, reader_* are needed).
        out_dir: Output folder; default ``RUN_DIR/stats`` when a run is given.
        run_dir: CV run folder (``oof_patients.csv``, ``splits.json``, ``config.yaml``).
        reader: Rater for the error analysis (default the least experienced reader).
        bootstrap_resamples: Bootstrap resamples of the AUC intervals.
        seed: Seed of the stratified folds (no run) and of the bootstraps.
        overwrite: replace statistics in ``out_dir`` made from other inputs (:func:`check_stats_folder`);
            without it they are refused before anything is computed.
        reader_study: a reader study analysed for these statistics (unaided and aided reads:
            :func:`spinedx.readers.study_analysis.study_for_stats` or ``simulated_for_stats``), written beside
            them (``reader_study.json`` and its tables) for the report's reader-study section.

    Returns:
        The result, with ``files`` naming what was written.
    """
    from spinedx.provenance import sha256_file

    frame = load_study_table(cohort_csv)
    run = None
    if run_dir is not None:
        run = load_run(run_dir, frame["patient_id"].tolist(), dict(zip(frame["patient_id"], frame["y"], strict=True)))
    if out_dir is None:
        if run_dir is None:
            raise SpinedxError("give an output folder (--out DIR)", where="--out")
        out_dir = Path(run_dir) / "stats"
    inputs = {"cohort": str(Path(cohort_csv).resolve()), "cohort_sha256": sha256_file(cohort_csv),
              "run": None if run_dir is None else str(Path(run_dir).resolve()),
              "reader": _requested_reader(frame, run, reader), "bootstrap_resamples": bootstrap_resamples,
              "seed": seed, "study": None if reader_study is None else reader_study.identity()}
    check_stats_folder(out_dir, inputs, overwrite)  # before the slow parts
    result = compute_study(frame, run, reader, bootstrap_resamples=bootstrap_resamples, seed=seed)
    inputs["reader"] = result.error_reader
    write_study(result, out_dir, inputs, reader_study)
    return result
