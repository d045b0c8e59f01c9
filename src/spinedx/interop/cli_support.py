"""What ``spinedx predict --dicomweb`` does, kept here so the command stays thin; nothing here prints.

The command prints what :func:`predict_dicomweb` returns. URLs in those lines go through
:func:`spinedx.common.redact_url`: a password in the URL's user-info is used, never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def predict_dicomweb(model: Path, url: str, study: str, lesion_slices: str, box: str, out: Path, *,
                     t1_series: str | None, t2_series: str | None, store: bool, register: bool | None,
                     engine: str, user: str | None = None) -> tuple[Any, list[str]]:
    """``spinedx predict --dicomweb URL --study UID [--store]``: the round trip (``predict_study``).

    Returns:
        The prediction, and the lines for the console (which series, how long, what was stored).
    """
    from spinedx.common import redact_url
    from spinedx.interop.dicomweb import DicomWebAuth
    from spinedx.interop.pacs import predict_study

    res = predict_study(model, url, study, lesion_slices, box, out, t1_series=t1_series, t2_series=t2_series,
                        store=store, auth=DicomWebAuth.from_env(user), register=register, engine=engine)
    shown = redact_url(url)
    how = "chosen as spinedx index does" if t1_series is None or t2_series is None else "given"
    lines = [f"study {study} on {shown}: T1W {res.t1_series_uid}, T2W {res.t2_series_uid} ({how}); "
             f"query/retrieve {res.seconds['query_retrieve']:.1f} s, prediction {res.seconds['predict']:.1f} s"]
    if res.supersedes is not None:
        lines.append(f"the SR supersedes the study's earlier spinedx SR {res.supersedes.sop_instance_uid} "
                     "(Predecessor Documents Sequence)")
    if store:
        heat = ("" if res.results.pmap_series_uid is None else
                f", heatmap Parametric Map series {res.results.pmap_series_uid}, overlay series "
                f"{res.results.overlay_series_uid}")
        lines.append(f"stored {len(res.stored)} instance(s) into the study on {shown} (STOW-RS, "
                     f"{res.seconds['store']:.1f} s): SR series {res.results.sr_series_uid}{heat}")
    return res.prediction, lines
