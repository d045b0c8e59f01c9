"""Everything the study report shows, loaded and checked before a line of HTML is made.

The run folder is read through :class:`spinedx.runfolder.RunFolder` (strict: a damaged ``config.yaml``,
``oof_*.csv`` or ``metrics.json`` is refused with one line); the fold models must all be there (or the
caller allows missing ones, which the report then says); the patches the gallery shows must be the ones
the run was trained on (sha256), or the caller allows changed ones, and the gallery then shows no images;
the study statistics are read from ``RUN_DIR/stats`` or computed there first, and a reader study
(``stats/reader_study.json``) only read: ``spinedx stats --study`` writes it, the report never makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spinedx.cohort import read_manifest_frame
from spinedx.errors import SpinedxError
from spinedx.runfolder import FoldModels, PatchSet, RunFolder, RunRecord, Splits, load_patches

#: The report's sections: (HTML id, heading), in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Cohort summary"),
    ("table1", "Table 1 - Imaging features"),
    ("table2", "Table 2 - Diagnostic performance of readers and model"),
    ("roc", "ROC curve"),
    ("readerstudy", "Reader study"),
    ("baselines", "Model vs baselines"),
    ("confusion", "Confusion matrices"),
    ("folds", "Per-fold AUC"),
    ("repeats", "Repeated cross-validation"),
    ("calibration", "Calibration"),
    ("conformal", "Conformal refer"),
    ("gallery", "Case gallery with heatmaps"),
    ("provenance", "Provenance"),
)

#: Files of ``RUN_DIR/stats`` the report needs (written by ``spinedx stats``).
STATS_FILES = ("table2_performance.csv", "mcnemar.csv", "table1_features.csv")


@dataclass
class ReportInputs:
    """The checked inputs of a report.

    Attributes:
        run: the run folder.
        record: its ``config.yaml``.
        splits: its ``splits.json``.
        patients: ``oof_patients.csv`` (patient_id, fold, label, probability, prediction).
        slices: ``oof_slices.csv``.
        metrics: ``metrics.json``.
        fold_models: the fold models (paths; missing folds when allowed).
        patches: the training patches for the gallery (None: not shown, see ``notes``).
        patches_changed: the patches file differs from the one the run was trained on (allowed by the caller).
        cohort_path: the cohort manifest, if known.
        cohort: the manifest as a table indexed by patient_id, if known.
        stats_dir: the study statistics folder, if there is one.
        performance: Table 2 (readers from the statistics, and the model).
        mcnemar: McNemar tests, if computed.
        table1: Table 1, if computed.
        logistic: the feature logistic regression, if computed.
        baselines: the run's ``baselines/`` (document, out-of-fold patient tables), if fitted.
        reader_study: ``stats/reader_study.json`` (unaided and aided reads analysed by ``spinedx stats --study`` or
            ``--simulated-study``), if there is one.
        notes: notes per section id.
    """

    run: RunFolder
    record: RunRecord
    splits: Splits
    patients: pd.DataFrame
    slices: pd.DataFrame
    metrics: dict[str, Any]
    fold_models: FoldModels
    patches: PatchSet | None
    patches_changed: bool
    cohort_path: Path | None
    cohort: pd.DataFrame | None
    stats_dir: Path | None
    performance: pd.DataFrame
    mcnemar: pd.DataFrame | None
    table1: pd.DataFrame | None
    logistic: dict[str, Any] | None
    baselines: tuple[dict[str, Any], dict[str, pd.DataFrame]] | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)
    reader_study: dict[str, Any] | None = None

    @property
    def threshold(self) -> float:
        """The run's decision threshold."""
        return self.record.threshold


def _read_stats_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise SpinedxError(f"not a readable CSV ({' '.join(str(exc).split())}); rerun spinedx stats",
                           where=str(path)) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SpinedxError(f"columns {', '.join(missing)} missing; rerun spinedx stats", where=str(path))
    return df


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpinedxError(f"not valid JSON ({exc}); rerun spinedx stats", where=str(path)) from None
    if not isinstance(doc, dict):
        raise SpinedxError("expected a JSON object; rerun spinedx stats", where=str(path))
    return doc


#: What the report reads of ``stats/reader_study.json`` (written by ``spinedx stats --study``).
READER_STUDY_KEYS = ("simulated", "readers", "modalities", "n_cases", "auc", "rrrc", "frrc", "rrfc", "readers_table",
                     "mcnemar", "model_vs_readers", "cases", "aided_minus_unaided", "study", "notes")


def read_reader_study(stats_dir: Path) -> dict[str, Any] | None:
    """``stats/reader_study.json``, checked for what the report shows; None when the statistics have none."""
    path = stats_dir / "reader_study.json"
    if not path.is_file():
        return None
    doc = _read_json(path)
    missing = [k for k in READER_STUDY_KEYS if k not in doc]
    if missing:
        raise SpinedxError(f"keys {', '.join(missing)} missing (written by an older spinedx?); rerun spinedx stats "
                           "with --study (or --simulated-study) and --overwrite", where=str(path))
    if doc["modalities"] != ["unaided", "aided"]:
        raise SpinedxError(f"modalities {doc['modalities']}, not unaided and aided: the report's reader study "
                           "compares a study's unaided and aided reads; rerun spinedx stats", where=str(path))
    return doc


def find_cohort(record: RunRecord, cohort: str | Path | None, notes: list[str]) -> Path | None:
    """The cohort manifest: the one given, else the one recorded by the run's patches (if it still exists)."""
    if cohort is not None:
        path = Path(cohort)
        if not path.is_file():
            raise SpinedxError("cohort manifest not found; pass the cohort.csv the run was made from",
                               where=str(path))
        return path
    man = record.patches.manifest
    if man is None:
        return None
    path = Path(man["path"])
    if not path.is_file():
        notes.append(f"The cohort manifest recorded by the run ({path}) no longer exists; pass --cohort.")
        return None
    from spinedx.provenance import sha256_file

    if sha256_file(path) != man["sha256"]:
        notes.append(f"The cohort manifest {path} changed since the training patches were extracted from it.")
    return path


def ensure_stats(run_dir: Path, cohort: Path | None, notes: list[str], reader: str | None = None,
                 bootstrap_resamples: int = 2000, cohort_given: bool = False) -> Path | None:
    """``RUN_DIR/stats`` with the study statistics, computed with ``run_study`` when missing.

    Existing statistics made from another manifest than a ``--cohort`` given now are refused (they used to be
    shown as that cohort's).

    Returns the stats folder, or None (with a note saying why) when it cannot be made.
    """
    stats_dir = run_dir / "stats"
    if all((stats_dir / f).is_file() for f in STATS_FILES):
        if cohort_given and cohort is not None and (stats_dir / "stats.json").is_file():
            from spinedx.provenance import sha256_file

            made = _read_json(stats_dir / "stats.json").get("inputs", {})
            if isinstance(made, dict) and made.get("cohort_sha256") not in (None, sha256_file(cohort)):
                raise SpinedxError(
                    f"these statistics were made from another cohort manifest ({made.get('cohort')}) than --cohort "
                    f"{cohort}; recompute them with spinedx stats {cohort} --run {run_dir} --overwrite, or pass the "
                    "manifest they were made from", where=str(stats_dir))
        return stats_dir
    if cohort is None:
        notes.append("No cohort manifest was given or recorded by the run, so the readers' performance, McNemar "
                     "tests and imaging features are not shown; run `spinedx report RUN_DIR --cohort COHORT.csv`.")
        return None
    cols = read_manifest_frame(cohort, nrows=0).columns
    if not any(str(c).startswith(("feature_", "reader_")) for c in cols):
        notes.append(f"The cohort manifest {cohort} has no feature_* or reader_* columns, so only the model's "
                     "figures are shown.")
        return None
    from spinedx.evaluation.study import run_study

    # reader None: run_study analyses the least experienced reader's errors, as the paper does for R1
    run_study(cohort, stats_dir, run_dir=run_dir, reader=reader, bootstrap_resamples=bootstrap_resamples)
    return stats_dir


def _cohort_frame(cohort: Path | None) -> pd.DataFrame | None:
    if cohort is None:
        return None
    try:
        df = read_manifest_frame(cohort, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpinedxError(f"cannot read CSV ({exc})", where=str(cohort)) from None
    if "patient_id" not in df.columns:
        raise SpinedxError("no patient_id column", where=str(cohort))
    return df.set_index("patient_id", drop=False)


def _training_patches(record: RunRecord, allow_changed: bool, notes: list[str]) -> tuple[PatchSet | None, bool]:
    """The run's training patches, checked by sha256; (None, changed) when absent or (allowed to be) changed."""
    from spinedx.provenance import sha256_file

    path = Path(record.patches.path)
    if not path.is_file():
        notes.append(f"The run's patches.npz ({path}) was not found, so the gallery lists the cases without images.")
        return None, False
    if sha256_file(path) != record.patches.sha256:
        if not allow_changed:
            raise SpinedxError("changed since the run was trained on it (sha256 differs: re-extracted?); the "
                               "gallery would show other patches than the models saw. Restore the training "
                               "patches, or pass --allow-changed-patches to make the report without gallery images",
                               where=str(path))
        notes.append(f"The patches file {path} changed since training (sha256 differs); as asked "
                     "(--allow-changed-patches) the gallery lists the cases without images.")
        return None, True
    return load_patches(path), False


def load_inputs(
    run_dir: str | Path, cohort: str | Path | None = None, *, reader: str | None = None,
    bootstrap_resamples: int = 2000, allow_missing_folds: bool = False, allow_changed_patches: bool = False,
    need_patches: bool = True,
) -> ReportInputs:
    """Read and check everything the report shows (see the module docstring).

    Raises:
        SpinedxError: a damaged or unfinished run folder, missing fold models (unless allowed), unexpected
            entries in ``folds/``, patches changed since training (unless allowed), a missing ``--cohort``.
    """
    from spinedx.evaluation.metrics import metrics_from_counts
    from spinedx.evaluation.tables import MCNEMAR_COLUMNS, MODEL_RATER, PERF_COLUMNS, TABLE1_COLUMNS

    rf = RunFolder(run_dir)
    record = rf.read_record()
    splits = rf.read_splits()
    patients = rf.read_oof_patients(record, splits)
    slices = rf.read_oof_slices(splits)
    metrics = rf.read_metrics()
    if metrics["threshold"] != record.threshold:
        raise SpinedxError(f"threshold {metrics['threshold']} disagrees with config.yaml's {record.threshold}; "
                           "rerun spinedx cv in this folder to rewrite it", where=str(rf.metrics_path))
    fold_models = rf.fold_models(allow_missing=allow_missing_folds)
    notes: dict[str, list[str]] = {k: [] for k, _ in SECTIONS}
    patches, changed = (_training_patches(record, allow_changed_patches, notes["gallery"]) if need_patches
                        else (None, False))
    cohort_path = find_cohort(record, cohort, notes["summary"])
    stats_dir = ensure_stats(rf.path, cohort_path, notes["table2"], reader=reader,
                             bootstrap_resamples=bootstrap_resamples, cohort_given=cohort is not None)

    performance = None
    mcnemar = table1 = logistic = None
    if stats_dir is not None:
        performance = _read_stats_csv(stats_dir / "table2_performance.csv", PERF_COLUMNS)
        mcnemar = _read_stats_csv(stats_dir / "mcnemar.csv", MCNEMAR_COLUMNS)
        table1 = _read_stats_csv(stats_dir / "table1_features.csv", TABLE1_COLUMNS)
        if (stats_dir / "feature_logistic.json").is_file():
            logistic = _read_json(stats_dir / "feature_logistic.json")
    if performance is None or MODEL_RATER not in set(performance["rater"]):
        y = patients["label"].to_numpy()
        pred = patients["prediction"].to_numpy()
        row = {"rater": MODEL_RATER, "n_missing": 0, **metrics_from_counts(
            int(((y == 1) & (pred == 1)).sum()), int(((y == 0) & (pred == 0)).sum()),
            int(((y == 0) & (pred == 1)).sum()), int(((y == 1) & (pred == 0)).sum()))}
        model_row = pd.DataFrame([row], columns=list(PERF_COLUMNS))
        performance = model_row if performance is None else pd.concat([performance, model_row], ignore_index=True)
    return ReportInputs(rf, record, splits, patients, slices, metrics, fold_models, patches, changed, cohort_path,
                        _cohort_frame(cohort_path), stats_dir, performance, mcnemar, table1, logistic,
                        rf.read_baselines(), notes,
                        read_reader_study(stats_dir) if stats_dir is not None else None)
