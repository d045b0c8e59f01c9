"""The one mapping from ``prediction.json`` to what the DICOM results state (``content.decision_of``): issue 20's
decision fields when present, today's ``call``/``patient_probability`` otherwise; bad values refused by name."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from spinedx.errors import SpinedxError
from spinedx.interop.content import Decision, content_from_prediction, decision_of


def _old_record(**extra: object) -> dict:
    rec = {"patient_probability": 0.31, "call": "benign", "threshold": 0.5, "model": {"synthetic": True}}
    rec.update(extra)
    return rec


def test_a_prediction_before_the_decision_fields_states_its_call() -> None:
    d = decision_of(_old_record())
    assert (d.decision, d.probability, d.threshold, d.source) == ("benign", 0.31, 0.5, "call")
    assert d.probability_uncalibrated is None and d.refer_reasons == () and d.synthetic is True
    assert d.statement() == "spinedx: BENIGN"
    assert d.provenance() == "trained on a synthetic cohort; research use only"
    assert decision_of(_old_record(model={"synthetic": False})).provenance() == "research use only"


def test_the_decision_fields_win_over_the_call() -> None:
    rec = _old_record(decision="refer", refer_reasons=["conformal_ambiguous", "outside_training_data"],
                      probability=0.47, probability_uncalibrated=0.31, conformal_set=["benign", "malignant"],
                      alpha=0.1, trained_on={"cohort": "synthetic", "patients": 190, "prevalence": 0.263})
    d = decision_of(rec)
    assert (d.decision, d.probability, d.probability_uncalibrated, d.source) == ("refer", 0.47, 0.31, "decision")
    assert d.conformal_set == ("benign", "malignant") and d.alpha == 0.1 and d.synthetic is True
    assert d.trained_on == {"cohort": "synthetic", "patients": 190, "prevalence": 0.263}
    assert d.statement() == "spinedx: INDETERMINATE, refer (both calls plausible; outside the training data)"
    # a real cohort, said either way
    assert decision_of({**rec, "trained_on": {"synthetic": False}}).synthetic is False
    assert decision_of({**rec, "trained_on": "real"}).synthetic is False


@pytest.mark.parametrize("change,message", [
    ({"decision": "maybe"}, "decision 'maybe' is not one of"),
    ({"call": "refer"}, "decision 'refer' is not one of"),  # a call is never refer: a decision field would be
    ({"probability": 1.2}, "probability 1.2 is not a probability"),
    ({"patient_probability": float("nan")}, "probability nan is not a probability"),
    ({"probability_uncalibrated": "high"}, "probability_uncalibrated is not a number"),
    ({"decision": "benign", "refer_reasons": ["models_disagree"]}, "refer_reasons"),
    ({"call": None}, "decision None"),
])
def test_bad_decision_fields_are_refused(change: dict, message: str) -> None:
    with pytest.raises(SpinedxError, match=message) as e:
        decision_of(_old_record(**change))
    assert e.value.where == "prediction.json"


def test_content_from_a_prediction_uses_the_mapping() -> None:
    rec = _old_record(decision="malignant", probability=0.81, probability_uncalibrated=0.64,
                      inputs={"box": [1, 2, 30, 40]}, preprocessing={"extract_config": {"patch_size": 64,
                                                                                         "margin": 0.1}})
    rec["model"].update({"run_dir": "/nowhere", "folds": [0, 1], "backbone": "resnet18"})
    pred = SimpleNamespace(record=rec, probability=0.64, call="malignant", threshold=0.5, per_model=[0.6, 0.68],
                           slice_index=[3], slice_probability=np.array([[0.6], [0.68]]), heatmaps=None)
    content = content_from_prediction(pred, model_hash="cd" * 32)
    assert content.probability == 0.81 and content.decision.probability_uncalibrated == 0.64
    assert content.call == "malignant" and content.box == (1, 2, 30, 40)


def test_decision_checks_its_own_values() -> None:
    with pytest.raises(ValueError, match="refer_reasons given for a benign decision"):
        Decision("benign", 0.2, 0.5, refer_reasons=("models_disagree",))
    with pytest.raises(ValueError, match="not a probability"):
        Decision("malignant", 1.5, 0.5)
