"""Outside the training data and models that disagree (spinedx.decision.domain), down to the real DzZ study.

Issue 20: the main job's run, trained on the synthetic cohort, answered p(malignant) 0.590 -> malignant, in red, for
the real normal lumbar DzZ study. A run trained on a synthetic cohort must refer those vertebral bodies as outside
its training data, and refer at most 1 in 8 synthetic patients of a seed it never saw.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from runhelpers import write_run

from spinedx.decision import decide, load_artefacts
from spinedx.decision.domain import (
    DomainReference,
    SpreadReference,
    case_features,
    fit_domain,
    fit_run_domain,
    fit_spread,
    pairwise_spread,
)
from spinedx.runfolder import RunFolder

# ------------------------------------------------------------------------------------------------
# the statistics


def test_cross_fitted_threshold_and_distances() -> None:
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.5, 3.0, 6))
    train = rng.multivariate_normal(np.zeros(6), cov, size=300)
    fold = np.arange(300) % 10
    ref = fit_domain(train, fold, quantile=0.99)
    # the threshold is the 0.99 quantile of each patient's distance to the reference of the other folds
    crossed = np.empty(300)
    for k in range(10):
        other = fit_domain(train[fold != k], np.arange((fold != k).sum()) % 2, quantile=0.99)
        crossed[fold == k] = other.distance(train[fold == k])
    assert ref.threshold == pytest.approx(np.quantile(crossed, 0.99))
    # a patient measured by a reference that saw it looks closer than a new case: cross-fitting avoids that bias
    assert np.quantile(ref.distance(train), 0.99) < ref.threshold
    new = rng.multivariate_normal(np.zeros(6), cov, size=2000)
    assert np.mean(ref.distance(new) > ref.threshold) < 0.03  # ~1% by construction
    shifted = new[:200] + 4 * np.sqrt(np.diag(cov))
    assert np.mean(ref.distance(shifted) > ref.threshold) > 0.99
    again = DomainReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    np.testing.assert_allclose(again.distance(new[:20]), ref.distance(new[:20]), rtol=1e-12)
    with pytest.raises(ValueError, match="features"):
        ref.distance(np.zeros(5))
    with pytest.raises(ValueError, match="domain method"):
        DomainReference.from_dict({**ref.to_dict(), "method": "knn"})


def test_spread_statistic_and_reference() -> None:
    assert pairwise_spread(np.array([0.2])) == 0.0
    assert pairwise_spread(np.array([0.1, 0.5, 0.9])) == pytest.approx((0.4 + 0.8 + 0.4) / 3)
    assert fit_spread({f"P{i}": [0.5, 0.6] for i in range(9)}) is None  # too few patients: no honest reference
    unseen = {f"P{i}": [0.5, 0.5 + i / 100] for i in range(20)}
    unseen["single"] = [0.1]  # one unseen model: no pair, not counted
    ref = fit_spread(unseen, quantile=0.95)
    assert ref is not None and ref.n_patients == 20
    assert ref.threshold == pytest.approx(np.quantile(np.arange(20) / 100, 0.95))
    assert SpreadReference.from_dict(ref.to_dict()) == ref


@pytest.mark.slow
def test_fit_run_domain_writes_domain_json_with_an_honest_spread(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", n_patients=30, n_folds=3, optimistic=False, synthetic=True)
    rf = RunFolder(run)
    splits = json.loads(rf.splits_path().read_text())
    for s in splits["splits"]:  # six inner-validation patients per fold (held out of that fold model's training)
        others = sorted(p for p in splits["fold_of"] if splits["fold_of"][p] != s["fold"])
        s["inner_val"] = others[6 * s["fold"]:6 * s["fold"] + 6]
    rf.splits_path().write_text(json.dumps(splits))
    doc = fit_run_domain(run)
    assert rf.read_domain() == doc
    assert doc["domain"]["n_patients"] == 30 and doc["domain"]["quantile"] == 0.99
    assert doc["spread"]["n_patients"] >= 10 and doc["spread_absent_reason"] is None
    art = load_artefacts(run, rf.read_record())
    assert art.domain is not None and art.spread is not None
    assert art.missing == ("calibration.json", "conformal.json")


def test_an_optimistic_run_has_no_spread_reference_and_says_why(tmp_path: Path) -> None:
    """early_stop_on outer trains on the inner patients: no fold model left them unseen."""
    run = write_run(tmp_path / "r", n_patients=12, n_folds=2, optimistic=True)
    doc = fit_run_domain(run)
    assert doc["spread"] is None and "inner patients were trained on" in doc["spread_absent_reason"]
    art = load_artefacts(run, RunFolder(run).read_record())
    assert any(m.startswith("spread reference for models_disagree (the run's early stopping") for m in art.missing)


# ------------------------------------------------------------------------------------------------
# a run trained on a synthetic cohort, the real DzZ study and a seed the run never saw

#: cohort seeds of this test (development seeds, used for nothing else)
TRAIN_SEED, UNSEEN_SEED = 21, 22


@pytest.fixture(scope="module")
def synthetic_run(module_tmp: Path) -> Iterator[Path]:
    """``spinedx cv`` (2 folds, mobilenet_v3_small, 1 epoch) on 16 synthetic patients; finish_run fits domain.json."""
    from spinedx.evaluation.cv import CVConfig, run_cv
    from spinedx.preprocess import ExtractConfig, extract_cohort
    from spinedx.synth import generate_cohort

    generate_cohort(module_tmp / "cohort", n_patients=16, n_malignant=6, seed=TRAIN_SEED, progress=False)
    extract_cohort(module_tmp / "cohort" / "cohort.csv", module_tmp / "patches", ExtractConfig(), progress=False)
    cfg = CVConfig.from_profile("quick", folds=2, backbone="mobilenet_v3_small", pretrained="none", epochs=1,
                                patience=0, views_benign=1, views_malignant=1, batch_size=16, threads=1,
                                compile="off")
    run_cv(module_tmp / "patches", module_tmp / "run", cfg, progress=False)
    yield module_tmp / "run"
    shutil.rmtree(module_tmp / "cohort", ignore_errors=True)


def _dzz_bodies(real_data: Path, out: Path) -> tuple[Path, Path, list[tuple[int, tuple[int, int, int, int]]]]:
    """The DzZ T1/T2 pair as NIfTI and each of the 9 vertebral bodies of the T2 masks: (widest sagittal slice,
    box). Arrays: axis 0 superior->inferior, 1 anterior->posterior, 2 = 50 sagittal 1-mm planes."""
    import nibabel as nib
    import scipy.io

    folder = real_data / "fastcleverseg_VB1_DzZ_T1_T2"
    m1, m2 = scipy.io.loadmat(folder / "10.mat"), scipy.io.loadmat(folder / "11.mat")
    affine = np.array([[0.0, 0.0, 1.0, -20.0], [-1.0, 0.0, 0.0, 60.0], [0.0, -1.0, 0.0, 60.0], [0, 0, 0, 1.0]])
    out.mkdir(parents=True, exist_ok=True)
    for name, m in (("t1", m1), ("t2", m2)):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(m["I"].transpose(1, 0, 2)), affine), out / f"{name}.nii.gz")
    bodies = []
    for inst in range(1, 10):  # instance ids, not levels (PROVENANCE.md)
        vb = m2["GT"] == inst
        k = int(np.argmax(vb.sum(axis=(0, 1))))
        si, ap = np.nonzero(vb[:, :, k])
        bodies.append((k, (int(ap.min()), int(si.min()), int(ap.max()) + 1, int(si.max()) + 1)))
    return out / "t1.nii.gz", out / "t2.nii.gz", bodies


@pytest.mark.slow
def test_the_real_dzz_study_is_outside_a_synthetic_training_set(synthetic_run: Path, real_data: Path,
                                                                 tmp_path: Path) -> None:
    from spinedx.io import read_image
    from spinedx.predict import extract_config_for, predict_case
    from spinedx.preprocess import extract_patches

    rf = RunFolder(synthetic_run)
    record = rf.read_record()
    assert record.trained_on["synthetic"] is True and record.trained_on["n_patients"] == 16
    assert record.trained_on["prevalence"] == pytest.approx(6 / 16)
    art = load_artefacts(synthetic_run, record)
    assert art.domain is not None and art.domain.n_patients == 16
    t1_path, t2_path, bodies = _dzz_bodies(real_data, tmp_path / "dzz")
    cfg, _ = extract_config_for(record)
    t1, t2 = read_image(t1_path), read_image(t2_path)
    outside = 0
    for k, box in bodies:
        x = extract_patches(t1, t2, [k - 1, k, k + 1], box, cfg).x
        d = decide(np.array([0.59, 0.005, 0.87]), art, threshold=0.5, features=case_features(x))
        outside += d.refer_reasons[:1] == ("outside_training_data",)
        assert d.decision == "refer" or d.checks["domain_distance"] <= d.checks["domain_threshold"]
    assert outside >= 8, outside
    # end to end: spinedx predict's prediction.json states the refer, the reason and the synthetic training
    k, box = bodies[4]
    res = predict_case(synthetic_run, t1_path, t2_path, [k - 1, k, k + 1], box, tmp_path / "pred", explain=False,
                       patient_id="DzZ")
    doc = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    assert doc["decision"] == "refer" and "outside_training_data" in doc["refer_reasons"]
    assert doc["trained_on"]["synthetic"] is True and res.decision.decision == "refer"
    assert doc["probability_uncalibrated"] == pytest.approx(doc["patient_probability"])


@pytest.mark.slow
def test_a_synthetic_seed_the_run_never_saw_is_inside(synthetic_run: Path, module_tmp: Path) -> None:
    from spinedx.preprocess import ExtractConfig, extract_cohort
    from spinedx.runfolder import load_patches
    from spinedx.synth import generate_cohort

    generate_cohort(module_tmp / "unseen", n_patients=8, n_malignant=3, seed=UNSEEN_SEED, progress=False)
    extract_cohort(module_tmp / "unseen" / "cohort.csv", module_tmp / "unseen_patches", ExtractConfig(),
                   progress=False)
    patches = load_patches(module_tmp / "unseen_patches")
    art = load_artefacts(synthetic_run, RunFolder(synthetic_run).read_record())
    pid = patches.patient_id.astype(str)
    called_outside = 0
    for p in sorted(set(pid.tolist())):
        d = decide(np.array([0.3, 0.4]), art, threshold=0.5, features=case_features(patches.x[pid == p]))
        called_outside += "outside_training_data" in d.refer_reasons
    assert called_outside <= 1, called_outside
