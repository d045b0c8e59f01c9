"""How much of the label simple statistics of the patches carry (issue 12 item 4): probes for tuning the
simulation and for the table of docs/synth.md.

Each probe turns every patch (6 channels, z-scored per channel by ``spinedx extract``) into a few
numbers, fits an L2 logistic regression on the training patients' slices, and scores the held-out
patients by the mean probability of their slices (as ``spinedx cv`` aggregates), in 5-fold
cross-validation grouped and stratified by patient. The out-of-fold patient AUC says how much of
the label the statistic carries:

* ``skewness``: the 6 per-channel skewness values (the statistic of issue 12);
* ``quantiles``: per channel the 5, 25, 50, 75 and 95% quantiles (30 values);
* ``pooled``: the patch average-pooled to 8 x 8 per channel (384 values): where the signal is, not
  only its histogram, a linear stand-in for what a CNN can use;
* ``radiomics_first_order`` and ``radiomics``: the team's radiomics baseline
  (:mod:`spinedx.baselines`: IBSI first-order statistics only, then with GLCM and GLRLM texture, per
  channel; L2 logistic regression with C chosen inside the training folds), on the same folds;
* ``features``: the 15 imaging features of the manifest (what the simulated readers see, scored by
  the senior reader), when present;
* ``cnn`` (optional, :func:`cnn_patient_auc`): a small convolutional network trained from scratch on the
  same folds, a cheap indication of what the full image carries for a CNN.

``spinedx cv`` fits the radiomics baseline on a run's own folds; here it runs on the probes' folds to
show, per difficulty, how much of the label it carries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROBES: tuple[str, ...] = ("skewness", "quantiles", "pooled", "radiomics_first_order", "radiomics", "features")
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


def skewness_features(x: np.ndarray) -> np.ndarray:
    """(N, 6, P, P) patches -> (N, 6) per-channel sample skewness (scipy.stats.skew, biased)."""
    from scipy.stats import skew

    flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
    return np.nan_to_num(skew(flat, axis=2))


def quantile_features(x: np.ndarray) -> np.ndarray:
    """(N, 6, P, P) patches -> (N, 6 * 5) per-channel quantiles (:data:`QUANTILES`)."""
    flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
    q = np.quantile(flat, QUANTILES, axis=2)  # (5, N, 6)
    return q.transpose(1, 2, 0).reshape(x.shape[0], -1)


def pooled_features(x: np.ndarray, size: int = 8) -> np.ndarray:
    """(N, 6, P, P) patches -> (N, 6 * size * size) block averages (P divisible by ``size``)."""
    n, c, p, _ = x.shape
    f = p // size
    return x[:, :, : f * size, : f * size].reshape(n, c, size, f, size, f).mean(axis=(3, 5)).reshape(n, -1)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties count one half), as sklearn's ``roc_auc_score``."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def patient_auc(prob: np.ndarray, y: np.ndarray, groups: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Patient AUC of slice probabilities (a patient's score = the mean over its slices, as ``spinedx cv``).

    Returns:
        ``auc``, ``auc_low``/``auc_high`` (95% percentile bootstrap over patients, 1000 resamples),
        ``n_patients``, ``n_malignant``.
    """
    ids, inv = np.unique(groups, return_inverse=True)
    p_pat = np.bincount(inv, weights=prob) / np.bincount(inv)
    y_pat = (np.bincount(inv, weights=y) / np.bincount(inv) > 0.5).astype(int)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(1000):
        i = rng.integers(0, len(ids), len(ids))
        if 0 < y_pat[i].sum() < len(i):
            boot.append(_auc(y_pat[i], p_pat[i]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"auc": _auc(y_pat, p_pat), "auc_low": float(lo), "auc_high": float(hi), "n_patients": len(ids),
            "n_malignant": int(y_pat.sum())}


def cv_patient_auc(
    feats: np.ndarray, y: np.ndarray, groups: np.ndarray, *, c: float = 1.0, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Out-of-fold patient AUC of standardised features + L2 logistic regression.

    Args:
        feats: (N, d) one row per slice.
        y: (N,) 0/1 per slice (a patient's slices share it).
        groups: (N,) patient id per slice.
        c: inverse L2 strength of :class:`sklearn.linear_model.LogisticRegression`.
        folds: folds of :class:`sklearn.model_selection.StratifiedGroupKFold` (by patient).
        seed: shuffling seed of the folds.

    Returns:
        :func:`patient_auc` of the out-of-fold slice probabilities.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    prob = np.full(len(y), np.nan)
    for train, test in _folds(y, groups, folds, seed):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        model.fit(feats[train], y[train])
        prob[test] = model.predict_proba(feats[test])[:, 1]
    return patient_auc(prob, y, groups, seed=seed)


def _folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer folds of every probe: StratifiedGroupKFold by patient, shuffled with ``seed``."""
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def radiomics_patient_auc(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, first_order_only: bool = False, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Out-of-fold patient AUC of the radiomics baseline (:mod:`spinedx.baselines`) on the probes' folds.

    Args:
        x: (N, 6, P, P) z-scored patches.
        y: (N,) 0/1 per slice.
        groups: (N,) patient id per slice.
        first_order_only: only the IBSI first-order statistics (``stat_*``) of each channel, no texture.
        folds: outer folds (the same as :func:`cv_patient_auc` with the same ``seed``).
        seed: fold-shuffling seed (and of the inner folds that choose C).

    Returns:
        :func:`patient_auc` of the out-of-fold slice probabilities.
    """
    from spinedx.baselines import cross_validate, radiomics_features

    feats, names = radiomics_features(x)
    if first_order_only:
        feats = feats[:, [i for i, n in enumerate(names) if n.split("_", 1)[1].startswith("stat_")]]
    fold_of: dict[str, int] = {}
    for k, (_, test) in enumerate(_folds(y, groups, folds, seed)):
        fold_of.update({str(g): k for g in groups[test]})
    oof = cross_validate("radiomics", feats, y, np.asarray(groups).astype(str), fold_of, seed=seed)
    return patient_auc(oof.probability, y, groups, seed=seed)


def probe_patches(
    patches: str | Path, manifest: str | Path | None = None, *, seed: int = 0, cnn: bool = False
) -> dict[str, Any]:
    """Run every probe on an extraction (``patches.npz``) and, for ``features``, its manifest.

    Args:
        patches: ``patches.npz`` written by ``spinedx extract``.
        manifest: the cohort's ``cohort.csv`` (for the ``features`` probe; skipped when None).
        seed: fold-shuffling seed.
        cnn: also run :func:`cnn_patient_auc` (minutes on a CPU).

    Returns:
        Probe name -> the dict of :func:`cv_patient_auc`.
    """
    with np.load(patches, allow_pickle=False) as z:
        x, y, groups = z["x"], z["label"].astype(int), z["patient_id"]
    makers: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
        "skewness": (skewness_features, 1.0),
        "quantiles": (quantile_features, 1.0),
        "pooled": (pooled_features, 0.01),  # 384 correlated inputs: stronger L2
    }
    out: dict[str, Any] = {}
    for name, (fn, c) in makers.items():
        out[name] = cv_patient_auc(fn(x), y, groups, c=c, seed=seed)
    out["radiomics_first_order"] = radiomics_patient_auc(x, y, groups, first_order_only=True, seed=seed)
    out["radiomics"] = radiomics_patient_auc(x, y, groups, seed=seed)
    if manifest is not None:
        import pandas as pd

        from spinedx.features import FEATURE_COLUMNS

        df = pd.read_csv(manifest).set_index("patient_id")
        feats = df.loc[groups, list(FEATURE_COLUMNS)].to_numpy(np.float64)
        out["features"] = cv_patient_auc(feats, y, groups, c=1.0, seed=seed)
    if cnn:
        out["cnn"] = cnn_patient_auc(x, y, groups, seed=seed)
    return out


def cnn_patient_auc(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int = 5, seed: int = 0, epochs: int = 30
) -> dict[str, Any]:
    """Out-of-fold patient AUC of a small CNN trained from scratch (a probe, not the paper's model).

    Three 3x3 convolution blocks (16, 32, 64 channels, batch norm, ReLU, max pooling), global average pooling
    and a linear output; Adam (lr 1e-3, weight decay 1e-4), batch 32, ``epochs`` epochs, random circular
    shifts of up to 4 pixels (no flips: the anatomy has a front and a top); no early stopping (nothing is
    tuned on the held-out fold). Same folds as :func:`cv_patient_auc` with the same ``seed``; one CPU thread.
    """
    import torch
    from torch import nn

    torch.set_num_threads(1)
    prob = np.full(len(y), np.nan)

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    for k, (train, test) in enumerate(_folds(y, groups, folds, seed)):
        torch.manual_seed(seed * 100 + k)
        net = nn.Sequential(block(x.shape[1], 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(64, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
        xt = torch.from_numpy(np.ascontiguousarray(x[train], dtype=np.float32))
        yt = torch.from_numpy(y[train].astype(np.float32))
        gen = torch.Generator().manual_seed(seed * 100 + k)
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(xt), generator=gen)
            for b in range(0, len(order), 32):
                idx = order[b:b + 32]
                xb = xt[idx]
                sh = torch.randint(-4, 5, (2,), generator=gen)
                xb = torch.roll(xb, (int(sh[0]), int(sh[1])), dims=(2, 3))
                loss = nn.functional.binary_cross_entropy_with_logits(net(xb).squeeze(1), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            xs = torch.from_numpy(np.ascontiguousarray(x[test], dtype=np.float32))
            prob[test] = torch.sigmoid(net(xs).squeeze(1)).numpy()
    return patient_auc(prob, y, groups, seed=seed)
