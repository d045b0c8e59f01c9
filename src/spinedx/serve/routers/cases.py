"""Cases: list, open, annotate (``PUT .../annotation`` with ``If-Match``), T2 -> T1 mapping.

Every URL names a case by its opaque key (``GET /api/cases`` lists them with their ``patient_id``), never by the
patient identifier (``spinedx.serve.datastore``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from spinedx.serve.datastore import InvalidInput
from spinedx.serve.deps import get_state, get_user, patient_of
from spinedx.serve.state import AppState
from spinedx.serve.validation import AnnotationBody


class AnnotationRoute(APIRoute):
    """A route whose JSON body FastAPI validates with a Pydantic model (:class:`AnnotationBody`), a body that fails
    answered like every other bad input: 404 for an unknown case first, then an unreadable ``If-Match``, then 422 with
    one line naming each field in the CLI's words (:func:`spinedx.serve.validation.body_problem`), not FastAPI's list
    of error objects."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                from spinedx.serve.validation import body_problem

                errors = [e for e in exc.errors() if tuple(e.get("loc") or ("",))[0] == "body"]
                if not errors:
                    raise
                key = patient_of(request, str(request.path_params.get("case", "")))  # 404 before validating
                parse_if_match(request.headers.getlist("if-match"), where=key)
                raise InvalidInput(body_problem(errors), where=key) from None

        return route


# every route of the router: only a request body's errors are turned into one line (the others have no body)
router = APIRouter(prefix="/api/cases", tags=["cases"], route_class=AnnotationRoute)


def _etag(version: str) -> str:
    return f'"{version}"'


# one element of an If-Match list: "*", an entity-tag (W/ allowed: our tags are strong, a client may still mark
# one weak) or, leniently, a bare version; empty elements are allowed by the list syntax (RFC 9110, 5.6.1)
_IF_MATCH_ITEM = re.compile(r'[ \t]*(?:(?P<star>\*)|(?:W/)?"(?P<tag>[^"]*)"|(?P<bare>[^ \t",]+))?[ \t]*(?:,|\Z)')


def parse_if_match(values: list[str], *, where: str) -> list[str] | None:
    """The versions an ``If-Match`` header accepts (RFC 9110, 13.1.1): ``["*"]`` for any, else every entity-tag of
    the list (several header lines are one list); None without the header.

    Raises:
        InvalidInput: a header that is not such a list (an open quote, an empty value).
    """
    if not values:
        return None
    text = ", ".join(values)
    tags: list[str] = []
    pos = 0
    while pos < len(text):
        m = _IF_MATCH_ITEM.match(text, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        tags += [m.group(name) for name in ("star", "tag", "bare") if m.group(name) is not None]
    if pos < len(text) or not tags:
        raise InvalidInput(f"[If-Match] cannot read {text!r}: send the ETag of the case as the server gave it "
                           '(e.g. If-Match: "<version>"), a list of them, or *', where=where)
    return tags


@router.get("")
def list_cases(state: AppState = Depends(get_state)) -> list[dict[str, Any]]:  # noqa: B008
    """Every case: ``case`` (the key every other URL takes), ``patient_id``, ``label``, ``annotated``,
    ``predicted`` (on the current annotation), ``images`` and, when they cannot be shown, ``problem`` (why: a
    series outside the served folders, missing, or not chosen)."""
    return state.store.summaries()


def prediction_view(key: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The API's prediction object from a ``prediction.json`` document: the decision contract (``decision``,
    ``refer_reasons``, calibrated ``probability``, ``probability_uncalibrated``, ``conformal_set``, ``alpha``,
    ``trained_on``) read by :func:`spinedx.interop.content.decision_of`, as the SR reads it (a prediction made before
    the decision existed gives its call, ``decision_source`` ``call``)."""
    from spinedx.interop.content import decision_of

    spread = doc["spread"]
    folds = doc["model"]["folds"]
    dec = decision_of(doc)
    return {
        "decision": dec.decision, "refer_reasons": list(dec.refer_reasons),
        "refer_reasons_text": dec.reasons_text if dec.decision == "refer" else None,
        "probability": dec.probability,
        "probability_uncalibrated": (dec.probability_uncalibrated if dec.probability_uncalibrated is not None
                                     else doc["patient_probability"]),
        "conformal_set": None if dec.conformal_set is None else list(dec.conformal_set), "alpha": dec.alpha,
        "trained_on": dec.trained_on, "synthetic_training": dec.synthetic,
        "decision_source": doc.get("decision_source", dec.source), "decision_note": doc.get("decision_note"),
        "call": doc["call"], "threshold": doc["threshold"],
        "fold_probabilities": [spread["per_fold"][str(k)] for k in folds], "folds": folds,
        "spread": {k: spread[k] for k in ("std", "min", "max", "calls_malignant", "n_models")},
        "slices": [{"slice_index": s["slice_index"], "probability": s["probability"],
                    "overlay": f"/api/cases/{key}/prediction/{s['overlay']}" if s.get("overlay") else None}
                   for s in doc["slices"]],
        "aggregation": doc["aggregation"], "research_use_only": doc["research_use_only"],
        "registration": {k: doc["registration"].get(k) for k in ("performed", "accepted", "reason")},
        "optimistic": bool(doc["model"].get("optimistic")),
        # images averaged per slice probability (1: the patch alone; a prediction.json from before TTA says nothing)
        "test_time_views": int((doc.get("test_time_augmentation") or {}).get("n_views", 1)),
        "inputs": {"lesion_slices": doc["inputs"]["lesion_slices"], "box": doc["inputs"]["box"]},
        # the method that made the overlays (spinedx.explain.explanation_record); None without overlays
        "explanation": doc.get("explanation"),
    }


@router.get("/{case}")
def get_case(case: str, response: Response, state: AppState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Both series' sizes, spacing, window presets, pixel encoding and orientation markers, the T2 -> T1 slice
    correspondence, the annotation. A case whose images cannot be shown gets 404 saying why."""
    from spinedx.serve.geometry import t1_slices_for_t2

    key = case
    patient_id = state.store.patient_of(key)
    case_rec = state.store.case(patient_id)
    ann, version = state.store.annotation(patient_id)
    t2 = state.volume(patient_id, "t2")
    t1 = state.volume(patient_id, "t1")
    response.headers["ETag"] = _etag(version)
    stored = state.store.stored_prediction(patient_id, case_rec)
    return {
        "case": key, "patient_id": patient_id, "version": version, "annotation": ann.to_dict(),
        "t2": t2.describe(), "t1": t1.describe(),
        "t1_slice_for_t2": t1_slices_for_t2(t1.image, t2.image),
        "prediction": prediction_view(key, stored) if stored is not None else None,
        "synthetic": state.store.synthetic,
    }


@router.put("/{case}/annotation")
def put_annotation(
    case: str,
    request: Request,
    response: Response,
    body: AnnotationBody,
    if_match: str | None = Header(None, description='"<version>", a list of them, or *'),  # noqa: ARG001
    state: AppState = Depends(get_state),  # noqa: B008
    user: str = Depends(get_user),  # noqa: B008
) -> dict[str, Any]:
    """Save the annotation (fields not given stay as they are; null clears one). ``If-Match: "<version>"`` makes
    the save conditional (RFC 9110: a list matches when it names the current version; ``*`` matches any): a stale
    version gets 409 and nothing is written. Invalid input gets 422 with the CLI's message. The audit log records
    who saved what."""
    from spinedx.serve.validation import check_against_t2

    # 404 before validating (a body that fails its schema: AnnotationRoute)
    patient_id = state.store.patient_of(case)
    # every If-Match line (the parameter above documents the header; a repeated header is one list)
    versions = parse_if_match(request.headers.getlist("if-match"), where=patient_id)
    changes = body.changes()
    if "lesion_slices" in changes or "box" in changes:
        ann, _ = state.store.annotation(patient_id)
        slices = changes.get("lesion_slices", ann.lesion_slices)
        box = changes.get("box", ann.box)
        check_against_t2(state.volume(patient_id, "t2").image, tuple(slices), box, where=patient_id)
    ann, version = state.store.save_annotation(patient_id, changes, versions, user=user)
    response.headers["ETag"] = _etag(version)
    return {"case": case, "patient_id": patient_id, "version": version, "annotation": ann.to_dict()}


@router.get("/{case}/mapping")
def mapping(
    case: str,
    k: int = Query(..., description="T2 slice (0-based)"),
    box: str | None = Query(None, description="T2 box x0,y0,x1,y1 (half-open, inside the T2 image)"),
    slices: str | None = Query(None, description="lesion slices for the registration, e.g. 6;7;8 (0-based)"),
    register: bool = Query(False, description="refine with the bounded rigid registration (when on)"),
    state: AppState = Depends(get_state),  # noqa: B008
) -> dict[str, Any]:
    """Where T2 slice ``k`` (and the box on it) lies on T1: header geometry, or after registration. ``k``, the box
    and the slices are checked against the T2 image first (422 naming the parameter)."""
    from spinedx.cohort import parse_box, parse_slices
    from spinedx.serve.geometry import map_box, t1_slices_for_t2
    from spinedx.serve.validation import check_against_t2

    patient_id = state.store.patient_of(case)
    t2 = state.volume(patient_id, "t2").image
    t1 = state.volume(patient_id, "t1").image
    if not 0 <= k < t2.shape[0]:
        raise InvalidInput(f"[k] slice {k} out of range: the T2 series has {t2.shape[0]} slices (0..{t2.shape[0] - 1})",
                           where=patient_id)
    transform = None
    reg = None
    out: dict[str, Any] = {"k": k}
    if box:
        try:
            b = parse_box(box)
        except ValueError as exc:
            raise InvalidInput(f"[box] {exc}", where=patient_id) from None
        try:
            sl = parse_slices(slices) if slices else (k,)
        except ValueError as exc:
            raise InvalidInput(f"[slices] {exc}", where=patient_id) from None
        for name, args in (("box", ((), b)), ("slices", (sl, None))):
            try:
                check_against_t2(t2, *args, where=patient_id)
            except InvalidInput as exc:
                raise InvalidInput(f"[{name}] {exc.message}", where=patient_id) from None
        if register and state.extract_config.register:
            reg = _registration(state, patient_id, t1, t2, b, sl)
            transform = reg.transform
        out["t1_box"] = map_box(t1, t2, b, k, transform)
        cx, cy = (b[0] + b[2] - 1) / 2.0, (b[1] + b[3] - 1) / 2.0
        out["t1_slice_for_t2"] = t1_slices_for_t2(t1, t2, transform, (cx, cy))
    else:
        out["t1_slice_for_t2"] = t1_slices_for_t2(t1, t2)
    out["t1_slice"] = out["t1_slice_for_t2"][k]
    out["registration"] = ({"performed": reg.performed, "accepted": reg.accepted, "reason": reg.reason}
                           if reg is not None else None)
    return out


def _registration(state: AppState, key: str, t1: Any, t2: Any, box: tuple[int, int, int, int],
                  slices: tuple[int, ...]) -> Any:
    from spinedx.preprocess import register_rigid
    from spinedx.preprocess.mapping import check_overlap

    cache_key = (key, id(t1), id(t2), tuple(box), tuple(slices))
    with state.reg_lock:
        hit = state.registrations.get(cache_key)
    if hit is not None:
        return hit
    from spinedx.errors import PreprocessError

    try:
        check_overlap(t1, t2, box, slices, where=key)
    except PreprocessError as exc:
        raise InvalidInput(exc.message, where=key) from None
    rec = register_rigid(t1, t2, box, slices, state.extract_config)
    with state.reg_lock:
        if len(state.registrations) > 256:
            state.registrations.clear()
        state.registrations[cache_key] = rec
    return rec
