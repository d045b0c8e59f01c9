"""The facts of a run folder that a bundle records (one reader, so the bundle never guesses)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError


@dataclass(frozen=True)
class RunFacts:
    """What :func:`spinedx.interop.bundle.export_bundle` copies or records from a run.

    Attributes:
        config_path: the run's ``config.yaml``.
        metrics_path: its ``metrics.json`` (None when absent).
        backbone: torchvision backbone of the fold models.
        channel_names: input channel order.
        patch_size: side of the patches the models take.
        preprocessing: the extraction settings the run was trained with.
        aggregation: slice aggregation (``max`` in the paper).
        threshold: decision threshold.
        performance: the run's cross-validated metrics (with intervals), or None.
        baselines: baseline results the run records, or None.
        synthetic: trained on a synthetic cohort.
        optimistic: the run's early stopping used its validation folds.
        git_commit: commit that trained it.
        versions: package versions recorded by the run.
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


def run_facts(run_dir: str | Path) -> RunFacts:
    """Read a run folder's facts.

    Raises:
        SpinedxError: not a run folder, or the run does not record how its patches were made.
    """
    import torch

    from spinedx.report.run_info import load_run_info

    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    extract = info.extract_config
    if extract is None:
        raise SpinedxError("the run does not record how its training patches were made (no extract.json beside its "
                           "patches), so a bundle could not preprocess new cases the same way", where=str(run_dir))
    first = sorted(run_dir.glob("folds/*/model.pt"), key=lambda p: int(p.parent.name))
    if not first:
        raise SpinedxError("no fold models (folds/<k>/model.pt); finish spinedx cv first", where=str(run_dir))
    payload = torch.load(first[0], map_location="cpu", weights_only=True)
    channels = tuple(str(c) for c in payload.get("channel_names", ()))
    cfg = info.config.get("config", {}) if isinstance(info.config.get("config"), dict) else {}
    metrics_path = run_dir / "metrics.json"
    performance = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return RunFacts(
        config_path=run_dir / "config.yaml", metrics_path=metrics_path if metrics_path.is_file() else None,
        backbone=str(info.backbone or payload.get("backbone")), channel_names=channels,
        patch_size=int(extract["patch_size"]), preprocessing=dict(extract),
        aggregation=str(cfg.get("aggregation", "max")),
        threshold=float(info.threshold), performance=performance, baselines=None,
        synthetic=bool(info.config.get("synthetic", False)), optimistic=bool(info.optimistic),
        git_commit=info.git_commit, versions=info.versions)
