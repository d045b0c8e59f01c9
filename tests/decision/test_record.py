"""The decision of one case (spinedx.decision.record.decide) and the artefacts it rests on (decision.artefacts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spinedx.decision import DecisionArtefacts, decide, load_artefacts
from spinedx.decision.domain import DomainReference, SpreadReference
from spinedx.errors import SpinedxError
from spinedx.interop.content import decision_of

TRAINED = {"synthetic": True, "n_patients": 190, "prevalence": 50 / 190, "origin": "synthetic cohort"}


class _Platt:
    """p_cal = sigmoid(a logit(p) + b): the documented calibration.json meaning."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b

    def apply(self, p: np.ndarray) -> np.ndarray:
        q = np.clip(p, 1e-12, 1 - 1e-12)
        return 1 / (1 + np.exp(-(self.a * np.log(q / (1 - q)) + self.b)))


class _Conformal:
    alpha = 0.1

    def __init__(self, q_benign: float, q_malignant: float) -> None:
        self.q = {"benign": q_benign, "malignant": q_malignant}

    def predict_set(self, p: np.ndarray) -> list[tuple[str, ...]]:
        return [tuple(c for c, pc in (("benign", 1 - v), ("malignant", v)) if 1 - pc <= self.q[c]) for v in p]


def _domain(threshold: float = 3.0) -> DomainReference:
    n = 4
    return DomainReference(np.zeros(n), np.ones(n), np.zeros(n), np.eye(n), threshold, 0.99, 100)


def _full(**kw: object) -> DecisionArtefacts:
    base: dict[str, object] = {"calibrator": _Platt(1.0, 0.0), "conformal": _Conformal(0.6, 0.6),
                               "domain": _domain(), "spread": SpreadReference(0.2, 0.95, 50, 0.05),
                               "trained_on": TRAINED}
    base.update(kw)
    return DecisionArtefacts(**base)  # type: ignore[arg-type]


def test_confident_cases_are_called_and_ambiguous_or_empty_sets_refer() -> None:
    near = np.zeros(4)
    d = decide(np.array([0.9, 0.92, 0.88]), _full(), threshold=0.5, features=near)
    assert (d.decision, d.refer_reasons, d.conformal_set) == ("malignant", (), ("malignant",))
    assert d.source == "checks" and d.missing == () and d.note is None
    d = decide(np.array([0.1, 0.08]), _full(), threshold=0.5, features=near)
    assert (d.decision, d.conformal_set) == ("benign", ("benign",))
    # 0.5: 1 - p(c) = 0.5 <= 0.6 for both labels -> both plausible
    d = decide(np.array([0.5, 0.5]), _full(), threshold=0.5, features=near)
    assert (d.decision, d.refer_reasons, d.conformal_set) == ("refer", ("conformal_ambiguous",),
                                                              ("benign", "malignant"))
    # thresholds so tight that neither label is kept
    d = decide(np.array([0.5, 0.5]), _full(conformal=_Conformal(0.3, 0.3)), threshold=0.5, features=near)
    assert (d.decision, d.refer_reasons, d.conformal_set) == ("refer", ("conformal_empty",), ())


def test_outside_the_training_data_refers_whatever_the_probability() -> None:
    far = np.array([5.0, 0, 0, 0])  # Mahalanobis distance 5 > 3
    d = decide(np.array([0.99, 0.99]), _full(), threshold=0.5, features=far)
    assert d.decision == "refer" and d.refer_reasons == ("outside_training_data",)
    assert d.checks["domain_distance"] == pytest.approx(5.0) and d.checks["domain_threshold"] == 3.0
    assert d.conformal_set == ("malignant",)  # the set is still reported


def test_models_disagree_beyond_their_training_spread() -> None:
    d = decide(np.array([0.05, 0.95, 0.5]), _full(conformal=_Conformal(0.9, 0.9)), threshold=0.5,
               features=np.zeros(4))
    assert d.refer_reasons[0] == "models_disagree"
    assert d.checks["spread"] == pytest.approx((0.9 + 0.45 + 0.45) / 3)
    # one fold model (predict --fold K) has no spread to disagree with
    d = decide(np.array([0.95]), _full(), threshold=0.5, features=np.zeros(4))
    assert d.decision == "malignant"


def test_the_calibrated_probability_is_stated_beside_the_uncalibrated() -> None:
    d = decide(np.array([0.7, 0.7]), _full(calibrator=_Platt(1.0, -2.0)), threshold=0.5, features=np.zeros(4))
    logit = np.log(0.7 / 0.3)
    assert d.probability_uncalibrated == pytest.approx(0.7)
    assert d.probability == pytest.approx(1 / (1 + np.exp(-(logit - 2.0))))
    rec = d.to_record()
    assert rec["probability"] == d.probability and rec["probability_uncalibrated"] == pytest.approx(0.7)


def test_without_artefacts_the_decision_is_the_probability_alone_and_says_so() -> None:
    bare = DecisionArtefacts(trained_on=TRAINED, missing=("calibration.json", "conformal.json", "domain.json"),
                             where="run")
    d = decide(np.array([0.6, 0.7]), bare, threshold=0.5, features=np.zeros(4))
    assert (d.decision, d.source, d.conformal_set, d.alpha) == ("malignant", "probability_alone", None, None)
    assert d.probability == d.probability_uncalibrated == pytest.approx(0.65)
    assert "probability alone" in (d.note or "") and "domain.json" in (d.note or "")
    warning = bare.warning() or ""
    assert warning.startswith("run: no calibration.json, conformal.json, domain.json")
    assert "probability alone" in warning


def test_prediction_json_fields_are_what_the_sr_reads() -> None:
    """The record's fields go through interop.content.decision_of (the SR's one reader) unchanged."""
    d = decide(np.array([0.99, 0.99]), _full(), threshold=0.5, features=np.array([9.0, 0, 0, 0]))
    doc = json.loads(json.dumps({**d.to_record(), "threshold": 0.5, "call": "malignant", "model": {}}))
    read = decision_of(doc)
    assert (read.decision, read.refer_reasons, read.synthetic) == ("refer", ("outside_training_data",), True)
    assert read.probability == pytest.approx(d.probability) and read.conformal_set == ("malignant",)
    assert read.statement() == "spinedx: INDETERMINATE, refer (outside the training data)"
    assert read.provenance().startswith("trained on a synthetic cohort")


def _write(folder: Path, name: str, doc: dict) -> None:
    (folder / name).write_text(json.dumps({"format": 1, **doc}))


def test_load_artefacts_reads_the_documented_formats(tmp_path: Path) -> None:
    class Rec:
        trained_on = TRAINED

    _write(tmp_path, "calibration.json", {"method": "platt", "params": {"a": 2.0, "b": 0.5}})
    _write(tmp_path, "conformal.json", {"alpha": 0.1, "thresholds": {"benign": 0.4, "malignant": 0.7}})
    a = load_artefacts(tmp_path, Rec())
    assert a.missing == ("domain.json",) and a.conformal is not None and a.calibrator is not None
    logit = np.log(0.6 / 0.4)
    assert a.calibrator.apply(np.array([0.6]))[0] == pytest.approx(1 / (1 + np.exp(-(2 * logit + 0.5))))
    # malignant kept when 1 - p <= 0.7; benign when p <= 0.4
    assert a.conformal.predict_set(np.array([0.35, 0.5, 0.2])) == [("benign", "malignant"), ("malignant",),
                                                                    ("benign",)]
    _write(tmp_path, "conformal.json", {"alpha": 0.1, "thresholds": {"benign": 0.2, "malignant": 0.7}})
    assert load_artefacts(tmp_path, Rec()).conformal.predict_set(np.array([0.25])) == [()]
    _write(tmp_path, "calibration.json", {"method": "isotonic", "params": {"x": [0.0, 0.5, 1.0],
                                                                           "y": [0.1, 0.2, 0.9]}})
    assert load_artefacts(tmp_path, Rec()).calibrator.apply(np.array([0.75]))[0] == pytest.approx(0.55)


def test_a_damaged_decision_file_is_refused_naming_it(tmp_path: Path) -> None:
    class Rec:
        trained_on = TRAINED

    (tmp_path / "conformal.json").write_text("{not json")
    with pytest.raises(SpinedxError, match="conformal.json is not JSON") as exc:
        load_artefacts(tmp_path, Rec())
    assert "conformal.json" in exc.value.where
    _write(tmp_path, "conformal.json", {"alpha": 0.1, "thresholds": {"benign": 0.4}})
    with pytest.raises(SpinedxError, match="must name benign and malignant; rerun spinedx cv") as exc:
        load_artefacts(tmp_path, Rec())
    assert exc.value.where.endswith("conformal.json")  # the file, not just the folder
    (tmp_path / "conformal.json").write_text(json.dumps({"alpha": 0.1}))  # no format
    with pytest.raises(SpinedxError, match="format-1"):
        load_artefacts(tmp_path, Rec())
