"""Truth of the synthetic cohort: prevalences, consistency and reader operating points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS
from spinedx.synth import sample_study_table
from spinedx.synth.prevalence import (
    LESION_SIGNAL,
    MARROW_PATTERNS,
    PREVALENCE,
    R1_FALSE_POSITIVE_BY_PATTERN,
    READER_OPERATING_POINTS,
)
from spinedx.synth.readers import READER_MODELS, calibrate, calibration_sample, ideal_score, reader_calls
from spinedx.synth.study import sample_latents

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


# --- the causal chain: label -> visible latents -> readers ---------------------------------------------------


@pytest.fixture(scope="module")
def big() -> dict[str, np.ndarray]:
    """A large latent sample from a generator that is neither a cohort nor the calibration sample."""
    labels = np.r_[np.zeros(60_000, np.int64), np.ones(60_000, np.int64)]
    return sample_latents(np.random.default_rng([4321, 7]), labels)


def test_operating_points_hold_on_a_large_sample(big: dict[str, np.ndarray]) -> None:
    """Calibrated on another sample: each reader's sensitivity and specificity within 4 binomial SE of the paper."""
    calls, _ = reader_calls(big)
    y = big["label"] == 1
    for reader, (sens, spec) in READER_OPERATING_POINTS.items():
        got_sens, got_spec = calls[reader][y].mean(), 1 - calls[reader][~y].mean()
        assert abs(got_sens - sens) <= 4 * math.sqrt(sens * (1 - sens) / y.sum()), (reader, got_sens)
        assert abs(got_spec - spec) <= 4 * math.sqrt(spec * (1 - spec) / (~y).sum()), (reader, got_spec)


def test_r1_error_structure_on_a_large_sample(big: dict[str, np.ndarray]) -> None:
    """R1's false positives per benign marrow pattern and misses without diffuse change (paper's error analysis)."""
    calls, _ = reader_calls(big)
    r1 = calls["reader_r1"]
    y = big["label"] == 1
    for k, pattern in enumerate(MARROW_PATTERNS):
        sel = ~y & (big["pattern"] == k)
        assert abs(r1[sel].mean() - R1_FALSE_POSITIVE_BY_PATTERN[pattern]) < 0.02, pattern
    not_diffuse = y & (big["feature_diffuse_signal_change"] == 0)
    assert abs(r1[not_diffuse].mean() - 0.5) < 0.04  # R1 misses half of them
    # the experienced readers' rare false positives are likelier with diffuse change
    for reader in ("reader_senior", "reader_r4"):
        fp = calls[reader][~y]
        diffuse = big["feature_diffuse_signal_change"][~y] == 1
        assert fp[diffuse].mean() > 2 * fp[~diffuse].mean(), reader


def test_readers_never_see_the_label(big: dict[str, np.ndarray]) -> None:
    """The calls are a function of the visible latents and the reader noise: flipping the label changes nothing."""
    flipped = {**big, "label": 1 - big["label"]}
    calls, ev = reader_calls(big)
    calls2, ev2 = reader_calls(flipped)
    for r in READER_COLUMNS:
        assert np.array_equal(calls[r], calls2[r]) and np.array_equal(ev[r], ev2[r])


def test_latent_classes_overlap(big: dict[str, np.ndarray]) -> None:
    """No latent is a copy of the label: the abnormal-marrow signal overlaps between the classes, and even the ideal
    observer of all visible latents errs."""
    from sklearn.metrics import roc_auc_score

    y = big["label"] == 1
    b, m = LESION_SIGNAL["benign"], LESION_SIGNAL["malignant"]
    for ch, (mb, mm) in (("signal_t1", (b.t1_mean, m.t1_mean)), ("signal_t2", (b.t2_mean, m.t2_mean))):
        auc = roc_auc_score(y, -big[ch])  # malignant is darker on both
        assert 0.6 < auc < 0.85, (ch, auc)
        assert abs(big[ch][y].mean() - mm) < 0.002 and abs(big[ch][~y].mean() - mb) < 0.002
    s, _ = ideal_score(big)
    assert 0.95 < roc_auc_score(y, s) < 0.999
    # the extent is drawn given the pattern only
    for k in range(1, len(MARROW_PATTERNS)):
        sel = big["pattern"] == k
        if (sel & y).sum() > 500 and (sel & ~y).sum() > 500:
            gap = abs(big["extent"][sel & y].mean() - big["extent"][sel & ~y].mean())
            assert gap < 0.05 * big["extent"][sel].mean()


def test_calibration_reproduces_the_frozen_models() -> None:
    """READER_MODELS are what calibrate() gives (on a smaller sample here: close, not equal)."""
    fresh = calibrate(n_per_class=40_000)
    for reader, model in READER_MODELS.items():
        assert fresh[reader]["gamma"] == pytest.approx(model["gamma"], rel=0.15, abs=0.01), reader
        if "bias" in model:
            assert fresh[reader]["bias"] == pytest.approx(model["bias"], abs=0.15), reader
        else:
            for p, v in model["pattern_bias"].items():
                assert fresh[reader]["pattern_bias"][p] == pytest.approx(v, abs=0.1), (reader, p)
    sample = calibration_sample(1000)
    assert (sample["label"] == 0).sum() == 1000 == (sample["label"] == 1).sum()


def test_image_depends_on_the_latents_not_the_label() -> None:
    """The phantom renders the latents: the same latents under the other label give the same pixels."""
    from spinedx.synth.phantom import evaluate, sample_anatomy
    from spinedx.synth.study import sample_patient

    for index, label in ((3, 1), (4, 0)):
        truth = sample_patient(11, index, label)
        assert truth["pattern"] != "homogeneous" or label == 0
        flipped = {**truth, "label": 1 - label}
        a, b = sample_anatomy(11, index, truth, "medium"), sample_anatomy(11, index, flipped, "medium")
        assert "label" not in a.lesion_params
        pts = (a.lesion_centre() + np.random.default_rng(0).uniform(-40, 40, (20_000, 3))).astype(np.float32)
        for channel in (0, 1):
            ra, rb = evaluate(a, pts, channel), evaluate(b, pts, channel)
            assert np.array_equal(ra.signal, rb.signal) and np.array_equal(ra.lesion, rb.lesion)
        # and the latents do reach the image: another abnormal-marrow signal changes the lesion's pixels
        other = sample_anatomy(11, index, {**truth, "signal": (0.1, 0.95)}, "medium")
        ro = evaluate(other, pts, 0)
        changed = ro.signal != evaluate(a, pts, 0).signal
        if truth["pattern"] != "homogeneous":
            assert changed.any() and not changed[~ro.lesion & ~ro.body].any()
