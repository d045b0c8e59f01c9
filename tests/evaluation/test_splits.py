"""Cohort sizes the folds and their inner validation splits need (issue 18): refused up front, in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.evaluation.splits import check_split_sizes, make_splits, minimum_per_label


def _labels(benign: int, malignant: int) -> dict[str, int]:
    return {f"P{i:03d}": int(i >= benign) for i in range(benign + malignant)}


def test_five_patients_two_folds_refused_with_the_minimum() -> None:
    """The issue's case: 5 patients (2 malignant), 2 folds used to end in scikit-learn's ValueError (test_size=2
    should be ... smaller than the number of samples)."""
    with pytest.raises(SpinedxError) as exc:
        make_splits(_labels(3, 2), folds=2)
    msg = exc.value.one_line()
    assert "5 patients (2 malignant, 3 benign) cannot make 2 stratified folds with an inner validation split" in msg
    assert "at least 4 patients of each class (8 in all)" in msg and "fewer --folds" not in msg
    with pytest.raises(SpinedxError, match="use more patients or fewer --folds"):
        check_split_sizes(_labels(2, 30), folds=3)
    # the outer condition keeps its wording
    with pytest.raises(SpinedxError, match="at least 10 patients of each class"):
        make_splits(_labels(27, 3), folds=10)


def test_minimum_per_label() -> None:
    assert [minimum_per_label(k) for k in (2, 3, 4, 5, 10)] == [4, 3, 4, 5, 10]
    check_split_sizes(_labels(4, 4), folds=2)  # the minimum itself is accepted
    with pytest.raises(SpinedxError):
        check_split_sizes(_labels(4, 3), folds=2)


@pytest.mark.parametrize("folds", [2, 3, 4, 5])
def test_check_accepts_exactly_the_cohorts_whose_folds_train_on_both_labels(folds: int) -> None:
    """Every small cohort: accepted ones make their splits, and every fold's training patients (outside both the
    validation fold and the inner split) hold both labels; refused ones have fewer than the minimum of a label."""
    need = minimum_per_label(folds)
    for benign in range(1, 12):
        for malignant in range(1, 12):
            labels = _labels(benign, malignant)
            if min(benign, malignant) < need:
                with pytest.raises(SpinedxError, match="cannot make"):
                    make_splits(labels, folds=folds)
                continue
            for seed in (0, 1, 2):
                s = make_splits(labels, folds=folds, seed=seed)
                for f in s["splits"]:
                    train = set(labels) - set(f["val"]) - set(f["inner_val"])
                    assert {labels[p] for p in train} == {0, 1}
                    assert {labels[p] for p in f["val"]} == {0, 1}


def test_accepted_cohorts_keep_their_splits() -> None:
    """The check changes no accepted cohort's splits (splits.json of earlier runs stay valid): pinned on one
    (the values the code before the check gave)."""
    s = make_splits(_labels(6, 4), folds=2, seed=3)
    assert [f["val"] for f in s["splits"]] == [["P003", "P004", "P005", "P008", "P009"],
                                               ["P000", "P001", "P002", "P006", "P007"]]  # as before the check
    assert [f["inner_val"] for f in s["splits"]] == [["P000", "P006"], ["P003", "P009"]]


def test_baselines_choose_c_on_the_smallest_accepted_cohort() -> None:
    """The baselines' inner choice of C (StratifiedGroupKFold inside each training fold) works at the minimum."""
    from spinedx.baselines.fit import cross_validate

    rng = np.random.default_rng(0)
    for folds in (2, 3):
        need = minimum_per_label(folds)
        labels = _labels(need, need)
        s = make_splits(labels, folds=folds, seed=0)
        pid = np.array([p for p in labels for _ in range(1 + int(p[-1]) % 3)])  # 1-3 slices per patient
        y = np.array([labels[p] for p in pid])
        oof = cross_validate("radiomics", rng.normal(size=(len(pid), 4)) + y[:, None], y, pid, s["fold_of"])
        assert np.isfinite(oof.probability).all() and len(oof.chosen_c) == folds


def test_cv_refuses_a_too_small_cohort_before_writing_anything(tmp_path: Path) -> None:
    """`spinedx cv` on 5 patients with 2 folds: one error line, exit 2, and no run folder (nothing trained or
    written; it used to write config.yaml and end in a traceback)."""
    rng = np.random.default_rng(0)
    pid = np.repeat([f"P{i}" for i in range(5)], 3)
    label = np.array([int(p[-1]) < 2 for p in pid], dtype=np.int64)
    (tmp_path / "p").mkdir()
    np.savez(tmp_path / "p" / "patches.npz", x=rng.normal(size=(15, 6, 8, 8)).astype(np.float32), patient_id=pid,
             slice_index=np.tile(np.arange(3, dtype=np.int64), 5), label=label)
    res = CliRunner().invoke(app, ["cv", str(tmp_path / "p"), "--out", str(tmp_path / "run"), "--folds", "2",
                                   "--profile", "quick", "--backbone", "resnet18", "--pretrained", "none"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "patches.npz" in lines[0]
    assert "cannot make 2 stratified folds" in lines[0] and "at least 4 patients of each class" in lines[0]
    assert not (tmp_path / "run").exists()
