"""What the ``--dicomweb`` options of the CLI commands do (kept here so those commands stay thin).

URLs are printed through :func:`spinedx.common.redact_url`: a password in the URL's user-info is used, never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def index_dicomweb(url: str, out: Path, options: Any, *, user: str | None = None) -> None:
    """``spinedx index --dicomweb URL --out cohort.csv``: list the server's studies as a draft manifest."""
    from spinedx.common import redact_url
    from spinedx.interop.dicomweb import DicomWebAuth
    from spinedx.interop.pacs import index_server, write_server_index

    idx = index_server(url, options, auth=DicomWebAuth.from_env(user))
    written = write_server_index(idx, out)  # merged into an existing manifest, never replacing it
    manifest, json_path = written
    n_series = sum(len(s.series) for s in idx.studies)
    typer.echo(f"indexed {redact_url(url)} in {idx.seconds:.1f} s: {len(idx.studies)} studies, {n_series} series, "
               f"{idx.n_dicom} instances (headers only)")
    typer.echo(f"T1W and T2W found: {len(idx.complete)} studies; ambiguous: {len(idx.ambiguous)}; "
               f"incomplete: {len(idx.incomplete)}")
    for st in idx.ambiguous + idx.incomplete:
        typer.echo(f"  {st.case_key}: {st.selection.status}: {st.selection.summary()}")
    if idx.synthetic:
        typer.echo("synthetic cohort, simulated readers (spinedx synth DICOM)")
    typer.echo(written.summary())
    typer.echo(f"manifest: {manifest}")
    typer.echo(f"why each series was chosen or not: {json_path}")


def predict_dicomweb(model: Path, url: str, study: str, lesion_slices: str, box: str, out: Path, *,
                     t1_series: str | None, t2_series: str | None, store: bool, register: bool | None,
                     engine: str, user: str | None = None) -> Any:
    """``spinedx predict --dicomweb URL --study UID [--store]``: the round trip; returns the prediction."""
    from spinedx.common import redact_url
    from spinedx.interop.dicomweb import DicomWebAuth
    from spinedx.interop.pacs import predict_study

    res = predict_study(model, url, study, lesion_slices, box, out, t1_series=t1_series, t2_series=t2_series,
                        store=store, auth=DicomWebAuth.from_env(user), register=register, engine=engine)
    shown = redact_url(url)
    how = "chosen as spinedx index does" if t1_series is None or t2_series is None else "given"
    typer.echo(f"study {study} on {shown}: T1W {res.t1_series_uid}, T2W {res.t2_series_uid} ({how}); "
               f"query/retrieve {res.seconds['query_retrieve']:.1f} s, prediction {res.seconds['predict']:.1f} s")
    if store:
        typer.echo(f"stored {len(res.stored)} instance(s) into the study on {shown} (STOW-RS, "
                   f"{res.seconds['store']:.1f} s): SR series {res.results.sr_series_uid}, overlay series "
                   f"{res.results.overlay_series_uid}")
    return res.prediction
