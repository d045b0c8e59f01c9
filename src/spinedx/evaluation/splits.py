"""Cross-validation splits by patient (written once to ``splits.json`` by :mod:`spinedx.runfolder` and reused).

Yeh et al. 2022: "tenfold cross-validation, and each case had only one chance to be included in
the validation group". Folds are drawn over patients (never slices), stratified by the patient
label, so no patient's slices are in both training and validation. Inside each fold's training
patients, an inner validation set (again by patient, stratified) is drawn for early stopping.

:func:`check_split_sizes` refuses, before anything is drawn, a cohort too small for the folds and the inner
split (every caller of :func:`make_splits` gets it; ``spinedx cv`` calls it before it writes or trains anything).
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


#: Patients of each label that every fold's training patients must keep: the inner validation split is
#: stratified (scikit-learn needs two of each label for that), and both its sides then hold both labels.
MIN_TRAIN_PER_LABEL = 2


def _inner_size(n_train: int, inner_val_fraction: float) -> int:
    """Inner validation patients drawn from ``n_train`` training patients (at least 2: one of each label)."""
    return max(2, round(inner_val_fraction * n_train))


def _fold_label_counts(counts: tuple[int, int], folds: int) -> list[tuple[int, int]]:
    """(benign, malignant) validation patients of each fold, as ``StratifiedKFold`` allocates them.

    scikit-learn deals each label's patients to the folds in turn, so the counts do not depend on the seed.
    """
    y_sorted = np.repeat([0, 1], counts)
    return [tuple(int(v) for v in np.bincount(y_sorted[i::folds], minlength=2)) for i in range(folds)]  # type: ignore[misc]


def _sizes_ok(counts: tuple[int, int], folds: int, inner_val_fraction: float) -> bool:
    """Whether (benign, malignant) patient counts make ``folds`` folds and every fold's inner split."""
    if min(counts) < folds:
        return False
    for val in _fold_label_counts(counts, folds):
        train = (counts[0] - val[0], counts[1] - val[1])
        if min(train) < MIN_TRAIN_PER_LABEL:
            return False
        n_train = sum(train)
        if n_train - _inner_size(n_train, inner_val_fraction) < MIN_TRAIN_PER_LABEL:
            return False
    return True


def minimum_per_label(folds: int, inner_val_fraction: float = 0.1) -> int:
    """The fewest patients of each label (with as many of the other) that make ``folds`` folds and their inner
    validation splits (:func:`check_split_sizes`)."""
    m = max(folds, MIN_TRAIN_PER_LABEL)
    while not _sizes_ok((m, m), folds, inner_val_fraction):
        m += 1
    return m


def check_split_sizes(labels: dict[str, int], folds: int, inner_val_fraction: float = 0.1, *,
                      where: str = "patches") -> None:
    """Refuse a cohort too small for ``folds`` stratified folds and the inner validation split of each fold.

    Every label needs at least ``folds`` patients (one per validation fold), and every fold's training
    patients must keep at least two of each label: the inner validation split (early stopping) is stratified,
    and after it the patients left to train on must still hold both labels. Without this check a tiny cohort
    ended in scikit-learn's ``ValueError: test_size=2 should be ... smaller than the number of samples``, or
    trained a fold on one label only.

    Args:
        labels: patient id -> label (0 benign, 1 malignant).
        folds: number of outer folds.
        inner_val_fraction: share of each fold's training patients kept for early stopping.
        where: what the error names (the patches file).

    Raises:
        SpinedxError: one line with the counts and the minimum ("5 patients (2 malignant) cannot make 2 folds
            with an inner validation split: need at least 4 patients of each class ...").
    """
    y = list(labels.values())
    counts = (sum(1 for v in y if v == 0), sum(1 for v in y if v == 1))
    if _sizes_ok(counts, folds, inner_val_fraction):
        return
    need = minimum_per_label(folds, inner_val_fraction)
    advice = "use more patients" + (" or fewer --folds" if folds > 2 else "")
    raise SpinedxError(
        f"{len(y)} patients ({counts[1]} malignant, {counts[0]} benign) cannot make {folds} stratified folds with "
        f"an inner validation split ({inner_val_fraction:.0%} of each fold's training patients, for early "
        f"stopping): need at least {need} patients of each class ({2 * need} in all), so that every label has a "
        f"patient in each validation fold and each fold's training patients keep at least "
        f"{MIN_TRAIN_PER_LABEL} of each label for the stratified inner split; {advice}", where=where)


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
        SpinedxError: a cohort too small for the folds and the inner split (:func:`check_split_sizes`).
    """
    check_split_sizes(labels, folds, inner_val_fraction)
    pids = np.array(list(labels))
    y = np.array([labels[p] for p in pids])
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    fold_of: dict[str, int] = {}
    for k, (train_idx, val_idx) in enumerate(skf.split(pids, y)):
        tr_p, tr_y = pids[train_idx], y[train_idx]
        keep, inner, keep_y, _ = train_test_split(tr_p, tr_y, test_size=_inner_size(len(tr_p), inner_val_fraction),
                                                  stratify=tr_y, random_state=seed * 1000 + k)
        if len(set(keep_y.tolist())) < 2:  # cannot happen after check_split_sizes; never train on one label
            raise SpinedxError(f"fold {k}: the patients left to train on after the inner validation split hold one "
                               "label only; use more patients or fewer --folds", where="patches")
        splits.append({"fold": k, "val": sorted(pids[val_idx].tolist()), "inner_val": sorted(inner.tolist())})
        fold_of.update({p: k for p in pids[val_idx].tolist()})
    return {"folds": folds, "seed": seed, "inner_val_fraction": inner_val_fraction,
            "n_patients": len(pids), "fold_of": dict(sorted(fold_of.items())), "splits": splits}
