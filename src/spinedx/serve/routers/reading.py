"""Reader mode (``spinedx serve --study STUDY``): a blinded reading of a planned study (``spinedx readers plan``).

Only this router is mounted in reader mode: the annotation page and ``/api/...`` (labels, features, other
readers' calls, predictions by patient) do not exist there. Every ``/reader/api`` request carries a token of the
study (``Authorization: Bearer``): a reader's sees only that reader's due case, a coordinator's sees progress.

What a reader receives, and nothing else (checked by the tests on every response a browser session receives):

* the due step: its number, the opaque case number, unaided or aided, the two series' sizes, pixel spacing,
  window presets, pixel encoding and orientation markers (no UIDs, names, dates, paths), the T2 -> T1 slice
  correspondence, progress counts;
* slices of the due case only, while the step is not paused: raw 16-bit pixels (what the page windows itself) or
  PNGs without metadata chunks;
* for an aided step only, the model's answer as the workstation shows it (:func:`aided_view`: the ensemble's
  probability, the call at the run's threshold, the heatmap overlays, titled with the case number), and in the
  sequential design the reader's own unaided read of the case.

Errors name the case number, never the patient or a file. Times are the server's: a step is "shown" when its
answer (with the model's output, for an aided step) is sent; pauses stop its clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from spinedx import RESEARCH_USE_ONLY
from spinedx.errors import SpinedxError
from spinedx.readers.modelref import model_identity  # one definition: the analysis reads it too

router = APIRouter(prefix="/reader/api", tags=["reader"], include_in_schema=False)
pages = APIRouter(include_in_schema=False)
_STATIC = {"reader.js", "viewer.js", "reader.css", "favicon.svg"}
_CALLS = ("benign", "malignant")


# -- the service ----------------------------------------------------------------------------------------------
class ReadingService:
    """The study, its store, the workstation's state (images, predictor) and the server clock.

    Args:
        study: the loaded :class:`spinedx.readers.plan.Study`.
        store: its :class:`spinedx.readers.store.ReadStore`.
        state: the app's :class:`spinedx.serve.state.AppState` (datastore over the study's manifest, predictor).
        model: identity of the predictor's model (:func:`model_identity`).
        clock: UNIX seconds (tests move time forward for a crossover's washout).
    """

    def __init__(self, study: Any, store: Any, state: Any, model: str, clock: Callable[[], float] = time.time) -> None:
        self.study = study
        self.store = store
        self.state = state
        self.model = model
        self.clock = clock
        self.lock = threading.RLock()
        self._case_locks: dict[str, threading.Lock] = {}
        self._prefetching: set[str] = set()

    @classmethod
    def open(cls, settings: Any, state: Any) -> ReadingService:
        """Load the study named by the settings and check it against the cohort and the model.

        Raises:
            SpinedxError: a damaged study, another manifest (sha256), no model, another model than the one that
                aided the study's earlier reads.
        """
        from spinedx.readers.plan import load_study
        from spinedx.readers.store import ReadStore

        study = load_study(settings.study)
        study.check_cohort(settings.cohort)
        if state.predictor is None:
            raise SpinedxError("a reader study needs --model for its aided reads", where="--study")
        model = model_identity(Path(settings.model))
        store = ReadStore(study.store_path, study.study_id)
        used = store.meta("model")
        if used is not None and used != model:
            store.close()
            raise SpinedxError(f"this study's aided reads so far showed model {used}, not {model}: start the server "
                               "with the same --model (an MRMC comparison needs one model)", where=str(settings.model))
        svc = cls(study, store, state, model)
        # a server killed while it computed an answer leaves a hidden temporary folder: never counted, removed here
        from spinedx.fsutil import remove_stale_tmp

        remove_stale_tmp(svc.aided_dir("x").parent)
        return svc

    def patient(self, case_id: str) -> str:
        return self.study.patient_of(case_id)

    def volume(self, case_id: str, which: str) -> Any:
        """A due case's decoded series; a failure is reported by case number only."""
        try:
            return self.state.volume(self.patient(case_id), which)
        except SpinedxError:
            raise HTTPException(422, f"case {case_id}: its {which.upper()}W series cannot be shown; tell the "
                                "study coordinator") from None

    def aided_dir(self, case_id: str) -> Path:
        """Where the model's answer for a case is kept (one per model; written once, whole)."""
        return self.study.path / "aided" / self.model.replace(":", "-") / case_id

    def aided_record(self, case_id: str) -> dict[str, Any]:
        """The model's answer for a case (``prediction.json``), computed once with heatmap overlays and kept.

        The prediction is made under the case number, not the patient's name, because ``spinedx predict`` writes
        the case's name into the overlays' titles.
        """
        import json
        from dataclasses import replace

        from spinedx.fsutil import atomic_dir

        folder = self.aided_dir(case_id)
        path = folder / "prediction.json"
        with self.lock:
            lock = self._case_locks.setdefault(case_id, threading.Lock())
        with lock:
            if not path.is_file():
                pid = self.patient(case_id)
                store = self.state.store
                try:
                    case = store.case(pid)
                    sources = {w: store.image_source(pid, w)[0] for w in ("t1", "t2")}
                    case = replace(case, patient_id=case_id, t1=sources["t1"], t2=sources["t2"])
                    with atomic_dir(folder) as tmp:
                        self.state.predictor.predict(case, tmp, explain=True)
                except SpinedxError:
                    raise HTTPException(422, f"case {case_id}: the model cannot read it; tell the study "
                                        "coordinator") from None
                self.store.set_meta_once("model", self.model)
            return dict(json.loads(path.read_text()))


    def prefetch(self, reader: str, st: Any) -> None:
        """Start computing the model's answer for the reader's next aided case in the background, so that the
        aided step does not keep the reader waiting (sequential: the step right after this one)."""
        if st.step is None:
            return
        steps = self.study.steps(reader, st.session)
        nxt = next((s for s in steps if s.step >= st.step.step and s.modality == "aided"), None)
        if nxt is None or (self.aided_dir(nxt.case_id) / "prediction.json").is_file():
            return
        with self.lock:
            if nxt.case_id in self._prefetching:
                return
            self._prefetching.add(nxt.case_id)

        def work(case_id: str = nxt.case_id) -> None:
            try:
                self.aided_record(case_id)
            except Exception:  # the reader's own request for the step reports it
                pass
            finally:
                with self.lock:
                    self._prefetching.discard(case_id)

        threading.Thread(target=work, name=f"aided-{nxt.case_id}", daemon=True).start()


def mount(app: FastAPI, settings: Any, state: Any) -> None:
    """Open the study (refusing a mismatched cohort or model) and mount the reader page and API on ``app``."""
    app.state.reading = ReadingService.open(settings, state)
    app.include_router(router)
    app.include_router(pages)


def _svc(request: Request) -> ReadingService:
    svc: ReadingService = request.app.state.reading
    return svc


def _principal(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    who = _svc(request).study.principal(token) if token else None
    if who is None:
        raise HTTPException(401, "sign in with your study token (Authorization: Bearer TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})
    return who


def reader_only(who: str = Depends(_principal)) -> str:  # noqa: B008
    from spinedx.readers.plan import COORDINATOR

    if who == COORDINATOR:
        raise HTTPException(403, "this is a reader's request; the coordinator's token sees progress only")
    return who


def coordinator_only(who: str = Depends(_principal)) -> str:  # noqa: B008
    from spinedx.readers.plan import COORDINATOR

    if who != COORDINATOR:
        raise HTTPException(403, "the coordinator's token is needed")
    return who


def _http(exc: SpinedxError) -> HTTPException:
    from spinedx.readers.store import ReadConflict

    return HTTPException(409 if isinstance(exc, ReadConflict) else 422, exc.one_line())


# -- views: what a reader is sent ----------------------------------------------------------------------------
def _describe(vol: Any) -> dict[str, Any]:
    """Size, spacing, windows, pixel encoding and orientation markers of a series, and nothing else
    (``Volume.describe`` also names the series UID)."""
    d = vol.describe()
    return {k: d[k] for k in ("slices", "rows", "columns", "spacing_mm", "window", "presets", "pixels", "orientation")}


def aided_view(svc: ReadingService, case_id: str) -> dict[str, Any]:
    """The model's answer as the workstation presents it: the decision (benign, malignant or refer, with the reasons
    to refer; docs/decision.md), the probability it states (calibrated when the run has a calibrator), the call at
    the run's threshold, whether the model was trained on a synthetic cohort, the heatmap overlays. The one place the
    aided panel's content is decided (the page has one matching function, ``renderAided``)."""
    rec = svc.aided_record(case_id)
    ex = rec.get("explanation") or {}
    reasons = [str(r) for r in rec.get("refer_reasons") or []]
    return {
        # a prediction made before the decision fields: its call and ensemble mean, as the SR reads it
        "probability": float(rec.get("probability", rec["patient_probability"])), "call": rec["call"],
        "decision": rec.get("decision") or rec["call"], "refer_reasons": reasons,
        "refer_reasons_text": "; ".join(r.replace("_", " ") for r in reasons),
        "synthetic_training": bool((rec.get("trained_on") or {}).get("synthetic")),
        "threshold": rec["threshold"],
        "overlays": [{"slice_index": s["slice_index"],
                      "url": f"/reader/api/cases/{case_id}/overlay/{int(s['slice_index'])}.png"}
                     for s in rec["slices"] if s.get("overlay")],
        "explanation": {"method": ex.get("label"), "caption": ex.get("caption")} if ex else None,
        "research_use_only": RESEARCH_USE_ONLY,
    }


def _own_unaided(svc: ReadingService, reader: str, case_id: str) -> dict[str, Any] | None:
    for eff, _ in svc.store.effective_reads():
        if eff.reader == reader and eff.case_id == case_id and eff.modality == "unaided":
            return {"call": eff.call, "score": eff.score}
    return None


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _state_view(svc: ReadingService, reader: str, st: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"status": st.status, "session": st.session, "sessions": svc.study.n_sessions,
                           "done": st.done, "total": st.total}
    if st.status == "waiting":
        out["available_at"] = _iso(st.available_at)
    if st.status == "paused" and st.step is not None:
        out["step"] = {"step": st.step.step}
    return out


def _step_view(svc: ReadingService, reader: str, st: Any, aided: dict[str, Any] | None) -> dict[str, Any]:
    from spinedx.serve.geometry import t1_slices_for_t2

    out = _state_view(svc, reader, st)
    step = st.step
    t2 = svc.volume(step.case_id, "t2")
    t1 = svc.volume(step.case_id, "t1")
    doc: dict[str, Any] = {"step": step.step, "case_id": step.case_id, "modality": step.modality,
                           "t2": _describe(t2), "t1": _describe(t1),
                           "t1_slice_for_t2": t1_slices_for_t2(t1.image, t2.image)}
    if step.modality == "aided":
        doc["aided"] = aided
        if svc.study.design == "sequential":
            doc["your_unaided_read"] = _own_unaided(svc, reader, step.case_id)
    out["step"] = doc
    return out


# -- reader API -------------------------------------------------------------------------------------------------
@router.get("/health")
def health() -> dict[str, str]:
    """Whether the server answers (nothing about the study)."""
    return {"status": "ok"}


@router.get("/me")
def me(request: Request, who: str = Depends(_principal)) -> dict[str, Any]:  # noqa: B008
    """Who the token belongs to and what the study asks (design, the feature form when asked)."""
    from spinedx.features import FEATURES
    from spinedx.readers.plan import COORDINATOR

    study = _svc(request).study
    return {"role": "coordinator" if who == COORDINATOR else "reader", "name": who,
            "design": study.design, "sessions": study.n_sessions, "washout_days": study.washout_days,
            "features": [{"name": n, "description": FEATURES[n]} for n in study.feature_names],
            "synthetic": study.synthetic, "research_use_only": RESEARCH_USE_ONLY}


@router.get("/next")
def next_step(request: Request, reader: str = Depends(reader_only)) -> dict[str, Any]:  # noqa: B008
    """The reader's due step (recorded as shown now), or why there is none (paused, waiting, done)."""
    from spinedx.readers.store import mark_shown, reader_state

    svc = _svc(request)
    for _ in range(3):
        st = reader_state(svc.study, svc.store, reader, svc.clock())
        if st.status != "reading" or st.step is None:
            return _state_view(svc, reader, st)
        # the model's answer (seconds the first time) and the images are ready before the clock starts
        aided = aided_view(svc, st.step.case_id) if st.step.modality == "aided" else None
        svc.volume(st.step.case_id, "t2")
        svc.volume(st.step.case_id, "t1")
        with svc.lock:
            now = svc.clock()
            shown = mark_shown(svc.study, svc.store, reader, now)
        if shown.status == "reading" and shown.step == st.step:
            svc.prefetch(reader, shown)
            return _step_view(svc, reader, shown, aided)
    raise HTTPException(409, "the reading changed while the case was prepared (a second window?); reload the page")


@router.post("/pause")
def pause(request: Request, reader: str = Depends(reader_only)) -> dict[str, Any]:  # noqa: B008
    """Stop the due step's clock; the case is hidden until :func:`resume`."""
    from spinedx.readers.store import pause as do_pause

    svc = _svc(request)
    with svc.lock:
        st = do_pause(svc.study, svc.store, reader, svc.clock())
    return _state_view(svc, reader, st)


@router.post("/resume")
def resume(request: Request, reader: str = Depends(reader_only)) -> dict[str, Any]:  # noqa: B008
    """Restart the due step's clock (then ask ``/next`` for the case)."""
    from spinedx.readers.store import resume as do_resume

    svc = _svc(request)
    with svc.lock:
        st = do_resume(svc.study, svc.store, reader, svc.clock())
    return _state_view(svc, reader, st)


@router.post("/reads")
def submit_read(
    request: Request,
    body: dict[str, Any] = Body(..., examples=[{"step": 1, "call": "benign", "score": 20}]),  # noqa: B008
    reader: str = Depends(reader_only),  # noqa: B008
) -> dict[str, Any]:
    """Record the due step's read: ``{"step", "call": "benign"|"malignant", "score": 0-100, "features": {..}}``
    (features when the study asks them). A submitted read is final."""
    from spinedx.readers.store import submit

    svc = _svc(request)
    step = body.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise HTTPException(422, "step: the number of the step being read")
    try:
        with svc.lock:
            read_id = submit(svc.study, svc.store, reader, step=step, call=body.get("call"), score=body.get("score"),
                             features=body.get("features"), now=svc.clock(), model=svc.model)
    except SpinedxError as exc:
        raise _http(exc) from None
    return {"saved": True, "read": read_id, "step": step}


def _due_case(svc: ReadingService, reader: str, case_id: str, *, aided: bool = False) -> None:
    """404 unless ``case_id`` is the reader's due (shown, not paused) case; for overlays, an aided step."""
    from spinedx.readers.store import reader_state

    st = reader_state(svc.study, svc.store, reader, svc.clock())
    if (st.status != "reading" or st.step is None or st.step.case_id != case_id or st.shown_at is None
            or (aided and st.step.modality != "aided")):
        raise HTTPException(404, "not the case being read")


@router.get("/cases/{case_id}/overlay/{k}.png", response_class=FileResponse)
def overlay(case_id: str, k: int, request: Request, reader: str = Depends(reader_only)) -> FileResponse:  # noqa: B008
    """A heatmap overlay of the model's answer, for the due aided step only."""
    svc = _svc(request)
    _due_case(svc, reader, case_id, aided=True)
    path = svc.aided_dir(case_id) / f"overlay_slice{k:03d}.png"
    if k < 0 or not path.is_file():
        raise HTTPException(404, "no such overlay")
    return FileResponse(path, media_type="image/png")


@router.get("/cases/{case_id}/{which}/{k}.raw", response_class=Response)
def slice_raw(case_id: str, which: str, k: int, request: Request,
              reader: str = Depends(reader_only)) -> Response:  # noqa: B008
    """Slice ``k`` of the due case's T1W or T2W series at full depth (16-bit pixels, as the workstation's)."""
    from spinedx.serve.volumes import slice_raw as encode

    svc = _svc(request)
    _due_case(svc, reader, case_id)
    if which not in ("t1", "t2"):
        raise HTTPException(404, "series must be t1 or t2")
    vol = svc.volume(case_id, which)
    nz = vol.image.shape[0]
    if not 0 <= k < nz:
        raise HTTPException(422, f"slice {k} out of range 0..{nz - 1}")
    return Response(encode(vol.image.array[k], vol.encoding), media_type="application/octet-stream")


@router.get("/cases/{case_id}/{which}/{k}.png", response_class=Response)
def slice_image(
    case_id: str, which: str, k: int, request: Request,
    wc: float | None = Query(None), ww: float | None = Query(None, gt=0),  # noqa: B008
    reader: str = Depends(reader_only),  # noqa: B008
) -> Response:
    """Slice ``k`` of the due case's T1W or T2W series (canonical grid, 8-bit PNG without metadata)."""
    from spinedx.serve.volumes import slice_png

    svc = _svc(request)
    _due_case(svc, reader, case_id)
    if which not in ("t1", "t2"):
        raise HTTPException(404, "series must be t1 or t2")
    vol = svc.volume(case_id, which)
    nz = vol.image.shape[0]
    if not 0 <= k < nz:
        raise HTTPException(422, f"slice {k} out of range 0..{nz - 1}")
    c = vol.window[0] if wc is None else wc
    w = vol.window[1] if ww is None else ww
    return Response(slice_png(vol.image.array[k], c, w), media_type="image/png")


# -- coordinator API ----------------------------------------------------------------------------------------------
@router.get("/progress")
def progress(request: Request, who: str = Depends(coordinator_only)) -> dict[str, Any]:  # noqa: B008
    """Per session whether it is closed and per reader the reads planned and made (counts, not reads)."""
    from spinedx.readers.store import progress as counts

    svc = _svc(request)
    out = counts(svc.study, svc.store)
    for s in out["sessions"]:
        s["closed_at"] = _iso(s["closed_at"])
    return out


@router.post("/sessions/{session}/close")
def close(session: int, request: Request, who: str = Depends(coordinator_only)) -> dict[str, Any]:  # noqa: B008
    """Close a session: no more reads in it (its unread steps stay unread); its reads become visible here."""
    from spinedx.readers.store import close_session

    svc = _svc(request)
    try:
        with svc.lock:
            close_session(svc.study, svc.store, session, svc.clock())
    except SpinedxError as exc:
        raise _http(exc) from None
    return progress(request, who)


@router.get("/sessions/{session}/reads")
def session_reads(session: int, request: Request, who: str = Depends(coordinator_only)) -> list[dict[str, Any]]:  # noqa: B008
    """The reads of a closed session (latest corrections applied; case numbers, no truth)."""
    svc = _svc(request)
    if session not in svc.store.closed_sessions():
        raise HTTPException(403, f"session {session} is open: its reads are shown once you close it")
    return [{"read_id": (orig or eff).read_id, "reader": eff.reader, "step": eff.step, "case_id": eff.case_id,
             "modality": eff.modality, "call": eff.call, "score": eff.score,
             "seconds": None if eff.seconds is None else round(eff.seconds, 1),
             "corrected_by": eff.read_id if orig is not None else None}
            for eff, orig in svc.store.effective_reads() if eff.session == session]


@router.post("/corrections")
def correct(
    request: Request,
    body: dict[str, Any] = Body(..., examples=[{"reader": "r1", "session": 1, "case_id": "C03", "modality":  # noqa: B008
                                               "unaided", "call": "malignant", "score": 80,
                                               "reason": "reader reported a slip: meant malignant"}]),
    who: str = Depends(coordinator_only),  # noqa: B008
) -> dict[str, Any]:
    """Append a correction of a read (the reader reported a slip): the read stays, a new row with the corrected
    call, score (and features; without ``features`` the read's own are kept) points at it with the reason."""
    from spinedx.readers.store import check_features

    svc = _svc(request)
    target = None
    for eff, _ in svc.store.effective_reads():
        if (eff.reader, eff.session, eff.case_id, eff.modality) == (
                body.get("reader"), body.get("session"), body.get("case_id"), body.get("modality")):
            target = eff
    if target is None:
        raise HTTPException(404, "no such read (reader, session, case_id, modality)")
    try:
        # features not sent: the read's own stand (a slip in the call or the confidence)
        feats = (target.features if "features" not in body
                 else check_features(svc.study, body.get("features"), where=str(body.get("reader"))))
        with svc.lock:
            new_id = svc.store.append_correction(target.read_id, call=body.get("call"), score=body.get("score"),
                                                 features=feats, reason=str(body.get("reason") or ""),
                                                 author="coordinator", at=svc.clock())
    except SpinedxError as exc:
        raise _http(exc) from None
    return {"saved": True, "read": new_id, "corrects": target.read_id}


# -- the page -----------------------------------------------------------------------------------------------------
@pages.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/reader/", status_code=303)


@pages.get("/reader/")
def reader_page() -> FileResponse:
    from spinedx.serve.routers.page import static_file

    return static_file("reader.html")


@pages.get("/reader/static/{name}")
def reader_static(name: str) -> FileResponse:
    from spinedx.serve.datastore import NotFound
    from spinedx.serve.routers.page import static_file

    if os.path.basename(name) != name or name not in _STATIC:
        raise NotFound("no such file", where="static")
    return static_file(name)


@pages.get("/favicon.ico")
def favicon() -> FileResponse:
    from spinedx.serve.routers.page import static_file

    return static_file("favicon.svg")
