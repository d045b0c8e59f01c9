"""What the ``--dicomweb`` options of the CLI commands do (kept here so those commands stay thin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def index_dicomweb(url: str, out: Path, options: Any, *, user: str | None = None) -> None:
    """``spinedx index --dicomweb URL --out cohort.csv``: list the server's studies as a draft manifest."""
    from spinedx.interop.dicomweb import DicomWebAuth
    from spinedx.interop.pacs import index_server, write_server_index

    idx = index_server(url, options, auth=DicomWebAuth.from_env(user))
    manifest, json_path = write_server_index(idx, out)
    n_series = sum(len(s.series) for s in idx.studies)
    typer.echo(f"indexed {url} in {idx.seconds:.1f} s: {len(idx.studies)} studies, {n_series} series, "
               f"{idx.n_dicom} instances (headers only)")
    typer.echo(f"T1W and T2W found: {len(idx.complete)} studies; ambiguous: {len(idx.ambiguous)}; "
               f"incomplete: {len(idx.incomplete)}")
    for st in idx.ambiguous + idx.incomplete:
        typer.echo(f"  {st.case_key}: {st.selection.status}: {st.selection.summary()}")
    if idx.synthetic:
        typer.echo("synthetic cohort, simulated readers (spinedx synth DICOM)")
    typer.echo(f"manifest: {manifest}")
    typer.echo(f"why each series was chosen or not: {json_path}")
