"""The simulated aided session of the main job (spinedx.synth.aided): the simulated readers' own calls unaided, a
confidence that agrees with them, an aided read that moves toward the model by the stated reliance; refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinedx.errors import SpinedxError
from spinedx.readers.analysis import analyze_reads
from spinedx.synth.aided import RELIANCE, simulate_reader_study

from .studyhelpers import synthetic_cohort


def _probs(cohort: Path, seed: int = 1) -> dict[str, float]:
    df = pd.read_csv(cohort)
    rng = np.random.default_rng(seed)
    y = (df["label"] == "malignant").to_numpy()
    return dict(zip(df["patient_id"], np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.25, len(y)), 0.01, 0.99),
                    strict=True))


def test_unaided_reads_are_the_manifest_calls_and_aided_reads_move_toward_the_model(tmp_path: Path) -> None:
    cohort = synthetic_cohort(tmp_path / "c")
    probs = _probs(cohort)
    st = simulate_reader_study(cohort, probs)
    man = pd.read_csv(cohort).set_index("patient_id")
    r = st.reads
    assert list(dict.fromkeys(r["reader"])) == ["senior", "r4", "r1"] and len(r) == 30 * 3 * 2
    assert st.info["reliance"] == RELIANCE and st.info["simulated"] is True and st.left_out == []
    unaided = r[r["modality"] == "unaided"]
    for _, row in unaided.iterrows():
        assert row["call"] == man.loc[row["case_id"], f"reader_{row['reader']}"]
    # the score agrees with the call: malignant 51-100, benign 0-49
    assert ((r["call"] == "malignant") == (r["score"] >= 51)).all()
    assert ((r["call"] == "benign") == (r["score"] <= 49)).all() and r["score"].between(0, 100).all()
    # aided: never farther from the model's probability than unaided (a log-odds average; 1 point of rounding)
    both = unaided.merge(r[r["modality"] == "aided"], on=["case_id", "reader"], suffixes=("_u", "_a"))
    p100 = 100 * both["case_id"].map(probs)
    assert ((both["score_a"] - p100).abs() <= (both["score_u"] - p100).abs() + 1).all()
    assert (both["score_a"] != both["score_u"]).any()
    # deterministic: the same cohort and probabilities give the same reads (nothing random is drawn)
    pd.testing.assert_frame_equal(simulate_reader_study(cohort, probs).reads, r)
    # the bounds of the reliance: 0 ignores the model, 1 copies its call
    none = simulate_reader_study(cohort, probs, reliance={"senior": 0, "r4": 0, "r1": 0}).reads
    assert (none[none["modality"] == "aided"]["score"].to_numpy() == unaided["score"].to_numpy()).all()
    full = simulate_reader_study(cohort, probs, reliance={"senior": 1, "r4": 1, "r1": 1}).reads
    aided = full[full["modality"] == "aided"]
    assert ((aided["call"] == "malignant") == (aided["case_id"].map(probs) > 0.5)).all()
    # and the reader-study analysis runs on the tables as they are
    res = analyze_reads(st.reads, st.truth, model_scores=st.model)
    assert res.modalities == ["unaided", "aided"] and res.mrmc is not None and len(res.standalone) == 2


def test_patients_without_a_model_probability_are_left_out(tmp_path: Path) -> None:
    cohort = synthetic_cohort(tmp_path / "c", n=12, malignant=4)
    probs = _probs(cohort)
    gone = sorted(probs)[:2]
    st = simulate_reader_study(cohort, {k: v for k, v in probs.items() if k not in gone})
    assert st.left_out == gone and set(st.truth["case_id"]).isdisjoint(gone) and len(st.truth) == 10


def test_refusals(tmp_path: Path) -> None:
    cohort = synthetic_cohort(tmp_path / "c", n=12, malignant=4)
    probs = _probs(cohort)
    # an edited call: the scores would belong to other calls than the manifest's
    df = pd.read_csv(cohort)
    df.loc[0, "reader_r1"] = "benign" if df.loc[0, "reader_r1"] == "malignant" else "malignant"
    edited = tmp_path / "e"
    edited.mkdir()
    df.to_csv(edited / "cohort.csv", index=False)
    (edited / "synth.json").write_text((tmp_path / "c" / "synth.json").read_text())
    with pytest.raises(SpinedxError, match=r"patient SYN0001: reader_r1 is \w+ in the manifest but \w+ from the "
                                           "cohort's seed; the manifest was edited"):
        simulate_reader_study(edited / "cohort.csv", probs)
    # no synth.json beside the manifest
    (edited / "synth.json").unlink()
    with pytest.raises(SpinedxError, match="no synth.json beside the manifest"):
        simulate_reader_study(edited / "cohort.csv", probs)
    # a real cohort has no simulated readers
    real = tmp_path / "r"
    real.mkdir()
    pd.read_csv(cohort).drop(columns=["synthetic"]).to_csv(real / "cohort.csv", index=False)
    with pytest.raises(SpinedxError, match="not a synthetic cohort"):
        simulate_reader_study(real / "cohort.csv", probs)
    with pytest.raises(SpinedxError, match="reliance 1.5 must be a number between 0 and 1"):
        simulate_reader_study(cohort, probs, reliance={"senior": 0.1, "r4": 0.2, "r1": 1.5})
    with pytest.raises(SpinedxError, match="not in the cohort: P9"):
        simulate_reader_study(cohort, {**probs, "P9": 0.5})
