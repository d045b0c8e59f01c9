"""``POST /api/cases/{case}/predict``: the run's fold ensemble on the case's saved annotation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from spinedx.serve.datastore import Conflict, InvalidInput
from spinedx.serve.deps import get_state, get_user
from spinedx.serve.routers.cases import prediction_view
from spinedx.serve.state import AppState

router = APIRouter(prefix="/api/cases", tags=["predict"])


@router.post("/{case}/predict")
def predict(
    case: str,
    explain: bool = Query(False, description="also compute the heatmap overlays (about 0.6 s more for ten "  # noqa: B008
                                             "ResNet50 fold models)"),
    state: AppState = Depends(get_state),  # noqa: B008
    user: str = Depends(get_user),  # noqa: B008
) -> dict[str, Any]:
    """Probability of malignancy (mean of the fold models), call at the run's threshold, per-fold and per-slice
    probabilities, computed like ``spinedx predict`` on the saved slices and box; with ``explain`` also the
    heatmap overlays (``POST .../explain`` is the same with ``explain``: what the page's Predict asks). Research use
    only."""
    return _predict(case, state, explain, user)


@router.post("/{case}/explain")
def explain(case: str, state: AppState = Depends(get_state),  # noqa: B008
            user: str = Depends(get_user)) -> dict[str, Any]:  # noqa: B008
    """The prediction again with heatmap overlays of every lesion slice on T1W and T2W (``spinedx predict``'s
    overlay PNGs, served under ``.../prediction/``), made by ``spinedx.explain.DEFAULT_METHOD`` and named in the
    answer's ``explanation``. Research use only."""
    return _predict(case, state, True, user)


def _predict(key: str, state: AppState, explain: bool, user: str) -> dict[str, Any]:
    from dataclasses import replace

    from spinedx.fsutil import atomic_dir

    patient_id = state.store.patient_of(key)
    if state.predictor is None:
        raise Conflict("no model loaded: start spinedx serve with --model RUN (a spinedx cv run folder)",
                       where=patient_id)
    case = state.store.case(patient_id)
    if not case.lesion_slices or not any(case.box):
        raise InvalidInput("save lesion slices and a box on T2 before predicting", where=patient_id)
    # 404 when missing or outside the served roots; a DICOMweb case's series are its local copies
    sources = {which: state.store.image_source(patient_id, which)[0] for which in ("t1", "t2")}
    case = replace(case, t1=sources["t1"], t2=sources["t2"])
    from spinedx.interop.publish import store_workstation_prediction

    with atomic_dir(state.store.prediction_dir(patient_id)) as tmp:
        res = state.predictor.predict(case, tmp, explain=explain)
        store_workstation_prediction(state, patient_id, tmp, res)  # supersedes the case's last SR; STOW-RS
    state.store.audit("explain" if explain else "predict", patient_id, user,
                      inputs={"lesion_slices": list(case.lesion_slices), "box": list(case.box)},
                      result={"probability": round(float(res.record["patient_probability"]), 4),
                              "call": res.record["call"]})
    return prediction_view(key, res.record)
