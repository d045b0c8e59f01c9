"""Fitting a baseline on the run's own folds: L2 logistic regression with C chosen inside the training folds.

The baseline sees exactly what the model sees: the same out-of-fold splits by patient (``splits.json``), the
same slices, the same patient aggregation and threshold. Its regularisation strength is chosen by an inner
cross-validation over the *training* patients only (grouped by patient, stratified), so the evaluated fold
never influences it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Candidate inverse regularisation strengths (C of scikit-learn's LogisticRegression): one per decade. Half-decades
#: doubled the fitting time and moved the inner-CV AUC by less than its fold-to-fold spread.
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 2, 6))


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    groups_train: np.ndarray,
    x_test: np.ndarray,
    *,
    seed: int = 0,
    cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 5,
) -> tuple[np.ndarray, float]:
    """Fit a standardised L2 logistic regression on training samples and score the test samples.

    C maximises the inner-CV ROC AUC over the training patients (``StratifiedGroupKFold``: a patient's samples
    stay together; fewer folds when a class has fewer patients than ``inner_folds``; the middle candidate when
    there are too few to split). scikit-learn's ``LogisticRegressionCV`` fits the C path on those folds with the
    Newton-Cholesky solver (a few iterations for a few hundred features), BLAS limited to one thread: these small
    problems ran 10x slower with two BLAS threads on a busy machine. The standardisation is fitted on all training
    samples (it uses no labels).

    Args:
        x_train: (n, d) training features.
        y_train: (n,) 0/1 labels.
        groups_train: (n,) patient of each training sample (inner folds never split a patient).
        x_test: (m, d) features to score.
        seed: seed of the inner folds and the solver.
        cs: candidate C values.
        inner_folds: inner folds at most.

    Returns:
        ``(probabilities (m,), chosen C)``.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y_train = np.asarray(y_train).astype(int)
    groups_train = np.asarray(groups_train).astype(str)
    patient_y = {g: y for g, y in zip(groups_train, y_train, strict=True)}
    per_class = min(sum(1 for v in patient_y.values() if v == c) for c in (0, 1))
    k = min(inner_folds, per_class)
    scaler = StandardScaler().fit(x_train)
    xs, xt = scaler.transform(x_train), scaler.transform(np.asarray(x_test))
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # convergence chatter on separable folds; C is still chosen by AUC
        if k >= 2:
            folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
                xs, y_train, groups_train))
            model: Any = LogisticRegressionCV(Cs=list(cs), cv=folds, scoring="roc_auc", solver="newton-cholesky",
                                              max_iter=1000, random_state=seed).fit(xs, y_train)
            best = float(model.C_[0])
        else:
            best = float(cs[len(cs) // 2])
            model = LogisticRegression(C=best, solver="newton-cholesky", max_iter=1000,
                                       random_state=seed).fit(xs, y_train)
        prob = model.predict_proba(xt)[:, 1]
    return prob.astype(np.float64), best


@dataclass
class BaselineOOF:
    """Out-of-fold slice probabilities of a baseline, and what was chosen in each fold.

    Attributes:
        name: the baseline's name (``radiomics``, ``features``).
        probability: (N,) out-of-fold probability of every sample, in input order.
        fold: (N,) the outer fold that scored each sample.
        chosen_c: outer fold -> C chosen inside its training patients.
    """

    name: str
    probability: np.ndarray
    fold: np.ndarray
    chosen_c: dict[int, float] = field(default_factory=dict)


def cross_validate(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    patient_id: np.ndarray,
    fold_of: Mapping[str, int],
    *,
    seed: int = 0,
    cs: Sequence[float] = DEFAULT_CS,
) -> BaselineOOF:
    """Out-of-fold probabilities of a baseline on the given patient folds (the run's ``splits.json``).

    Args:
        name: baseline name.
        x: (N, d) features, one row per sample (slice).
        y: (N,) labels.
        patient_id: (N,) patient of each sample.
        fold_of: patient -> outer fold (``splits.json["fold_of"]``); every patient must have one.
        seed: seed of the inner folds.
        cs: candidate C values.

    Raises:
        KeyError: a patient without a fold.
    """
    patient_id = np.asarray(patient_id).astype(str)
    fold = np.array([int(fold_of[p]) for p in patient_id])
    prob = np.full(len(y), np.nan)
    chosen: dict[int, float] = {}
    for k in sorted(set(fold.tolist())):
        test = fold == k
        prob[test], chosen[k] = fit_predict(x[~test], np.asarray(y)[~test], patient_id[~test], x[test],
                                            seed=seed + k, cs=cs)
    return BaselineOOF(name, prob, fold, chosen)
