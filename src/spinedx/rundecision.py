"""The decision files of a run folder (issue 20), written and read for :class:`spinedx.runfolder.RunFolder`.

``calibration.json`` (the deployed calibration map), ``conformal.json`` (the deployed conformal thresholds),
``oof_decisions.csv`` (out-of-fold calibrated probabilities and conformal sets, fold-wise honest fits) and
``domain.json`` (the domain and spread references of :mod:`spinedx.decision.domain`). :class:`DecisionFiles` is
a part of :class:`spinedx.runfolder.RunFolder` (its base class), kept in a module of its own so that neither
module grows past a screenful of jobs; use them through ``RunFolder``, the run folder's one owner. The objects
written (a ``Calibrator``, ``ConformalThresholds``) come from :mod:`spinedx.decision`, which sits above the run
folder: they are passed in, never imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.fsutil import atomic_path
from spinedx.records import read_json, strict_keys, write_json
from spinedx.runrecord import FORMAT, RunFolderError, Splits

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CALIBRATION", "CONFORMAL", "DECISION_COLUMNS", "DOMAIN", "OOF_DECISIONS", "DecisionFiles"]

OOF_DECISIONS = "oof_decisions.csv"
CALIBRATION = "calibration.json"
CONFORMAL = "conformal.json"
#: ``oof_decisions.csv``: ``conformal_set`` is the labels joined by ``|`` (empty: the empty set).
DECISION_COLUMNS = ("patient_id", "fold", "label", "probability_uncalibrated", "probability", "conformal_set")
#: ``domain.json``: the domain reference and the fold models' honest spread (issue 20).
DOMAIN = "domain.json"

_RERUN = "rerun spinedx cv with the same options in this folder (finished folds are kept) to rewrite it"


def _read_json(path: Path, what: str, remedy: str) -> Any:
    return read_json(path, what, remedy, error=RunFolderError)


class DecisionFiles:
    """The decision files' paths, writers and strict readers (a base of :class:`spinedx.runfolder.RunFolder`)."""

    path: Path

    def _base(self, repeat: int | None) -> Path:  # RunFolder's
        raise NotImplementedError

    def read_splits(self, repeat: int | None = None) -> Splits:  # RunFolder's
        raise NotImplementedError

    # -- calibration and conformal refer ------------------------------------------------------------

    @property
    def calibration_path(self) -> Path:
        """``calibration.json``: the deployed calibration map."""
        return self.path / CALIBRATION

    @property
    def conformal_path(self) -> Path:
        """``conformal.json``: the deployed conformal thresholds."""
        return self.path / CONFORMAL

    def oof_decisions_path(self, repeat: int | None = None) -> Path:
        """``oof_decisions.csv`` (of a repeat)."""
        return self._base(repeat) / OOF_DECISIONS

    def write_calibration(self, calibrator: Any) -> None:
        """Write ``calibration.json`` = ``{"format": 1, **calibrator.to_dict()}`` atomically
        (a :class:`spinedx.decision.calibration.Calibrator`)."""
        write_json(self.calibration_path, {"format": FORMAT, **calibrator.to_dict()})

    def read_calibration(self) -> dict[str, Any] | None:
        """``calibration.json`` as written (``format``, ``method``, ``params``), or None when the run has none (made
        before calibration, or without honest calibration data). ``Calibrator.from_dict`` checks the map."""
        return self._read_decision_doc(self.calibration_path, ("format", "method", "params"))

    def write_conformal(self, thresholds: Any) -> None:
        """Write ``conformal.json`` = ``{"format": 1, **thresholds.to_dict()}`` atomically
        (a :class:`spinedx.decision.conformal.ConformalThresholds`)."""
        write_json(self.conformal_path, {"format": FORMAT, **thresholds.to_dict()})

    def read_conformal(self) -> dict[str, Any] | None:
        """``conformal.json`` as written (``format``, ``alpha``, ``thresholds``), or None when the run has none.
        ``ConformalThresholds.from_dict`` checks the thresholds."""
        return self._read_decision_doc(self.conformal_path, ("format", "alpha", "thresholds"))

    def remove_decision_files(self) -> None:
        """Remove ``calibration.json`` and ``conformal.json`` (a finish without honest calibration data must not
        leave an older fit that no longer describes the run's folds)."""
        self.calibration_path.unlink(missing_ok=True)
        self.conformal_path.unlink(missing_ok=True)

    def _read_decision_doc(self, path: Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        doc = strict_keys(_read_json(path, path.name, _RERUN), keys, path.name, path, _RERUN, error=RunFolderError)
        if doc["format"] != FORMAT:
            raise RunFolderError(f"format {doc['format']!r} is not this spinedx version's ({FORMAT}); {_RERUN}",
                                 where=str(path))
        return dict(doc)

    def write_oof_decisions(self, table: pd.DataFrame, repeat: int | None = None) -> None:
        """Write ``oof_decisions.csv`` (of a repeat) atomically (columns :data:`DECISION_COLUMNS`)."""
        with atomic_path(self.oof_decisions_path(repeat)) as tmp:
            table[list(DECISION_COLUMNS)].to_csv(tmp, index=False)

    def read_oof_decisions(self, splits: Splits | None = None, repeat: int | None = None) -> pd.DataFrame | None:
        """``oof_decisions.csv`` (strict; ``conformal_set`` as text, ``|``-joined, empty for the empty set), or None
        when the run has none (made before it, or without honest calibration data)."""
        path = self.oof_decisions_path(repeat)
        if not path.is_file():
            return None
        import numpy as np
        import pandas as pd

        splits = splits or self.read_splits(repeat)
        try:
            df = pd.read_csv(path, dtype={"patient_id": str, "conformal_set": str}, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
            raise RunFolderError(f"not a readable CSV ({' '.join(str(exc).split())}); {_RERUN}",
                                 where=str(path)) from None
        if list(df.columns) != list(DECISION_COLUMNS):
            raise RunFolderError(f"columns {list(df.columns)}, expected {list(DECISION_COLUMNS)}; {_RERUN}",
                                 where=str(path))
        probs = df[["probability_uncalibrated", "probability"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        ints = df[["fold", "label"]].apply(pd.to_numeric, errors="coerce")
        ok = bool(np.all(np.isfinite(probs)) and np.all((probs >= 0) & (probs <= 1))) and \
            bool(ints.notna().all().all()) and bool(ints["label"].isin((0, 1)).all()) and \
            bool(df["conformal_set"].isin(("", "benign", "malignant", "benign|malignant")).all()) and \
            df["patient_id"].is_unique and set(df["patient_id"]) == set(splits.fold_of) and \
            all(splits.fold_of[p] == k for p, k in zip(df["patient_id"], ints["fold"], strict=True))
        if not ok:
            raise RunFolderError(f"its patients, folds, probabilities or conformal sets are not what spinedx cv "
                                 f"writes; {_RERUN}", where=str(path))
        df[["fold", "label"]] = ints.astype("int64")
        df[["probability_uncalibrated", "probability"]] = probs
        return df

    # -- the domain reference (issue 20: outside the training data, models that disagree) ---------------------

    @property
    def domain_path(self) -> Path:
        """``domain.json``: the domain and spread references (:mod:`spinedx.decision.domain`)."""
        return self.path / DOMAIN

    def write_domain(self, doc: Mapping[str, Any]) -> None:
        """Write ``domain.json`` atomically (written by ``fit_run_domain`` at the end of ``finish_run``)."""
        write_json(self.domain_path, dict(doc))

    def read_domain(self) -> dict[str, Any] | None:
        """``domain.json`` (``format`` 1 with ``domain`` and ``spread``), or None for a run made before it."""
        if not self.domain_path.is_file():
            return None
        remedy = "delete it and rerun spinedx cv in this run folder (finished folds are kept) to refit it"
        return strict_keys(_read_json(self.domain_path, "domain.json", remedy),
                           ("format", "domain", "features", "spread", "spread_absent_reason"), "domain.json",
                           self.domain_path, remedy, error=RunFolderError)
