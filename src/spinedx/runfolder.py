"""The run folder of a cross-validation (``spinedx cv``): one owner for every file in it.

Every stage that reads or writes a run folder (``cv``, ``stats``, ``report``, ``predict``, the demo) goes
through :class:`RunFolder`. Its readers are strict: a file that is missing, malformed, or not what this
spinedx version writes is refused with one line naming the file and what to do; nothing is looked up under
alternative keys and nothing falls back silently to a default. Its writers are atomic
(:mod:`spinedx.fsutil`): each file, and each finished fold folder, appears complete or not at all.

Layout (``format: 1``)::

    RUN/config.yaml           how the run was made (:class:`RunRecord`): the CVConfig, what it was trained on
                              (patches sha256, patch size, channel order, extraction settings copied from
                              extract.json, synthetic flag, cohort manifest), weights, device, provenance
    RUN/splits.json           folds by patient (:class:`Splits`)
    RUN/folds/<k>/            one finished fold: model.pt, history.csv, curves.png, predictions.csv, done.json
    RUN/oof_slices.csv        out-of-fold slice probabilities
    RUN/oof_patients.csv      out-of-fold patient probabilities and calls
    RUN/metrics.json          patient- and slice-level metrics with intervals (with calibration and conformal)
    RUN/oof_decisions.csv     out-of-fold calibrated probabilities and conformal sets (fold-wise honest fits)
    RUN/calibration.json      the deployed calibration map (fitted on all folds' honest calibration data)
    RUN/conformal.json        the deployed conformal thresholds (the same data)
    RUN/stats/                ``spinedx stats``
    RUN/report.html           ``spinedx report`` (and its ``report_*.csv`` tables)

Repeated cross-validation (``spinedx cv --repeats N``, N > 1) adds ``RUN/repeats.json`` (N and each repeat's
seed) and ``RUN/repeats/<r>/{splits.json, folds/<k>/, baselines/, oof_slices.csv, oof_patients.csv, metrics.json}``
for r = 1 .. N-1. Repeat 0 is the layout above, so a repeated run is a plain run plus N-1 repeats: everything
that reads a run (predict, export, serve, stats, report) reads repeat 0, and the root ``metrics.json`` adds a
``repeats`` section (mean, SD, range across repeats and the pooled figures). Every path here takes a ``repeat``
argument (None or 0: the root).

Entries of ``folds/``: a fold number of the run is a fold; hidden names (``.1.tmp-...``, the temporary
siblings of folds being written, or a desktop's ``.DS_Store``) are ignored; anything else (``1.bak``,
``7`` in a 2-fold run) is refused, naming it, because a reader cannot tell whether it holds a model that
should count.

The typed records of ``config.yaml`` and ``splits.json`` (:class:`RunRecord`, :class:`Splits`) live in
:mod:`spinedx.runrecord` and are importable from here. Only the standard library and light spinedx modules are
imported at module level; numpy, pandas and yaml are imported where needed, torch never.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.common import json_clean
from spinedx.fsutil import TMP_MARK, atomic_dir, atomic_path, atomic_write_text, remove_stale_tmp
from spinedx.patchset import PatchesInfo, PatchSet, load_patches, patches_file
from spinedx.records import is_int, is_num, read_json, read_table, strict_keys, write_json
from spinedx.rundecision import DecisionFiles
from spinedx.runrecord import FORMAT, FoldSplit, RunFolderError, RunRecord, Splits, WeightsRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMAT", "FoldModels", "FoldScan", "FoldSplit", "PatchSet", "PatchesInfo", "RunFolder", "RunFolderError",
           "RunRecord", "Splits", "WeightsRecord", "load_patches", "open_run", "patches_file"]

CONFIG = "config.yaml"
SPLITS = "splits.json"
OOF_SLICES = "oof_slices.csv"
OOF_PATIENTS = "oof_patients.csv"
METRICS = "metrics.json"
FOLDS = "folds"
REPEATS = "repeats"
STATS = "stats"
REPORT = "report.html"
BASELINES = "baselines"
#: ``folds/<k>/inner_predictions.csv``: the fold model's slice probabilities on its inner-validation patients (held
#: out of its training); optional (runs made before it, and optimistic runs, have none).
INNER_PREDICTIONS = "inner_predictions.csv"
#: ``baselines/baselines.json`` (written last) and one table per baseline: ``<name>_patients.csv``.
BASELINES_DOC = "baselines.json"
#: ``repeats.json``: the plan of a repeated cross-validation (absent for a single one).
REPEATS_DOC = "repeats.json"
#: The files of a finished fold folder (``done.json`` is written last, inside the temporary folder).
FOLD_FILES = ("model.pt", "history.csv", "curves.png", "predictions.csv", "done.json")

SLICE_COLUMNS = ("patient_id", "slice_index", "fold", "label", "probability")
PATIENT_COLUMNS = ("patient_id", "fold", "label", "probability", "prediction")

_RERUN = "rerun spinedx cv with the same options in this folder (finished folds are kept) to rewrite it"


def _read_json(path: Path, what: str, remedy: str) -> Any:
    return read_json(path, what, remedy, error=RunFolderError)


# ------------------------------------------------------------------------------------------------
# the folder


@dataclass(frozen=True)
class FoldScan:
    """Which folds of a run are finished.

    Attributes:
        complete: finished fold numbers (their folder holds every file of :data:`FOLD_FILES`).
        missing: fold numbers without a folder.
        ignored: hidden entries of ``folds/`` that were ignored.
    """

    complete: list[int]
    missing: list[int]
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FoldModels:
    """The fold models of a run that a reader will use.

    Attributes:
        paths: fold number -> ``model.pt``, in fold order.
        missing: folds of the run without a model (only with ``allow_missing``).
    """

    paths: dict[int, Path]
    missing: list[int]


class RunFolder(DecisionFiles):
    """Paths, strict readers and atomic writers of one run folder (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- paths ------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """``config.yaml``."""
        return self.path / CONFIG

    def splits_path(self, repeat: int | None = None) -> Path:
        """``splits.json`` (of a repeat)."""
        return self._base(repeat) / SPLITS

    def folds_dir(self, repeat: int | None = None) -> Path:
        """``folds/`` (of a repeat)."""
        return self._base(repeat) / FOLDS

    def fold_dir(self, fold: int, repeat: int | None = None) -> Path:
        """``folds/<k>/`` (of a repeat)."""
        return self.folds_dir(repeat) / str(int(fold))

    @property
    def oof_slices_path(self) -> Path:
        """``oof_slices.csv``."""
        return self.path / OOF_SLICES

    @property
    def oof_patients_path(self) -> Path:
        """``oof_patients.csv``."""
        return self.path / OOF_PATIENTS

    @property
    def metrics_path(self) -> Path:
        """``metrics.json``."""
        return self.path / METRICS

    def repeat_dir(self, repeat: int | None) -> Path:
        """The folder of a repeat: the run folder itself for repeat None or 0, else ``repeats/<r>/``."""
        return self._base(repeat)

    @property
    def repeats_doc_path(self) -> Path:
        """``repeats.json`` (a repeated cross-validation only)."""
        return self.path / REPEATS_DOC

    def baselines_dir(self, repeat: int | None = None) -> Path:
        """``baselines/`` (of a repeat): the baselines fitted on the run's folds
        (:mod:`spinedx.evaluation.runbaselines`)."""
        return self._base(repeat) / BASELINES

    @property
    def stats_dir(self) -> Path:
        """``stats/`` (``spinedx stats``)."""
        return self.path / STATS

    @property
    def report_path(self) -> Path:
        """``report.html`` (``spinedx report``)."""
        return self.path / REPORT

    def _base(self, repeat: int | None) -> Path:
        return self.path if not repeat else self.path / REPEATS / str(int(repeat))

    # -- the folder as a whole --------------------------------------------------------------------

    def require(self) -> None:
        """Refuse a path that is not a run folder written by ``spinedx cv``."""
        if not self.path.exists():
            raise RunFolderError("run folder not found; pass the folder written by spinedx cv", where=str(self.path))
        if not self.path.is_dir():
            raise RunFolderError("not a folder; pass the run folder written by spinedx cv", where=str(self.path))
        if not self.config_path.is_file():
            raise RunFolderError("config.yaml missing: not a run folder written by spinedx cv", where=str(self.path))

    def check_output(self) -> None:
        """Refuse to use ``path`` as a new or resumed run folder when it is a file or a foreign folder."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError("exists and is not a folder; choose another --out", where=str(self.path))
        if self.path.is_dir() and not self.config_path.is_file():
            entries = [p.name for p in self.path.iterdir() if not p.name.startswith(".")]
            if entries:
                raise RunFolderError(f"not empty and not a spinedx run folder (holds {', '.join(sorted(entries)[:3])}"
                                     f"{' ...' if len(entries) > 3 else ''}); choose a new or empty --out folder",
                                     where=str(self.path))

    def is_run(self) -> bool:
        """True when ``config.yaml`` exists."""
        return self.config_path.is_file()

    # -- config.yaml ------------------------------------------------------------------------------

    def read_record(self) -> RunRecord:
        """``config.yaml`` as a :class:`RunRecord` (strict)."""
        import yaml

        self.require()
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise RunFolderError(f"not a text file ({exc.reason}); rerun spinedx cv into a new folder",
                                 where=str(self.config_path)) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise RunFolderError(f"not valid YAML{at} ({getattr(exc, 'problem', None) or exc}); restore the file or "
                                 "rerun spinedx cv into a new folder", where=str(self.config_path)) from None
        return RunRecord.from_dict(data, self.config_path)

    def write_record(self, record: RunRecord) -> None:
        """Write ``config.yaml`` atomically."""
        import yaml

        atomic_write_text(self.config_path, yaml.safe_dump(record.to_dict(), sort_keys=False))

    # -- splits.json ------------------------------------------------------------------------------

    def read_splits(self, repeat: int | None = None) -> Splits:
        """``splits.json`` (strict)."""
        path = self.splits_path(repeat)
        return Splits.from_dict(_read_json(path, "splits.json", "rerun spinedx cv into a new folder"), path)

    def write_splits(self, splits: Splits | Mapping[str, Any], repeat: int | None = None) -> Splits:
        """Write ``splits.json`` atomically (a dict is checked through :meth:`Splits.from_dict` first)."""
        path = self.splits_path(repeat)
        s = splits if isinstance(splits, Splits) else Splits.from_dict(dict(splits), path)
        write_json(path, s.to_dict())
        return s

    # -- folds ------------------------------------------------------------------------------------

    def scan_folds(self, n_folds: int, repeat: int | None = None) -> FoldScan:
        """Finished and missing folds; refuses unexpected entries and damaged fold folders.

        Raises:
            RunFolderError: ``folds/`` holds a name that is neither a fold of the run nor hidden (``1.bak``), a
                file where a fold folder belongs, or a fold folder without all of :data:`FOLD_FILES`.
        """
        folder = self.folds_dir(repeat)
        complete: list[int] = []
        ignored: list[str] = []
        if folder.exists() and not folder.is_dir():
            raise RunFolderError("a file stands where the folds folder belongs; move it away", where=str(folder))
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        names = {str(k) for k in range(n_folds)}
        for entry in entries:
            if entry.name.startswith("."):
                ignored.append(entry.name)
                continue
            if entry.name not in names:
                raise RunFolderError(f"unexpected entry {entry.name!r} in folds/ (this run has folds 0-{n_folds - 1});"
                                     " move it out of the run folder", where=str(entry))
            if not entry.is_dir():
                raise RunFolderError("a file stands where a fold folder belongs; move it out of the run folder",
                                     where=str(entry))
            absent = [f for f in FOLD_FILES if not (entry / f).is_file()]
            if absent:
                raise RunFolderError(f"incomplete fold folder (no {', '.join(absent)}); delete it and rerun spinedx cv"
                                     " in this run folder to train that fold again", where=str(entry))
            complete.append(int(entry.name))
        complete.sort()
        return FoldScan(complete, [k for k in range(n_folds) if k not in complete], ignored)

    @contextlib.contextmanager
    def fold_writer(self, fold: int, repeat: int | None = None) -> Iterator[Path]:
        """A temporary sibling of ``folds/<k>``; renamed to it when the block ends without an exception.

        An interrupted or failed fold leaves nothing a rerun would take as finished.
        """
        target = self.fold_dir(fold, repeat)
        if target.exists():
            raise RunFolderError("the fold is already finished; delete the folder to train it again",
                                 where=str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        # Only this fold's leftovers (a killed attempt at it): on a cluster the other folds' temporaries may belong
        # to live workers of other nodes, whose process ids mean nothing here.
        remove_stale_tmp(target.parent, f".{int(fold)}{TMP_MARK}")
        with atomic_dir(target) as tmp:
            yield tmp

    def write_fold(self, fold: int, repeat: int | None = None, *, history: pd.DataFrame, curves_png: bytes,
                   save_model: Callable[[Path], None], predictions: pd.DataFrame,
                   done: Mapping[str, Any], inner_predictions: pd.DataFrame | None = None) -> dict[str, Any]:
        """Write the folder of a finished fold, complete or not at all (:meth:`fold_writer`).

        In this order: ``history.csv``, ``curves.png`` (the figure's PNG bytes), ``model.pt`` (written by
        ``save_model``, the model file's own writer, :func:`spinedx.models.run.save_fold_model`), ``predictions.csv``
        (columns :data:`SLICE_COLUMNS`), ``inner_predictions.csv`` when given (the same columns, the fold model's
        probabilities on its inner-validation patients: the honest calibration data of
        :mod:`spinedx.evaluation.decisioncv`), then ``done.json``: ``done`` plus ``model_sha256``, the model's
        fingerprint recorded when it was made, which every reader compares the file with.

        Args:
            fold: the fold.
            repeat: the repeat (None: the run itself).
            history: one row per epoch (the trainer's history).
            curves_png: the loss curves, a PNG file's bytes.
            save_model: writes the fold model to the path it is given.
            predictions: the fold's out-of-fold slice probabilities.
            done: the fold's record (``done.json`` without ``model_sha256``).
            inner_predictions: the fold model's slice probabilities on its inner-validation patients (None: the
                fold has no honest ones, e.g. its early stopping used the outer fold).

        Returns:
            The ``done.json`` record as written.

        Raises:
            RunFolderError: the fold is already finished.
        """
        from spinedx.provenance import sha256_file

        with self.fold_writer(fold, repeat) as tmp:
            history.to_csv(tmp / "history.csv", index=False)
            (tmp / "curves.png").write_bytes(curves_png)
            save_model(tmp / "model.pt")
            predictions[list(SLICE_COLUMNS)].to_csv(tmp / "predictions.csv", index=False)
            if inner_predictions is not None:
                inner_predictions[list(SLICE_COLUMNS)].to_csv(tmp / INNER_PREDICTIONS, index=False)
            record = json_clean(dict(done))
            record["model_sha256"] = sha256_file(tmp / "model.pt")
            write_json(tmp / "done.json", record)
        return record

    def remove_fold_temporaries(self, repeat: int | None = None) -> list[Path]:
        """Remove the temporary fold folders (``folds/.k.tmp-PID-...``) of processes that no longer run on this
        machine: what a killed or interrupted worker left. Returns what was removed."""
        return remove_stale_tmp(self.folds_dir(repeat))

    def read_done(self, fold: int, repeat: int | None = None) -> dict[str, Any]:
        """``folds/<k>/done.json``."""
        path = self.fold_dir(fold, repeat) / "done.json"
        doc = _read_json(path, "done.json", f"delete {path.parent} and rerun spinedx cv to train the fold again")
        if not isinstance(doc, dict) or doc.get("fold") != fold:
            raise RunFolderError(f"not the done record of fold {fold}; delete {path.parent} and rerun spinedx cv",
                                 where=str(path))
        return doc

    def read_fold_predictions(self, fold: int, splits: Splits, repeat: int | None = None) -> pd.DataFrame:
        """``folds/<k>/predictions.csv``: one row per validation slice of fold ``k`` (strict)."""
        path = self.fold_dir(fold, repeat) / "predictions.csv"
        df = _read_table(path, SLICE_COLUMNS, f"delete {path.parent} and rerun spinedx cv to train the fold again")
        if set(df["patient_id"]) != set(splits.split(fold).val) or (df["fold"] != fold).any():
            raise RunFolderError(f"its patients are not fold {fold}'s validation patients in splits.json; delete "
                                 f"{path.parent} and rerun spinedx cv", where=str(path))
        return df

    def read_inner_predictions(self, fold: int, splits: Splits, repeat: int | None = None) -> pd.DataFrame | None:
        """``folds/<k>/inner_predictions.csv`` (strict), or None when the fold has none (a run made before they were
        written, or an optimistic run): its patients must be fold ``k``'s inner-validation patients."""
        path = self.fold_dir(fold, repeat) / INNER_PREDICTIONS
        if not path.is_file():
            return None
        df = _read_table(path, SLICE_COLUMNS, f"delete {path.parent} and rerun spinedx cv to train the fold again")
        if set(df["patient_id"]) != set(splits.split(fold).inner_val) or (df["fold"] != fold).any():
            raise RunFolderError(f"its patients are not fold {fold}'s inner-validation patients in splits.json; "
                                 f"delete {path.parent} and rerun spinedx cv", where=str(path))
        return df

    def fold_models(self, allow_missing: bool = False) -> FoldModels:
        """The ``model.pt`` of every fold of the run.

        Args:
            allow_missing: use the finished folds only when some are missing (the caller records which).

        Raises:
            RunFolderError: folds without a model (unless ``allow_missing``; never when none is finished),
                or unexpected entries in ``folds/`` (see :meth:`scan_folds`).
        """
        record = self.read_record()
        scan = self.scan_folds(record.config.folds)
        if not scan.complete:
            raise RunFolderError("no finished fold (folds/<k>/model.pt); finish spinedx cv first",
                                 where=str(self.path))
        if scan.missing and not allow_missing:
            raise RunFolderError(f"fold(s) {', '.join(map(str, scan.missing))} of {record.config.folds} have no model "
                                 "(folds/<k>/model.pt): finish spinedx cv in this folder, or pass "
                                 "--allow-missing-folds to use the others (recorded in the output)",
                                 where=str(self.folds_dir()))
        return FoldModels({k: self.fold_dir(k) / "model.pt" for k in scan.complete}, scan.missing)

    # -- out-of-fold tables and metrics -----------------------------------------------------------

    def write_oof(self, slices: pd.DataFrame, patients: pd.DataFrame, repeat: int | None = None) -> None:
        """Write ``oof_slices.csv`` and ``oof_patients.csv`` (of a repeat) atomically (columns in the documented
        order)."""
        base = self._base(repeat)
        for df, path, cols in ((slices, base / OOF_SLICES, SLICE_COLUMNS),
                               (patients, base / OOF_PATIENTS, PATIENT_COLUMNS)):
            with atomic_path(path) as tmp:
                df[list(cols)].to_csv(tmp, index=False)

    def read_oof_patients(self, record: RunRecord | None = None, splits: Splits | None = None,
                          repeat: int | None = None) -> pd.DataFrame:
        """``oof_patients.csv`` (strict): one row per patient of the splits, in the fold splits.json gives it,
        with ``prediction`` = ``probability >= threshold``.

        Raises:
            RunFolderError: missing file or column, unreadable CSV, bad values, patients or folds that disagree
                with ``splits.json``, predictions that disagree with the threshold.
        """
        record = record or self.read_record()
        splits = splits or self.read_splits(repeat)
        path = self._base(repeat) / OOF_PATIENTS
        if not path.is_file():
            raise RunFolderError("oof_patients.csv missing: the cross-validation has not finished; run spinedx cv "
                                 "again in this folder (it resumes)", where=str(path))
        df = _read_table(path, PATIENT_COLUMNS, _RERUN)
        if not df["patient_id"].is_unique:
            dup = df["patient_id"][df["patient_id"].duplicated()].iloc[0]
            raise RunFolderError(f"patient {dup} appears more than once; {_RERUN}", where=str(path))
        if sorted(df["patient_id"]) != splits.patients:
            raise RunFolderError(f"its patients are not those of splits.json; {_RERUN}", where=str(path))
        wrong = [p for p, k in zip(df["patient_id"], df["fold"], strict=True) if splits.fold_of[p] != k]
        if wrong:
            raise RunFolderError(f"patient {wrong[0]} is in another fold than splits.json says; {_RERUN}",
                                 where=str(path))
        if not df["prediction"].isin((0, 1)).all() or \
                ((df["probability"] >= record.threshold).astype(int) != df["prediction"]).any():
            raise RunFolderError(f"prediction disagrees with probability >= threshold {record.threshold:g}; {_RERUN}",
                                 where=str(path))
        return df

    def read_oof_slices(self, splits: Splits | None = None) -> pd.DataFrame:
        """``oof_slices.csv`` (strict)."""
        splits = splits or self.read_splits()
        path = self.oof_slices_path
        if not path.is_file():
            raise RunFolderError("oof_slices.csv missing: the cross-validation has not finished; run spinedx cv "
                                 "again in this folder (it resumes)", where=str(path))
        df = _read_table(path, SLICE_COLUMNS, _RERUN)
        if set(df["patient_id"]) != set(splits.fold_of) or \
                (df["fold"] != df["patient_id"].map(splits.fold_of)).any():
            raise RunFolderError(f"its patients or folds disagree with splits.json; {_RERUN}", where=str(path))
        return df

    def write_metrics(self, metrics: Mapping[str, Any], repeat: int | None = None) -> None:
        """Write ``metrics.json`` (of a repeat) atomically (NaN as null)."""
        write_json(self._base(repeat) / METRICS, dict(metrics))

    def read_metrics(self, repeat: int | None = None) -> dict[str, Any]:
        """``metrics.json`` (of a repeat; strict about the patient-level figures the report and the demo show)."""
        path = self._base(repeat) / METRICS
        if not path.is_file():
            raise RunFolderError("metrics.json missing: the cross-validation has not finished; run spinedx cv "
                                 "again in this folder (it resumes)", where=str(path))
        doc = _read_json(path, "metrics.json", _RERUN)
        if not isinstance(doc, dict):
            raise RunFolderError(f"expected a JSON object; {_RERUN}", where=str(path))
        need = {"n": is_int, "tp": is_int, "tn": is_int, "fp": is_int, "fn": is_int,
                "auc": lambda v: v is None or is_num(v), "auc_low": lambda v: v is None or is_num(v),
                "auc_high": lambda v: v is None or is_num(v), "threshold": is_num, "aggregation": lambda v:
                isinstance(v, str), "folds": is_int, "slice": lambda v: isinstance(v, dict),
                "per_fold": lambda v: isinstance(v, list)}
        bad = [k for k, ok in need.items() if k not in doc or not ok(doc[k])]
        if bad:
            raise RunFolderError(f"missing or bad {', '.join(bad)}; {_RERUN}", where=str(path))
        return doc

    # -- baselines --------------------------------------------------------------------------------

    def write_baselines(self, doc: Mapping[str, Any], tables: Mapping[str, pd.DataFrame],
                        repeat: int | None = None) -> None:
        """Write ``baselines/`` whole (temporary sibling, renamed when complete): ``baselines.json`` and one
        ``<name>_patients.csv`` per table (columns :data:`PATIENT_COLUMNS`)."""
        target = self.baselines_dir(repeat)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(target) as tmp:
            for name, df in tables.items():
                df[list(PATIENT_COLUMNS)].to_csv(tmp / f"{name}_patients.csv", index=False)
            write_json(tmp / BASELINES_DOC, dict(doc))

    def read_baselines(self, repeat: int | None = None) -> tuple[dict[str, Any], dict[str, pd.DataFrame]] | None:
        """``baselines/`` as (document, tables by name), or None when absent (strict about what is there)."""
        folder = self.baselines_dir(repeat)
        if not (folder / BASELINES_DOC).is_file():
            return None
        remedy = f"delete {folder} and rerun spinedx cv in this run folder to refit the baselines"
        doc = _read_json(folder / BASELINES_DOC, "baselines.json", remedy)
        if not isinstance(doc, dict) or not isinstance(doc.get("baselines"), dict):
            raise RunFolderError(f"not a baselines record; {remedy}", where=str(folder / BASELINES_DOC))
        tables = {}
        for name, entry in doc["baselines"].items():
            if isinstance(entry, dict) and entry.get("status") == "ok":
                tables[str(name)] = _read_table(folder / f"{name}_patients.csv", PATIENT_COLUMNS, remedy)
        return doc, tables

    # -- repeated cross-validation ----------------------------------------------------------------

    def read_repeats(self) -> dict[str, Any] | None:
        """``repeats.json`` (``repeats``: N, ``seeds``: the master seed of each repeat), or None for a single
        cross-validation."""
        path = self.repeats_doc_path
        if not path.is_file():
            return None
        remedy = "rerun spinedx cv into a new folder"
        doc = strict_keys(_read_json(path, "repeats.json", remedy), ("format", "repeats", "seeds"), "repeats.json",
                          path, remedy, error=RunFolderError)
        n, seeds = doc["repeats"], doc["seeds"]
        if not is_int(n) or n < 2 or not isinstance(seeds, list) or len(seeds) != n or not all(map(is_int, seeds)):
            raise RunFolderError(f"bad repeats or seeds; {remedy}", where=str(path))
        return doc

    def write_repeats(self, n: int, seeds: Sequence[int]) -> None:
        """Write ``repeats.json``."""
        write_json(self.repeats_doc_path, {"format": 1, "repeats": int(n), "seeds": [int(s) for s in seeds]})

    # -- starting over ----------------------------------------------------------------------------

    def clear(self) -> None:
        """Remove everything ``spinedx cv`` wrote (for ``--overwrite`` before any fold finished)."""
        import shutil

        for p in (self.config_path, self.splits_path(), self.oof_slices_path, self.oof_patients_path,
                  self.metrics_path, self.repeats_doc_path, self.oof_decisions_path(), self.calibration_path,
                  self.conformal_path):
            p.unlink(missing_ok=True)
        for d in (self.folds_dir(), self.path / REPEATS):
            if d.is_dir():
                shutil.rmtree(d)


def _read_table(path: Path, columns: Sequence[str], remedy: str) -> pd.DataFrame:
    return read_table(path, columns, remedy, error=RunFolderError)


def open_run(path: str | Path) -> tuple[RunFolder, RunRecord]:
    """A run folder and its record (strict)."""
    rf = RunFolder(path)
    return rf, rf.read_record()
