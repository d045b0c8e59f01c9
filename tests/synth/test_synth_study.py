"""Truth of the synthetic cohort: prevalences, consistency and reader operating points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS
from spinedx.synth import sample_study_table
from spinedx.synth.prevalence import PREVALENCE, R1_FALSE_POSITIVE_BY_PATTERN, READER_OPERATING_POINTS

N, N_MAL = 6000, 3000
# Tolerance: 4 binomial standard errors of a proportion over 3000 patients (a false alarm in
# about 1 of 16 000 checks; we make 15*2 + 3*2 checks), plus 0.002 for the few prevalences that
# are scaled conditionally (fluid sign, mass).
Z = 4.0


def _tol(p: float, n: int) -> float:
    return Z * math.sqrt(max(p * (1 - p), 1e-4) / n) + 0.002


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return sample_study_table(N, N_MAL, seed=123)


def test_columns_and_values(table: pd.DataFrame) -> None:
    assert list(table.columns[:2]) == ["patient_id", "label"]
    for c in (*FEATURE_COLUMNS, *READER_COLUMNS):
        assert c in table.columns
    assert set(np.unique(table[list(FEATURE_COLUMNS)].to_numpy())) <= {0, 1}
    for r in READER_COLUMNS:
        assert set(table[r]) <= {"benign", "malignant"}
    assert (table.label == "malignant").sum() == N_MAL
    assert table.patient_id.is_unique and table.patient_id.iloc[0] == "SYN0001"


def test_prevalences_match_table(table: pd.DataFrame) -> None:
    for cls in ("benign", "malignant"):
        sub = table[table.label == cls]
        for name, prev in PREVALENCE.items():
            p = getattr(prev, cls)
            got = sub[f"feature_{name}"].mean()
            assert abs(got - p) <= _tol(p, len(sub)), f"{name} {cls}: {got:.3f} vs table {p:.3f}"


def test_paper_numbers(table: pd.DataFrame) -> None:
    b = table[table.label == "benign"]
    m = table[table.label == "malignant"]
    assert m.feature_homogeneous_marrow.sum() == 0  # paper: 0% of malignant
    assert m.feature_dark_lines_bands.sum() == 0  # paper: only in benign
    assert abs(m.feature_diffuse_signal_change.mean() - 0.88) < _tol(0.88, len(m))
    assert abs(b.feature_diffuse_signal_change.mean() - 31 / 140) < _tol(0.22, len(b))


def test_features_mutually_consistent(table: pd.DataFrame) -> None:
    t = table
    homog = t.feature_homogeneous_marrow == 1
    # homogeneous marrow = no edema or infiltration
    for c in ("diffuse_signal_change", "band_pattern_edema", "fluid_sign", "intravertebral_mass"):
        assert (t.loc[homog, f"feature_{c}"] == 0).all(), c
    assert not ((t.feature_diffuse_signal_change == 1) & (t.feature_band_pattern_edema == 1)).any()
    # fracture shape follows the two shape features
    assert (t.loc[t.feature_non_wedged_collapse == 0, "fracture_shape"] == "wedge").all()
    nw = t[t.feature_non_wedged_collapse == 1]
    assert set(nw.loc[nw.feature_posterior_height_preserved == 1, "fracture_shape"]) == {"concave"}
    assert set(nw.loc[nw.feature_posterior_height_preserved == 0, "fracture_shape"]) == {"crush"}


def test_reader_operating_points(table: pd.DataFrame) -> None:
    mal = table.label == "malignant"
    for reader, (sens, spec) in READER_OPERATING_POINTS.items():
        calls = table[reader] == "malignant"
        got_sens = calls[mal].mean()
        got_spec = 1 - calls[~mal].mean()
        assert abs(got_sens - sens) <= _tol(sens, int(mal.sum())), f"{reader} sensitivity {got_sens:.3f}"
        assert abs(got_spec - spec) <= _tol(spec, int((~mal).sum())), f"{reader} specificity {got_spec:.3f}"


def test_junior_false_positives_follow_paper(table: pd.DataFrame) -> None:
    """The R1 resident's false positives: likelier with diffuse change and heterogeneous marrow."""
    b = table[table.label == "benign"]
    fp = b.reader_r1 == "malignant"
    homog = b.feature_homogeneous_marrow == 1
    diffuse = b.feature_diffuse_signal_change == 1
    assert fp[~homog].mean() > fp[homog].mean() + 0.25  # paper: 48/92 vs 6/48
    assert fp[diffuse].mean() > fp[~diffuse].mean() + 0.2  # paper: 20/31 vs 34/109
    assert abs(fp[homog].mean() - R1_FALSE_POSITIVE_BY_PATTERN["homogeneous"]) < _tol(0.125, int(homog.sum()))
    # share of homogeneous marrow among false positives vs true negatives (paper: 11% vs 49%)
    assert homog[fp].mean() < 0.2 and homog[~fp].mean() > 0.4


def test_same_seed_same_table_and_prefix_stable() -> None:
    a = sample_study_table(50, 20, seed=7)
    b = sample_study_table(50, 20, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(sample_study_table(50, 20, seed=8))


@pytest.mark.parametrize(
    "args", [(0, 0, 0, "medium"), (10, 11, 0, "medium"), (10, -1, 0, "medium"), (10, 2, 0, "extreme")]
)
def test_bad_arguments(args: tuple[int, int, int, str]) -> None:
    with pytest.raises(SpinedxError):
        sample_study_table(*args)
