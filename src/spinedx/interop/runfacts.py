"""The facts of a run folder that a bundle records, read through the run folder's one owner (spinedx.runfolder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spinedx.models.tta import TTAViews

#: The decision files of a run folder (issue 20: calibrator, conformal thresholds, domain and spread references),
#: copied into a bundle when the run has them and checked there like the fold models.
DECISION_FILES = ("calibration.json", "conformal.json", "domain.json")


@dataclass(frozen=True)
class RunFacts:
    """What :func:`spinedx.interop.bundle.export_bundle` copies or records from a run.

    Attributes:
        config_path: the run's ``config.yaml``.
        metrics_path: its ``metrics.json`` (None when absent).
        backbone: torchvision backbone of the fold models.
        channel_names: input channel order.
        patch_size: side of the patches the models take.
        preprocessing: the extraction settings the run was trained with (copied into its ``config.yaml``).
        aggregation: slice aggregation (``max`` in the paper).
        threshold: decision threshold.
        performance: the run's cross-validated metrics (with intervals), or None before ``metrics.json`` exists.
        baselines: baseline results the run records, or None.
        synthetic: trained on a synthetic cohort.
        optimistic: the run's early stopping used its validation folds.
        git_commit: commit that trained it.
        versions: package versions recorded by the run.
        tta: the run's test-time views (:class:`spinedx.models.tta.TTAViews`).
        oof_inference: how the run's out-of-fold probabilities (its performance) were computed
            (:func:`spinedx.models.run.oof_inference`).
        decision_files: the run's decision files present (name -> path; :data:`DECISION_FILES`).
        trained_on: what the models were trained on (:attr:`spinedx.runrecord.RunRecord.trained_on`).
    """

    config_path: Path
    metrics_path: Path | None
    backbone: str
    channel_names: tuple[str, ...]
    patch_size: int
    preprocessing: dict[str, Any]
    aggregation: str
    threshold: float
    performance: dict[str, Any] | None
    baselines: dict[str, Any] | None
    synthetic: bool
    optimistic: bool
    git_commit: str | None
    versions: dict[str, Any] = field(default_factory=dict)
    tta: TTAViews | None = None
    oof_inference: dict[str, Any] = field(default_factory=dict)
    decision_files: dict[str, Path] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)


def run_facts(run_dir: str | Path) -> RunFacts:
    """Read a run folder's facts (strictly, through :class:`spinedx.runfolder.RunFolder`).

    Raises:
        SpinedxError: not a run folder written by this spinedx, or a run that does not record how its patches
            were made (a bundle could not preprocess new cases the same way).
    """
    from spinedx.errors import SpinedxError
    from spinedx.models.run import oof_inference
    from spinedx.models.tta import TTAViews
    from spinedx.runfolder import RunFolder

    rf = RunFolder(run_dir)
    record = rf.read_record()
    if record.patches.extract is None:
        raise SpinedxError("the run does not record how its training patches were made (no extract.json beside its "
                           "patches when spinedx cv ran), so a bundle could not preprocess new cases the same way",
                           where=str(rf.config_path))
    metrics = rf.read_metrics() if rf.metrics_path.is_file() else None
    return RunFacts(
        config_path=rf.config_path, metrics_path=rf.metrics_path if metrics is not None else None,
        backbone=record.config.backbone, channel_names=tuple(record.channel_names),
        patch_size=record.patches.patch_size, preprocessing=dict(record.patches.extract),
        aggregation=record.aggregation, threshold=record.threshold, performance=metrics,
        baselines=(metrics or {}).get("baselines"),
        synthetic=record.synthetic, optimistic=record.optimistic, git_commit=record.git_commit,
        versions=record.versions, tta=TTAViews.from_config(record.config),
        oof_inference=oof_inference(rf, list(rf.fold_models(allow_missing=False).paths), record),
        decision_files={n: rf.path / n for n in DECISION_FILES if (rf.path / n).is_file()},
        trained_on=record.trained_on)
