"""The records of a run folder (``config.yaml``, ``splits.json``) as typed, strictly read values.

:class:`RunRecord` is ``config.yaml`` (how the run was made: the :class:`~spinedx.training.config.CVConfig`, the
patches it was trained on, the initial weights, device, provenance); :class:`Splits` is ``splits.json`` (folds by
patient). Their readers are strict: a key missing or unknown, a value of the wrong type, patients validated twice
are refused with one line naming the file and what to do (:class:`RunFolderError`). The files themselves are read
and written by :class:`spinedx.runfolder.RunFolder`, the run folder's one owner.

Only the standard library and light spinedx modules are imported at module level (no numpy, pandas or torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.common import json_clean
from spinedx.errors import SpinedxError
from spinedx.patchset import PatchesInfo
from spinedx.records import is_int, is_num, strict_keys
from spinedx.training.config import OPTIMISTIC_WARNING, RESUMABLE_KEYS, CVConfig

if TYPE_CHECKING:
    from spinedx.patchset import PatchSet

__all__ = ["FORMAT", "FoldSplit", "RunFolderError", "RunRecord", "Splits", "WeightsRecord"]

#: Version of the run-folder layout written by this spinedx.
FORMAT = 1


class RunFolderError(SpinedxError):
    """A run folder, or one of its files, is missing, damaged, or inconsistent."""


def _keys(data: Any, expected: Sequence[str], what: str, where: Path | str, remedy: str) -> dict[str, Any]:
    """``data`` as a dict with exactly the ``expected`` keys, else a :class:`RunFolderError`."""
    return strict_keys(data, expected, what, where, remedy, error=RunFolderError)


# ------------------------------------------------------------------------------------------------
# what a run was trained on


@dataclass(frozen=True)
class WeightsRecord:
    """Where the models' initial weights came from (:class:`spinedx.models.WeightsInfo` as recorded)."""

    source: str
    path: str | None
    sha256: str | None
    message: str

    @property
    def pretrained(self) -> bool:
        """True when ImageNet weights initialised the models."""
        return self.source.startswith("imagenet")

    def to_dict(self) -> dict[str, Any]:
        """Plain types for YAML."""
        return {"source": self.source, "path": self.path, "sha256": self.sha256, "message": self.message}

    @classmethod
    def from_record(cls, data: Any, where: Path | str, remedy: str) -> WeightsRecord:
        """Strict reader of :meth:`to_dict`'s output."""
        d = _keys(data, ["source", "path", "sha256", "message"], "weights", where, remedy)
        if not (isinstance(d["source"], str) and isinstance(d["message"], str)
                and all(d[k] is None or isinstance(d[k], str) for k in ("path", "sha256"))):
            raise RunFolderError(f"weights: bad values; {remedy}", where=str(where))
        return cls(d["source"], d["path"], d["sha256"], d["message"])


@dataclass(frozen=True)
class RunRecord:
    """Everything ``config.yaml`` says about a run.

    Attributes:
        config: the resolved configuration.
        patches: what the run was trained on.
        weights: the initial weights.
        device: the device of the (last) training session: type, name, threads, bf16, compile, channels_last.
        channel_names: input channel order of the models.
        provenance: versions, git commit, creation time.
    """

    config: CVConfig
    patches: PatchesInfo
    weights: WeightsRecord
    device: dict[str, Any]
    channel_names: tuple[str, ...]
    provenance: dict[str, Any]

    KEYS = ("format", "config", "optimistic", "warning", "patches", "weights", "device", "channel_names",
            "provenance")

    @property
    def optimistic(self) -> bool:
        """True when early stopping used the outer validation folds (the paper literally)."""
        return self.config.optimistic

    @property
    def warning(self) -> str | None:
        """The optimistic-results warning, when it applies."""
        return OPTIMISTIC_WARNING if self.optimistic else None

    @property
    def synthetic(self) -> bool:
        """True when the run was trained on a synthetic cohort."""
        return self.patches.synthetic

    @property
    def trained_on(self) -> dict[str, Any]:
        """What the models were trained on: ``synthetic``, ``n_patients``, ``prevalence`` (share malignant),
        ``origin`` (``provenance.trained_on``, recorded by ``spinedx cv``; a run made before that gives the patches'
        facts with ``prevalence`` None)."""
        value = self.provenance.get("trained_on")
        if isinstance(value, dict):
            return dict(value)
        man = self.patches.manifest
        return {"synthetic": self.synthetic, "n_patients": self.patches.n_patients, "prevalence": None,
                "origin": ("synthetic cohort" if self.synthetic else "cohort") + (f" {man['path']}" if man else "")}

    @property
    def threshold(self) -> float:
        """Decision threshold on the patient probability."""
        return self.config.threshold

    @property
    def aggregation(self) -> str:
        """``max`` or ``mean`` over a patient's slices."""
        return self.config.aggregation

    @property
    def git_commit(self) -> str | None:
        """Git commit of the spinedx that trained the run."""
        value = self.provenance.get("git_commit")
        return None if value is None else str(value)

    @property
    def versions(self) -> dict[str, Any]:
        """Package versions of the training session."""
        value = self.provenance.get("versions")
        return dict(value) if isinstance(value, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        """The ``config.yaml`` document."""
        return json_clean({
            "format": FORMAT, "config": self.config.to_dict(), "optimistic": self.optimistic,
            "warning": self.warning, "patches": self.patches.to_dict(), "weights": self.weights.to_dict(),
            "device": dict(self.device), "channel_names": list(self.channel_names),
            "provenance": dict(self.provenance),
        })

    @classmethod
    def from_dict(cls, data: Any, where: Path | str) -> RunRecord:
        """Strict reader of :meth:`to_dict`'s output (a parsed ``config.yaml``)."""
        remedy = "the file was not written by this spinedx version's spinedx cv: rerun spinedx cv into a new folder"
        if not isinstance(data, dict):
            raise RunFolderError(f"expected a mapping, found {type(data).__name__}; {remedy}", where=str(where))
        if "format" not in data:
            raise RunFolderError("no 'format': written by an older spinedx; rerun spinedx cv into a new folder "
                                 "(or use the spinedx version that made it)", where=str(where))
        if data["format"] != FORMAT:
            raise RunFolderError(f"run-folder format {data['format']!r} is not this spinedx's ({FORMAT}); use the "
                                 "spinedx version that made it", where=str(where))
        d = _keys(data, cls.KEYS, "config.yaml", where, remedy)
        config = CVConfig.from_record(d["config"], str(where))
        if d["optimistic"] is not config.optimistic or d["warning"] != (OPTIMISTIC_WARNING if config.optimistic
                                                                        else None):
            raise RunFolderError(f"optimistic/warning disagree with config.early_stop_on; {remedy}", where=str(where))
        if not (isinstance(d["device"], dict) and isinstance(d["provenance"], dict)
                and isinstance(d["channel_names"], list)):
            raise RunFolderError(f"device, provenance and channel_names must be a mapping, a mapping and a list; "
                                 f"{remedy}", where=str(where))
        return cls(config, PatchesInfo.from_record(d["patches"], where, remedy, error=RunFolderError),
                   WeightsRecord.from_record(d["weights"], where, remedy), dict(d["device"]),
                   tuple(str(c) for c in d["channel_names"]), dict(d["provenance"]))

    def resume_problems(self, new: RunRecord) -> list[str]:
        """What differs between this (existing) record and ``new`` in ways a resumed run cannot mix."""
        # A run written before the per-fold thread count was fixed (threads: null) had none to keep: it resumes with
        # the new command's (the caller says so, spinedx.evaluation.cv warns).
        legacy = ("threads",) if self.config.threads is None else ()
        problems = new.config.differences(self.config, ignore=RESUMABLE_KEYS + legacy)
        if new.patches.sha256 != self.patches.sha256:
            problems.append(f"patches: {self.patches.path} (sha256 {self.patches.sha256[:12]}...) there, "
                            f"{new.patches.path} (sha256 {new.patches.sha256[:12]}...) now")
        if new.weights.sha256 != self.weights.sha256 or new.weights.pretrained != self.weights.pretrained:
            problems.append(f"initial weights: {self.weights.source} there, {new.weights.source} now")
        return problems

    def checked_patches(self, patches: PatchSet | None = None) -> PatchSet:
        """The run's patches (loaded from the recorded path when not given), refused when they changed since the
        run started (their sha256 is not the recorded one).

        Raises:
            SpinedxError: the patches cannot be loaded, or they are not the ones the run was trained on.
        """
        from spinedx.patchset import load_patches

        if patches is None:
            patches = load_patches(self.patches.path)
        if patches.sha256 != self.patches.sha256:
            raise RunFolderError(f"the patches changed since this run started (sha256 {patches.sha256[:12]}... now, "
                                 f"{self.patches.sha256[:12]}... recorded); rerun spinedx cv into a new folder",
                                 where=str(patches.path))
        return patches


# ------------------------------------------------------------------------------------------------
# splits


@dataclass(frozen=True)
class FoldSplit:
    """One outer fold: its validation patients and the inner validation patients for early stopping."""

    fold: int
    val: tuple[str, ...]
    inner_val: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    """``splits.json``: folds by patient (see :func:`spinedx.evaluation.splits.make_splits`)."""

    folds: int
    seed: int
    inner_val_fraction: float
    splits: tuple[FoldSplit, ...]
    fold_of: dict[str, int] = field(default_factory=dict)

    @property
    def patients(self) -> list[str]:
        """Every patient of the run, sorted."""
        return sorted(self.fold_of)

    @property
    def validation_sets(self) -> list[list[str]]:
        """The validation patients of each fold, in fold order."""
        return [list(s.val) for s in self.splits]

    def split(self, fold: int) -> FoldSplit:
        """The split of fold ``fold``."""
        return self.splits[fold]

    def to_dict(self) -> dict[str, Any]:
        """The ``splits.json`` document."""
        return {"folds": self.folds, "seed": self.seed, "inner_val_fraction": self.inner_val_fraction,
                "n_patients": len(self.fold_of), "fold_of": dict(sorted(self.fold_of.items())),
                "splits": [{"fold": s.fold, "val": list(s.val), "inner_val": list(s.inner_val)}
                           for s in self.splits]}

    @classmethod
    def from_dict(cls, data: Any, where: Path | str) -> Splits:
        """Strict reader: the layout of :meth:`to_dict`, every patient validated exactly once."""
        remedy = "the file was changed by hand or by another program; rerun spinedx cv into a new folder"
        d = _keys(data, ["folds", "seed", "inner_val_fraction", "n_patients", "fold_of", "splits"], "splits.json",
                  where, remedy)
        if not (is_int(d["folds"]) and is_int(d["seed"]) and is_num(d["inner_val_fraction"])
                and is_int(d["n_patients"]) and isinstance(d["fold_of"], dict) and isinstance(d["splits"], list)):
            raise RunFolderError(f"bad value types; {remedy}", where=str(where))
        if len(d["splits"]) != d["folds"]:
            raise RunFolderError(f"{len(d['splits'])} splits for {d['folds']} folds; {remedy}", where=str(where))
        splits = []
        seen: dict[str, int] = {}
        for k, entry in enumerate(d["splits"]):
            e = _keys(entry, ["fold", "val", "inner_val"], f"splits[{k}]", where, remedy)
            if e["fold"] != k or not all(isinstance(v, list) and all(isinstance(p, str) for p in v)
                                         for v in (e["val"], e["inner_val"])):
                raise RunFolderError(f"splits[{k}] must be fold {k} with lists of patient ids; {remedy}",
                                     where=str(where))
            for p in e["val"]:
                if p in seen:
                    raise RunFolderError(f"patient {p} is in the validation folds {seen[p]} and {k}; {remedy}",
                                         where=str(where))
                seen[p] = k
            if set(e["inner_val"]) & set(e["val"]):
                raise RunFolderError(f"fold {k}: inner validation patients are also validation patients; {remedy}",
                                     where=str(where))
            splits.append(FoldSplit(k, tuple(e["val"]), tuple(e["inner_val"])))
        fold_of = {str(p): v for p, v in d["fold_of"].items()}
        if fold_of != seen or d["n_patients"] != len(seen):
            raise RunFolderError(f"fold_of/n_patients disagree with the splits; {remedy}", where=str(where))
        return cls(d["folds"], d["seed"], float(d["inner_val_fraction"]), tuple(splits), fold_of)

    def problems_with(self, config: CVConfig, patients: Sequence[str] | None = None) -> list[str]:
        """How these splits disagree with ``config`` (folds, seed, inner split) and with ``patients``."""
        out = [f"{name}: {mine!r} in splits.json, {theirs!r} now" for name, mine, theirs in (
            ("folds", self.folds, config.folds), ("seed", self.seed, config.seed),
            ("inner_val_fraction", self.inner_val_fraction, config.inner_val_fraction)) if mine != theirs]
        if patients is not None and set(patients) != set(self.fold_of):
            extra, gone = sorted(set(patients) - set(self.fold_of)), sorted(set(self.fold_of) - set(patients))
            out.append("patients differ from the patches (" + ", ".join(
                ([f"{len(extra)} new, e.g. {extra[0]}"] if extra else [])
                + ([f"{len(gone)} gone, e.g. {gone[0]}"] if gone else [])) + ")")
        return out
