"""The report page the template renders, and the number formats every section uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Page:
    """Everything the template renders (strings already formatted), and the CSV tables beside it."""

    title: str
    run_dir: str
    created: str
    banners: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    summary: list[list[str]] = field(default_factory=list)
    summary_text: str = ""
    table1: list[list[str]] | None = None
    table1_head: list[str] = field(default_factory=list)
    table2: list[list[str]] | None = None
    table2_head: list[str] = field(default_factory=list)
    mcnemar: list[list[str]] | None = None
    mcnemar_head: list[str] = field(default_factory=list)
    logistic: str = ""
    baselines: list[list[str]] | None = None
    baselines_head: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, str]] = field(default_factory=list)
    repeats: list[list[str]] | None = None
    repeats_head: list[str] = field(default_factory=list)
    repeats_text: str = ""
    calibration: list[list[str]] | None = None
    calibration_head: list[str] = field(default_factory=list)
    conformal: list[list[str]] | None = None
    conformal_head: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    readerstudy: dict[str, Any] = field(default_factory=dict)  # sections/readerstudy.py
    folds: list[list[str]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    gallery_method: dict[str, str] = field(default_factory=dict)  # spinedx.explain.explanation_record
    provenance: list[list[str]] = field(default_factory=list)
    versions: list[list[str]] = field(default_factory=list)
    config_text: str = ""
    csv_files: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    gallery_per_group: int = 2
    progress: bool = True


def fmt(v: Any, nd: int = 3) -> str:
    """A number with ``nd`` decimals, ``n/a`` when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{nd}f}"
    return str(v)


def ci(est: Any, low: Any, high: Any, pct: bool = False) -> str:
    """``0.912 (0.850-0.950)`` or ``91.2% (85.0-95.0)``; ``n/a`` when missing. An interval with a negative end
    reads ``-1.147 (-1.589 to -0.709)``: a hyphen between negative numbers would read as a minus sign."""
    try:
        e, lo, hi = float(est), float(low), float(high)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(e):
        return "n/a"
    sep = " to " if min(lo, hi) < 0 else "-"
    if pct:
        return f"{100 * e:.1f}% ({100 * lo:.1f}{sep}{100 * hi:.1f})"
    return f"{e:.3f} ({lo:.3f}{sep}{hi:.3f})"


def pretty_rater(name: str) -> str:
    """``reader_r1`` -> ``r1``; other names unchanged."""
    n = str(name)
    return n[len("reader_"):].replace("_", " ") if n.startswith("reader_") else n
