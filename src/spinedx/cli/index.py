"""`spinedx index`: find each study's sagittal T1W/T2W series in a DICOM tree and write a draft manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command, fail


@command("index")
def index(
    root: Path | None = typer.Argument(None, help="Root of a DICOM tree (PACS export, CD, nested or flat)."),  # noqa: B008
    dicomweb: str | None = typer.Option(None, "--dicomweb", help="Index a DICOMweb server instead of a folder "
                                        "(e.g. http://pacs:8042/dicom-web); auth: SPINEDX_DICOMWEB_USER/_PASSWORD "
                                        "or SPINEDX_DICOMWEB_TOKEN."),
    out: Path = typer.Option(..., "--out", "-o",  # noqa: B008
                             help="Draft manifest to write (cohort.csv); index.json goes beside it."),
    allow_fat_suppressed: bool = typer.Option(
        False, "--allow-fat-suppressed", help="Accept fat-suppressed series (STIR, FS) when nothing better exists."),
    allow_contrast: bool = typer.Option(
        False, "--allow-contrast", help="Accept contrast-enhanced series when nothing better exists."),
    allow_derived: bool = typer.Option(
        False, "--allow-derived",
        help="Accept derived series (reformats, ImageType DERIVED) if nothing better exists."),
    allow_modality: list[str] | None = typer.Option(  # noqa: B008
        None, "--allow-modality", metavar="MODALITY",
        help="Accept series of this image modality besides MR (e.g. CT); repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Index a DICOM tree or a DICOMweb server: one manifest row per study with its T1W/T2W series (headers only).

    Over an existing manifest (--out) the new studies are added and every existing row is kept as it is; any other
    file at --out is refused.
    """
    from spinedx.studyindex import SelectionOptions, index_tree, write_index
    from spinedx.studyindex.header import allow_modality_option

    opts = SelectionOptions(allow_fat_suppressed=allow_fat_suppressed, allow_contrast=allow_contrast,
                            allow_derived=allow_derived, allow_modality=allow_modality_option(allow_modality))
    if (root is None) == (dicomweb is None):
        fail("give either a DICOM folder (ROOT) or --dicomweb URL")
    if dicomweb is not None:
        from spinedx.interop.dicomweb import DicomWebAuth
        from spinedx.interop.pacs import index_server

        idx = index_server(dicomweb, opts, auth=DicomWebAuth.from_env(None))
    else:
        assert root is not None  # one of the two, checked above
        idx = index_tree(root, opts, progress=not quiet)
    written = write_index(idx, out)  # merged into an existing manifest, never replacing it
    n_series = sum(len(s.series) for s in idx.studies)
    if idx.dicomweb is not None:
        typer.echo(f"indexed {idx.dicomweb} in {idx.seconds:.1f} s: {len(idx.studies)} studies, {n_series} series, "
                   f"{idx.n_dicom} instances (headers only)")  # the URL without user-info (index_server)
    else:
        rate = idx.n_files / idx.seconds if idx.seconds > 0 else 0.0
        typer.echo(f"indexed {idx.n_files} files in {idx.seconds:.1f} s ({rate:.0f} files/s): {idx.n_dicom} DICOM, "
                   f"{idx.n_skipped} skipped (not DICOM){f', {idx.n_dicomdir} DICOMDIR' if idx.n_dicomdir else ''}; "
                   f"{len(idx.studies)} studies, {n_series} series")
    echo_statuses(idx)
    if idx.synthetic:
        typer.echo("synthetic cohort, simulated readers (spinedx synth DICOM)")
    typer.echo(written.summary())
    typer.echo(f"manifest: {written.manifest}")
    typer.echo(f"why each series was chosen or not: {written.index_json}")


def echo_statuses(idx: object) -> None:
    """The studies by status, then one line per study that is not ready (ambiguous, not usable, incomplete)."""
    from spinedx.studyindex import TreeIndex

    assert isinstance(idx, TreeIndex)
    typer.echo(f"T1W and T2W found: {len(idx.complete)} studies; ambiguous: {len(idx.ambiguous)}; "
               f"incomplete: {len(idx.incomplete)}; not usable: {len(idx.unusable)}")
    for st in idx.ambiguous + idx.unusable + idx.incomplete:
        status = "not usable" if st.selection.status == "unusable" else st.selection.status
        typer.echo(f"  {st.case_key}: {status}: {st.selection.summary()}")
