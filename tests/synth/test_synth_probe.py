"""The first-order probes of spinedx.synth.probe on hand-made patches whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import skew

from spinedx.features import FEATURE_COLUMNS
from spinedx.synth.probe import (
    QUANTILES,
    _auc,
    cv_patient_auc,
    pooled_features,
    probe_patches,
    quantile_features,
    skewness_features,
)


def _patches(n_patients: int = 40, seed: int = 0, cue: float = 0.0) -> dict[str, np.ndarray]:
    """3 slices per patient, 6 x 16 x 16; malignant patches get a bright corner of strength ``cue``."""
    rng = np.random.default_rng(seed)
    y_pat = np.r_[np.ones(n_patients // 2, int), np.zeros(n_patients - n_patients // 2, int)]
    x = rng.standard_normal((3 * n_patients, 6, 16, 16)).astype(np.float32)
    y = np.repeat(y_pat, 3)
    x[y == 1, :, :4, :4] += cue
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], 3)
    return {"x": x, "label": y, "patient_id": pid}


def test_feature_extractors_match_numpy_and_scipy() -> None:
    x = np.random.default_rng(1).gamma(2.0, size=(5, 6, 16, 16)).astype(np.float32)
    s = skewness_features(x)
    assert s.shape == (5, 6)
    assert s[2, 3] == pytest.approx(skew(x[2, 3].ravel().astype(np.float64)))
    q = quantile_features(x)
    assert q.shape == (5, 6 * len(QUANTILES))
    assert q[4, 6 * 0 + 2] == pytest.approx(np.median(x[4, 0].astype(np.float64)))
    p = pooled_features(x, size=4)
    assert p.shape == (5, 6 * 16)
    assert p[0, 0] == pytest.approx(float(x[0, 0, :4, :4].mean()), rel=1e-5)


def test_auc_is_sklearns() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random(50) < 0.3).astype(int)
    score = np.round(rng.random(50) + 0.3 * y, 1)  # with ties
    assert _auc(y, score) == pytest.approx(roc_auc_score(y, score))


@pytest.mark.slow
def test_radiomics_probe_uses_the_same_folds_and_finds_nothing_without_a_cue() -> None:
    """Without a cue the team's radiomics baseline is near chance; its folds are those of cv_patient_auc."""
    from spinedx.synth.probe import _folds, radiomics_patient_auc

    none = _patches(n_patients=30, seed=5)
    res = radiomics_patient_auc(none["x"], none["label"], none["patient_id"], first_order_only=True)
    assert 0.15 < res["auc"] < 0.85 and res["n_patients"] == 30
    a = _folds(none["label"], none["patient_id"], 5, 0)
    b = _folds(none["label"], none["patient_id"], 5, 0)
    assert all(np.array_equal(t1, t2) for (_, t1), (_, t2) in zip(a, b, strict=True))
    pats = [set(none["patient_id"][t]) for _, t in a]
    assert sum(len(p) for p in pats) == 30 == len(set().union(*pats))  # every patient held out exactly once


def test_cv_auc_finds_a_cue_and_no_cue() -> None:
    strong = _patches(cue=3.0)
    res = cv_patient_auc(pooled_features(strong["x"], 4), strong["label"], strong["patient_id"])
    assert res["auc"] > 0.95 and res["n_patients"] == 40 and res["n_malignant"] == 20
    assert res["auc_low"] <= res["auc"] <= res["auc_high"]
    none = _patches(seed=2)
    res = cv_patient_auc(skewness_features(none["x"]), none["label"], none["patient_id"])
    assert 0.2 < res["auc"] < 0.8  # nothing to find: near chance


@pytest.mark.slow
def test_probe_patches_reads_npz_and_manifest(tmp_path: Path) -> None:
    z = _patches(cue=1.0)
    with open(tmp_path / "patches.npz", "wb") as fh:
        np.savez(fh, **z)
    ids = np.unique(z["patient_id"])
    y = {p: int(z["label"][z["patient_id"] == p][0]) for p in ids}
    df = pd.DataFrame({"patient_id": ids, "label": ["malignant" if y[p] else "benign" for p in ids]})
    rng = np.random.default_rng(0)
    for c in FEATURE_COLUMNS:
        df[c] = (rng.random(len(ids)) < 0.5).astype(int)
    df[FEATURE_COLUMNS[0]] = [y[p] for p in ids]  # one feature decides the label
    df.to_csv(tmp_path / "cohort.csv", index=False)
    res = probe_patches(tmp_path / "patches.npz", tmp_path / "cohort.csv")
    assert set(res) == {"skewness", "quantiles", "pooled", "radiomics_first_order", "radiomics", "features"}
    assert res["features"]["auc"] == 1.0
    assert res["pooled"]["auc"] > 0.9
    # the bright corner shifts the upper quantiles and maximum: first-order radiomics sees it too
    assert res["radiomics_first_order"]["auc"] > 0.8 and res["radiomics"]["auc"] > 0.8
