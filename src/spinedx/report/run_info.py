"""What a run folder (from ``spinedx cv``) says about itself, read tolerantly.

The run folder's ``config.yaml`` holds the resolved configuration, versions, the weights'
origin, the optimistic-early-stopping flag and the patches folder (docs/architecture.md).
Keys are looked up breadth-first so a flat or nested layout both work.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.errors import SpinedxError

_MISSING = object()


def find_key(data: Any, *names: str, default: Any = None) -> Any:
    """The value of the first key in ``names`` found breadth-first in nested dicts/lists."""
    for name in names:
        queue: deque[Any] = deque([data])
        while queue:
            node = queue.popleft()
            if isinstance(node, dict):
                if name in node and node[name] is not None:
                    return node[name]
                queue.extend(v for v in node.values() if isinstance(v, (dict, list)))
            elif isinstance(node, list):
                queue.extend(v for v in node if isinstance(v, (dict, list)))
    return default


def _resolve(path: str | Path, *bases: Path) -> Path | None:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    for base in (*bases, Path.cwd()):
        cand = (base / p)
        if cand.exists():
            return cand.resolve()
    return None


@dataclass
class RunInfo:
    """The facts of a run folder that prediction and the report need.

    Attributes:
        run_dir: the run folder.
        config: the whole parsed ``config.yaml``.
        threshold: decision threshold on the patient probability (paper: 0.5).
        backbone: torchvision backbone name.
        weights: the weights record (source, path, sha256, message), if recorded.
        pretrained: True when ImageNet weights initialised the models.
        optimistic: True when early stopping used the validation fold (optimistic estimates).
        patches_dir: folder of ``patches.npz``/``extract.json`` used for training, if found.
        extract: parsed ``extract.json`` of that folder, if found.
    """

    run_dir: Path
    config: dict[str, Any]
    threshold: float = 0.5
    backbone: str | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    pretrained: bool | None = None
    optimistic: bool | None = None
    patches_dir: Path | None = None
    extract: dict[str, Any] | None = None

    @property
    def versions(self) -> dict[str, Any]:
        """Package versions recorded by the run."""
        return dict(find_key(self.config, "versions", default={}) or {})

    @property
    def git_commit(self) -> str | None:
        """Git commit recorded by the run."""
        return find_key(self.config, "git_commit")

    @property
    def extract_config(self) -> dict[str, Any] | None:
        """The ``ExtractConfig`` used to make the training patches, if recorded."""
        if self.extract is None:
            return None
        cfg = self.extract.get("config")
        return dict(cfg) if isinstance(cfg, dict) else None

    def cohort_path(self) -> Path | None:
        """The cohort manifest the run was made from (config, else ``extract.json``), if it exists."""
        bases = [self.run_dir] + ([self.patches_dir] if self.patches_dir else [])
        for source in (self.config, self.extract or {}):
            val = find_key(source, "cohort", "manifest", "manifest_path", "cohort_csv", "cohort_path")
            if isinstance(val, dict):  # extract.json: {"manifest": {"path": ..., "sha256": ...}}
                val = val.get("path")
            if isinstance(val, (str, Path)):
                found = _resolve(val, *bases)
                if found is not None and found.is_file():
                    return found
        return None


def load_run_info(run_dir: str | Path) -> RunInfo:
    """Read ``RUN_DIR/config.yaml`` (and the ``extract.json`` of its patches folder).

    Raises:
        SpinedxError: the folder or its ``config.yaml`` is missing or unreadable.
    """
    import yaml

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise SpinedxError("run folder not found; pass the folder written by `spinedx cv`", where=str(run_dir))
    if not cfg_path.is_file():
        raise SpinedxError("config.yaml missing: not a run folder written by `spinedx cv`", where=str(run_dir))
    try:
        config = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpinedxError(f"cannot parse ({exc}); rerun `spinedx cv`", where=str(cfg_path)) from exc
    if not isinstance(config, dict):
        raise SpinedxError("expected a mapping; rerun `spinedx cv`", where=str(cfg_path))
    weights = find_key(config, "weights_info", "weights", default={})
    weights = dict(weights) if isinstance(weights, dict) else {"source": str(weights)}
    pretrained = find_key(config, "pretrained_used", "imagenet")
    if not isinstance(pretrained, bool):
        src = weights.get("source")
        pretrained = str(src).startswith("imagenet") if src is not None else None
    optimistic = find_key(config, "optimistic", "optimistic_early_stopping")
    threshold = find_key(config, "threshold", default=0.5)
    patches_dir = None
    extract = None
    pd_val = find_key(config, "patches_dir", "patches")
    if isinstance(pd_val, str):
        found = _resolve(pd_val, run_dir)
        if found is not None:
            patches_dir = found if found.is_dir() else found.parent
            ej = patches_dir / "extract.json"
            if ej.is_file():
                try:
                    extract = json.loads(ej.read_text())
                except json.JSONDecodeError:
                    extract = None
    return RunInfo(
        run_dir=run_dir, config=config, threshold=float(threshold), backbone=find_key(config, "backbone"),
        weights=weights, pretrained=pretrained, optimistic=bool(optimistic) if optimistic is not None else None,
        patches_dir=patches_dir, extract=extract,
    )
