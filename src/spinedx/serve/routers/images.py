"""Slices (``GET /api/cases/{case}/{t1|t2}/{k}.raw`` for the page, ``.png`` windowed by the server) and
prediction overlays."""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import FileResponse

from spinedx.serve.datastore import InvalidInput, NotFound
from spinedx.serve.deps import get_state
from spinedx.serve.state import AppState

router = APIRouter(prefix="/api/cases", tags=["images"])
_OVERLAY = re.compile(r"overlay_slice\d{3,6}\.png")


@router.get("/{case}/prediction/{name}", response_class=FileResponse)
def overlay(case: str, name: str, state: AppState = Depends(get_state)) -> FileResponse:  # noqa: B008
    """An overlay PNG of the case's last prediction (T1W and T2W crops, with and without the heatmap)."""
    patient_id = state.store.patient_of(case)
    if not _OVERLAY.fullmatch(name):
        raise NotFound("no such file", where=patient_id)
    path = state.store.prediction_dir(patient_id) / name
    if not path.is_file():
        raise NotFound("no such overlay (predict the case first)", where=patient_id)
    return FileResponse(path, media_type="image/png")


def _slice(state: AppState, case: str, which: str, k: int) -> tuple[str, Any]:
    """(patient_id, volume) of slice ``k`` of a case's series, checked."""
    patient_id = state.store.patient_of(case)
    if which not in ("t1", "t2"):
        raise NotFound("series must be t1 or t2", where=patient_id)
    vol = state.volume(patient_id, which)
    nz = vol.image.shape[0]
    if not 0 <= k < nz:
        raise InvalidInput(f"[k] slice {k} out of range: the {which.upper()}W series has {nz} slices (0..{nz - 1})",
                           where=patient_id)
    return patient_id, vol


@router.get("/{case}/{which}/{k}.raw", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def slice_raw(case: str, which: str, k: int, state: AppState = Depends(get_state)) -> Response:  # noqa: B008
    """Slice ``k`` (0-based) of the case's T1W or T2W series in the reader's canonical grid, at full depth: rows x
    columns unsigned 16-bit little-endian pixels ``u``, row by row, with ``value = intercept + slope * u`` (the
    series' ``pixels`` in ``GET /api/cases/{case}``). The page windows it itself."""
    from spinedx.serve.volumes import slice_raw as encode

    _, vol = _slice(state, case, which, k)
    return Response(encode(vol.image.array[k], vol.encoding), media_type="application/octet-stream")


@router.get("/{case}/{which}/{k}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def slice_image(
    case: str,
    which: str,
    k: int,
    wc: float | None = Query(None, description="window centre, a finite number (default: from the series' "
                             "percentiles)"),
    ww: float | None = Query(None, description="window width, a finite number above 0"),
    state: AppState = Depends(get_state),  # noqa: B008
) -> Response:
    """Slice ``k`` (0-based) of the case's T1W or T2W series in the reader's canonical grid, as an 8-bit PNG. A
    window value that is not a finite number (``nan``, ``inf``) or a width not above 0 is refused (422), never drawn
    blank."""
    from spinedx.serve.volumes import slice_png

    where = state.store.patient_of(case)
    if wc is not None and not math.isfinite(wc):
        raise InvalidInput(f"[wc] the window centre must be a finite number, not {wc}", where=where)
    if ww is not None and not (math.isfinite(ww) and ww > 0):
        raise InvalidInput(f"[ww] the window width must be a finite number above 0, not {ww}", where=where)
    _, vol = _slice(state, case, which, k)
    c = vol.window[0] if wc is None else wc
    w = vol.window[1] if ww is None else ww
    return Response(slice_png(vol.image.array[k], c, w), media_type="image/png")
