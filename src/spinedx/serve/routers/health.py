"""``GET /api/health``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.serve.deps import get_state
from spinedx.serve.state import AppState

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health")
def health(state: AppState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Server status, version, whether a model is loaded and what it was trained on, whether anything shown is
    synthetic (``synthetic``: the served cohort or the model's training cohort; each also on its own), the DICOMweb
    server browsed (its URL without user-info); the form's features and reader columns."""
    from spinedx.common import redact_url
    from spinedx.features import FEATURES

    cohort = state.store.cohort
    model = state.predictor.describe() if state.predictor is not None else None
    model_synthetic = bool(model and model["synthetic"])
    return {"status": "ok", "version": __version__, "research_use_only": RESEARCH_USE_ONLY,
            # a real study read with a model trained on a synthetic phantom is still a synthetic answer
            "synthetic": bool(state.store.synthetic) or model_synthetic,
            "cohort_synthetic": bool(state.store.synthetic), "model_synthetic": model_synthetic,
            "trained_on": model["trained_on"] if model else None,
            "cases": len(state.store.cohort.cases), "model": model,
            "register": bool(state.extract_config.register),
            "dicomweb": redact_url(state.store.dicomweb) if state.store.dicomweb else None,
            "features": [{"name": k, "description": v} for k, v in FEATURES.items()],
            "readers": list(cohort.reader_names) or ["reader_1", "reader_2", "reader_3"]}
