"""`spinedx report`: the self-contained HTML study report of a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command


@command("report")
def report(
    run_dir: Path = typer.Argument(..., help="Run folder written by `spinedx cv`."),
    cohort: Path | None = typer.Option(
        None, "--cohort", help="Cohort manifest (cohort.csv); default: the one recorded by the run."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output HTML file (default RUN_DIR/report.html)."),
    reader: str | None = typer.Option(
        None, "--reader",
        help="Reader for the error analysis when statistics are computed (default: least experienced).",
    ),
    gallery: int = typer.Option(2, "--gallery", min=0, help="Cases per gallery group (TP, TN, FN, FP)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    allow_missing_folds: bool = typer.Option(
        False, "--allow-missing-folds", help="Make the report although some fold models are missing (said in it)."),
    allow_changed_patches: bool = typer.Option(
        False, "--allow-changed-patches",
        help="Make the report although patches.npz changed since training (no gallery images; said in it)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a file at --out that is not this run's report (another run's report, "
        "any other file); this run's own report is rewritten without it."),
) -> None:
    """Write RUN_DIR/report.html: tables, ROC, confusion matrices, calibration, Grad-CAM gallery, provenance.

    Computes the study statistics into RUN_DIR/stats first when they are missing and a cohort is
    known. Tables are also written as CSV next to the report. Research use only.
    """
    from spinedx.report import build_report

    path = build_report(run_dir, cohort, out=out, gallery_per_group=gallery, reader=reader, progress=progress,
                        allow_missing_folds=allow_missing_folds, allow_changed_patches=allow_changed_patches,
                        overwrite=overwrite)
    typer.echo(f"report: {path.resolve()}")
