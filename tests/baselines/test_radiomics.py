"""Radiomics features against MIRP's IBSI implementation and against their definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spinedx.baselines import radiomics as R

REF = json.loads((Path(__file__).parent / "mirp_reference.json").read_text())

# our name -> MIRP's feature name (fixed bin number, 32 bins, 2D features averaged over directions)
MIRP_NAMES = {
    "stat_skewness": "stat_skew", "stat_kurtosis": "stat_kurt", "stat_minimum": "stat_min", "stat_p10": "stat_p10",
    "stat_median": "stat_median", "stat_p90": "stat_p90", "stat_maximum": "stat_max", "stat_iqr": "stat_iqr",
    "stat_mad": "stat_mad", "stat_rmad": "stat_rmad", "stat_entropy": "ih_entropy_fbn_n32",
    "stat_uniformity": "ih_uniformity_fbn_n32",
    "glcm_joint_entropy": "cm_joint_entr_d1_2d_avg_fbn_n32", "glcm_contrast": "cm_contrast_d1_2d_avg_fbn_n32",
    "glcm_dissimilarity": "cm_dissimilarity_d1_2d_avg_fbn_n32", "glcm_homogeneity": "cm_inv_diff_mom_d1_2d_avg_fbn_n32",
    "glcm_energy": "cm_energy_d1_2d_avg_fbn_n32", "glcm_correlation": "cm_corr_d1_2d_avg_fbn_n32",
    "glcm_cluster_shade": "cm_clust_shade_d1_2d_avg_fbn_n32",
    "glrlm_sre": "rlm_sre_2d_avg_fbn_n32", "glrlm_lre": "rlm_lre_2d_avg_fbn_n32",
    "glrlm_lgre": "rlm_lgre_2d_avg_fbn_n32",
    "glrlm_hgre": "rlm_hgre_2d_avg_fbn_n32", "glrlm_glnu_norm": "rlm_glnu_norm_2d_avg_fbn_n32",
    "glrlm_rlnu_norm": "rlm_rlnu_norm_2d_avg_fbn_n32", "glrlm_run_percentage": "rlm_r_perc_2d_avg_fbn_n32",
}


@pytest.mark.parametrize("case", range(len(REF["arrays"])))
def test_features_equal_mirp(case: int) -> None:
    x = np.asarray(REF["arrays"][case], dtype=np.float64)[None, None]
    feats, names = R.radiomics_features(x)
    ref = REF["features"][case]
    checked = 0
    for name, value in zip(names, feats[0], strict=True):
        key = name.split("_", 1)[1]
        if key in MIRP_NAMES:
            # MIRP computes moments in float32: skewness/kurtosis agree to ~1e-5 relative
            tol = 1e-4 if key in ("stat_skewness", "stat_kurtosis") else 1e-7
            assert value == pytest.approx(ref[MIRP_NAMES[key]], rel=tol, abs=1e-9), key
            checked += 1
    assert checked == len(MIRP_NAMES)
    assert set(MIRP_NAMES) | {"stat_p25", "stat_p75"} == set(R.FEATURES)


def test_glrlm_counts_every_voxel_once_per_direction() -> None:
    rng = np.random.default_rng(1)
    levels = rng.integers(1, 5, size=(3, 7, 9))
    mats = R.glrlm_matrices(levels, n_bins=4)
    lengths = np.arange(1, mats.shape[-1] + 1)
    voxels = (mats * lengths).sum(axis=(-2, -1))
    assert np.array_equal(voxels, np.full((3, 4), 63.0))
    # a row of one level is one run of its length in the horizontal direction, ones vertically
    flat = np.ones((1, 1, 5), dtype=int) * 3
    m = R.glrlm_matrices(flat, n_bins=4)[0]
    assert m[0, 2, 4] == 1 and m[0].sum() == 1
    assert m[1, 2, 0] == 5 and m[1].sum() == 5


def test_texture_invariant_to_affine_intensity_change() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 16, 16))
    a, names = R.radiomics_features(x)
    b, _ = R.radiomics_features(3.0 * x + 7.0)
    tex = [i for i, n in enumerate(names) if "_glcm_" in n or "_glrlm_" in n or n.endswith(("_entropy", "_uniformity",
                                                                                            "skewness", "kurtosis"))]
    assert np.allclose(a[:, tex], b[:, tex])


def test_shape_and_names() -> None:
    x = np.zeros((4, 6, 8, 8))
    feats, names = R.radiomics_features(x)
    assert feats.shape == (4, 6 * len(R.FEATURES)) and len(names) == feats.shape[1]
    assert np.isfinite(feats).all()  # constant channels give finite values
    with pytest.raises(ValueError):
        R.radiomics_features(np.zeros((4, 8, 8)))


def test_glcm_matrices_equal_scikit_image() -> None:
    from skimage.feature import graycomatrix

    rng = np.random.default_rng(3)
    levels = rng.integers(1, 9, size=(3, 11, 13))
    ours = R.glcm_matrices(levels, n_bins=8)
    for k in range(3):
        ref = graycomatrix((levels[k] - 1).astype(np.uint8), distances=[1],
                           angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=8, symmetric=True)
        assert np.array_equal(ours[k], np.moveaxis(ref[:, :, 0, :], -1, 0).astype(float))
