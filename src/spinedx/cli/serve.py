"""`spinedx serve`: the workstation in the browser (view, draw the box, annotate, predict). Research use only."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command


@command("serve")
def serve(
    dicom_root: Path | None = typer.Argument(  # noqa: B008
        None, help="DICOM tree to index; its studies are added to the manifest."),
    cohort: Path | None = typer.Option(  # noqa: B008
        None, "--cohort", help="Manifest to read and write (default ./cohort.csv, made by indexing DICOM_ROOT)."),
    model: Path | None = typer.Option(  # noqa: B008
        None, "--model", help="Run folder (spinedx cv) or model bundle (spinedx export): enables Predict."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface; anything but loopback needs --token."),
    port: int = typer.Option(8765, "--port", help="TCP port."),
    token: str | None = typer.Option(None, "--token", envvar="SPINEDX_TOKEN",
                                     help="Bearer token required on every API request (env SPINEDX_TOKEN)."),
    register: bool | None = typer.Option(None, "--register/--no-register",
                                         help="T2->T1 registration for the T1 pane and Predict (default: as the run)."),
    dicomweb: str | None = typer.Option(
        None, "--dicomweb", help="Browse a DICOMweb server instead of a folder: its studies are indexed into the "
        "manifest and a case's series retrieved (WADO-RS) when first opened."),
    user: str | None = typer.Option(
        None, "--user", help="DICOMweb basic-auth user (password in SPINEDX_DICOMWEB_PASSWORD; or a bearer token "
        "in SPINEDX_DICOMWEB_TOKEN)."),
    expect_digest: str | None = typer.Option(
        None, "--expect-digest", metavar="HEX", help="Refuse to start unless --model is the bundle with this digest "
        "(printed by spinedx export)."),
) -> None:
    """Start the workstation: a local web page to view T2W/T1W, draw the lesion box, annotate and predict."""
    from spinedx.serve import ServeSettings
    from spinedx.serve import serve as run_server

    settings = ServeSettings(cohort=cohort, dicom_root=dicom_root, model=model, host=host, port=port, token=token,
                             register=register, dicomweb=dicomweb, dicomweb_user=user, expect_digest=expect_digest)

    def ready(url: str) -> None:
        typer.echo(f"spinedx workstation: {url}" + ("  (send the token as 'Authorization: Bearer ...'; "
                                                     f"open {url}#token=TOKEN in the browser)" if token else ""))
        typer.echo("research use only, not for clinical decisions; Ctrl-C stops the server")

    from spinedx.fsutil import Terminated

    try:
        run_server(settings, on_ready=ready)
    except (KeyboardInterrupt, Terminated):
        typer.echo("workstation stopped (saves are written when made; nothing is pending)")
