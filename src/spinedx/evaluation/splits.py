"""Cross-validation splits by patient (written once to ``splits.json`` by :mod:`spinedx.runfolder` and reused).

Yeh et al. 2022: "tenfold cross-validation, and each case had only one chance to be included in
the validation group". Folds are drawn over patients (never slices), stratified by the patient
label, so no patient's slices are in both training and validation. Inside each fold's training
patients, an inner validation set (again by patient, stratified) is drawn for early stopping.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from spinedx.errors import SpinedxError


def patient_labels(patient_id: np.ndarray, label: np.ndarray, where: str = "patches") -> dict[str, int]:
    """One label per patient (sorted by id); raises if a patient's slices disagree."""
    out: dict[str, int] = {}
    for pid, lab in zip(np.asarray(patient_id).astype(str), np.asarray(label).astype(int), strict=True):
        if out.setdefault(pid, int(lab)) != int(lab):
            raise SpinedxError(f"patient {pid} has slices labelled both benign and malignant", where=where)
    return dict(sorted(out.items()))


def make_splits(labels: dict[str, int], folds: int = 10, seed: int = 0,
                inner_val_fraction: float = 0.1) -> dict[str, Any]:
    """Stratified patient folds and per-fold inner validation patients.

    Stratifying over patients (one label each) is grouped k-fold by construction; it is what
    ``StratifiedGroupKFold`` aims for, but exact in patient counts, the unit the paper scores.

    Args:
        labels: Patient id -> label (0 benign, 1 malignant).
        folds: Number of outer folds.
        seed: Shuffling seed.
        inner_val_fraction: Share of each fold's training patients kept for early stopping.

    Returns:
        ``{"folds": n, "seed": s, "inner_val_fraction": f, "fold_of": {pid: k},
        "splits": [{"fold": k, "val": [...], "inner_val": [...]}, ...]}``.

    Raises:
        SpinedxError: Fewer patients of a class than folds.
    """
    pids = np.array(list(labels))
    y = np.array([labels[p] for p in pids])
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    if min(counts.values()) < folds:
        raise SpinedxError(
            f"{folds} stratified folds need at least {folds} patients of each class; have {counts[0]} benign and "
            f"{counts[1]} malignant. Use fewer --folds or more patients.", where="patches")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    fold_of: dict[str, int] = {}
    for k, (train_idx, val_idx) in enumerate(skf.split(pids, y)):
        tr_p, tr_y = pids[train_idx], y[train_idx]
        n_inner = max(2, round(inner_val_fraction * len(tr_p)))
        stratify = tr_y if min((tr_y == 0).sum(), (tr_y == 1).sum()) >= 2 else None
        _, inner = train_test_split(tr_p, test_size=n_inner, stratify=stratify, random_state=seed * 1000 + k)
        splits.append({"fold": k, "val": sorted(pids[val_idx].tolist()), "inner_val": sorted(inner.tolist())})
        fold_of.update({p: k for p in pids[val_idx].tolist()})
    return {"folds": folds, "seed": seed, "inner_val_fraction": inner_val_fraction,
            "n_patients": len(pids), "fold_of": dict(sorted(fold_of.items())), "splits": splits}
