"""`spinedx serve`: the workstation in the browser (view, draw the box, annotate, predict). Research use only."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from spinedx.cli._app import command, fail


@command("serve")
def serve(
    dicom_root: Path | None = typer.Argument(  # noqa: B008
        None, help="DICOM tree to index; its studies are added to the manifest."),
    cohort: Path | None = typer.Option(  # noqa: B008
        None, "--cohort", help="Manifest to read and write (default ./cohort.csv, made by indexing DICOM_ROOT)."),
    model: Path | None = typer.Option(  # noqa: B008
        None, "--model", help="Run folder (spinedx cv) or model bundle (spinedx export): enables Predict."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface; anything but loopback needs a token "
                             "(--token-file or SPINEDX_TOKEN)."),
    port: int = typer.Option(8765, "--port", help="TCP port."),
    token_file: Path | None = typer.Option(  # noqa: B008
        None, "--token-file", metavar="FILE", help="Bearer tokens required on every API request: one 'name:token' "
        "per line (or one bare token), chmod 600; the audit log names the user. Or one token in SPINEDX_TOKEN."),
    token: str | None = typer.Option(None, "--token", hidden=True),
    allowed_host: list[str] | None = typer.Option(  # noqa: B008
        None, "--allowed-host", metavar="NAME", help="Also answer requests for this host name (NAME or NAME:PORT; "
        "repeatable), e.g. the name clients or a reverse proxy use. Default: 127.0.0.1, localhost, [::1] and --host."),
    ssl_certfile: Path | None = typer.Option(  # noqa: B008
        None, "--ssl-certfile", metavar="PEM", help="Serve HTTPS with this certificate (chain)."),
    ssl_keyfile: Path | None = typer.Option(  # noqa: B008
        None, "--ssl-keyfile", metavar="PEM", help="The certificate's private key (unencrypted PEM)."),
    register: bool | None = typer.Option(None, "--register/--no-register",
                                         help="T2->T1 registration for the T1 pane and Predict (default: as the run)."),
    dicomweb: str | None = typer.Option(
        None, "--dicomweb", help="Browse a DICOMweb server instead of a folder: its studies are indexed into the "
        "manifest and a case's series retrieved (WADO-RS) when first opened."),
    user: str | None = typer.Option(
        None, "--user", help="DICOMweb basic-auth user (password in SPINEDX_DICOMWEB_PASSWORD; or a bearer token "
        "in SPINEDX_DICOMWEB_TOKEN)."),
    allow_modality: list[str] | None = typer.Option(  # noqa: B008
        None, "--allow-modality", metavar="MODALITY",
        help="Read DICOM series of this image modality besides MR (e.g. CT); repeatable."),
    study: Path | None = typer.Option(  # noqa: B008
        None, "--study", help="Reader mode for a study folder (spinedx readers plan): readers sign in with their "
        "token at /reader/; the annotation page and API are not served. Needs --cohort and --model."),
    expect_digest: str | None = typer.Option(
        None, "--expect-digest", metavar="HEX", help="Refuse to start unless --model is the bundle with this digest "
        "(printed by spinedx export)."),
    store: bool = typer.Option(
        True, "--store/--no-store", help="With --dicomweb: store each prediction's SR, heatmap map and overlays "
        "into its study (STOW-RS); --no-store keeps them local."),
    purge_cache: bool = typer.Option(
        False, "--purge-cache", help="Remove the series retrieved from the DICOMweb server (<cohort>.dicomweb/) "
        "and exit."),
) -> None:
    """Start the workstation: a local web page to view T2W/T1W, draw the lesion box, annotate and predict."""
    if purge_cache:
        from spinedx.interop.publish import purge_workstation_cache

        typer.echo(purge_workstation_cache(cohort if cohort is not None else Path("cohort.csv")))
        return
    from spinedx.serve import ServeSettings
    from spinedx.serve import serve as run_server
    from spinedx.serve.settings import TOKEN_ENV
    from spinedx.studyindex.header import allow_modality_option

    if token is not None:
        # refused whatever its value: a command line is visible to every user of the machine (ps, /proc)
        fail(f"--token: a token on the command line can be read by every user of this machine (ps); put it in a "
             f"file (--token-file FILE, one 'name:token' per line, chmod 600) or in the environment ({TOKEN_ENV})")
    env_token = os.environ.get(TOKEN_ENV) or None
    settings = ServeSettings(cohort=cohort, dicom_root=dicom_root, model=model, host=host, port=port,
                             token=env_token, token_file=token_file, allowed_hosts=tuple(allowed_host or ()),
                             ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                             register=register, dicomweb=dicomweb, dicomweb_user=user,
                             allow_modality=allow_modality_option(allow_modality), study=study,
                             expect_digest=expect_digest, store=store)
    tokens = env_token is not None or token_file is not None

    def ready(url: str) -> None:
        if study is not None:
            typer.echo(f"spinedx reader study: {url}reader/  (each reader signs in with their token file; the "
                       "coordinator with tokens/coordinator.token)")
            typer.echo("research use only, not for clinical decisions; Ctrl-C stops the server (every submitted "
                       "read is already on disk)")
            return
        typer.echo(f"spinedx workstation: {url}" + ("  (sign in on the page with your token; scripts send "
                                                     "'Authorization: Bearer TOKEN')" if tokens else ""))
        typer.echo("research use only, not for clinical decisions; Ctrl-C stops the server")

    from spinedx.fsutil import Terminated, interrupt_exit_code

    try:
        run_server(settings, on_ready=ready)
    except (KeyboardInterrupt, Terminated) as exc:
        # like every command: one line, exit 130 (Ctrl-C) or 143 (SIGTERM); a save is written whole when it is made
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
        fail(f"{what}; " + ("the reader study server stopped (every submitted read is on disk)" if study is not None
                            else "the workstation stopped (every save was written when it was made; nothing is "
                            "pending)"), interrupt_exit_code(exc))
