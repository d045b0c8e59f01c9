"""From slice probabilities to patient probabilities.

Yeh et al. 2022, "Evaluation using cross-validation": "For the per-patient diagnosis, the
highest probability of malignancy among all slices of each patient was assigned to that
patient ... using the threshold of 0.5." ``max`` is that rule; ``mean`` is offered for
comparison.
"""

from __future__ import annotations

import pandas as pd

from spinedx.common import AGGREGATIONS, check_aggregation
from spinedx.errors import SpinedxError

__all__ = ["AGGREGATIONS", "aggregate_patients"]


def aggregate_patients(slices: pd.DataFrame, rule: str = "max", threshold: float = 0.5) -> pd.DataFrame:
    """One row per patient from slice rows.

    Args:
        slices: Columns ``patient_id``, ``label``, ``probability`` (and optionally ``fold``).
        rule: ``max`` (the paper's) or ``mean`` of the patient's slice probabilities.
        threshold: Predicted malignant (1) when the patient probability is >= ``threshold``.

    Returns:
        Columns ``patient_id`` (, ``fold``), ``label``, ``probability``, ``prediction``, in
        order of first appearance.

    Raises:
        SpinedxError: Unknown rule, or a patient whose slices carry different labels.
    """
    check_aggregation(rule)
    keys = ["patient_id"] + (["fold"] if "fold" in slices.columns else [])
    grouped = slices.groupby(keys, sort=False)
    n_labels = grouped["label"].nunique()
    if (n_labels > 1).any():
        bad = ", ".join(str(k) for k in n_labels[n_labels > 1].index[:5])
        raise SpinedxError(f"slices of one patient carry different labels: {bad}", where="patches")
    out = grouped.agg(label=("label", "first"), probability=("probability", rule)).reset_index()
    out["label"] = out["label"].astype(int)
    out["prediction"] = (out["probability"] >= threshold).astype(int)
    return out
