"""``spinedx extract``: 6-channel lesion patches of a cohort (see :mod:`spinedx.preprocess`)."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import app, command  # noqa: F401


@command("extract")
def extract(
    cohort: Path = typer.Argument(..., help="Cohort manifest (cohort.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for patches.npz and extract.json."),
    register: bool = typer.Option(True, "--register/--no-register",
                                  help="Refine the T2->T1 geometry mapping with a bounded rigid registration."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel worker processes."),
    patch_size: int = typer.Option(64, "--patch-size", min=2, help="Side of the output patches in pixels."),
    margin: float = typer.Option(0.0, "--margin", min=0.0,
                                 help="Context added on each side of the square crop, as a fraction of the box side."),
    pair_check: str = typer.Option(
        "strict", "--pair-check",
        help="T1/T2 belonging check: strict refuses a T1 that is the T2 series, another patient's series or a "
             "swapped T1/T2 (by TE/TR); warn records it and goes on (unusual protocols); off skips it."),
    allow_modality: list[str] | None = typer.Option(  # noqa: B008
        None, "--allow-modality", metavar="MODALITY",
        help="Read DICOM series of this image modality besides MR (e.g. CT); repeatable."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace patches already in --out that were made from another manifest or with other settings (a "
             "rerun of the same manifest and options needs no --overwrite)."),
) -> None:
    """Turn a cohort of T1/T2 series and T2 lesion boxes into patches.npz (N, 6, 64, 64) and extract.json.

    Exit code 2 when any patient failed (one line per failed patient); the others are still written, unless
    --out already holds patches of one of the failed patients: that result is then kept and nothing is written.
    When every patient fails nothing is written and earlier outputs are kept.
    """
    from spinedx.cli._app import fail
    from spinedx.preprocess import ExtractConfig, extract_cohort
    from spinedx.preprocess.extract import NothingExtracted, ResultKept
    from spinedx.preprocess.pairing import PAIR_CHECK_MODES
    from spinedx.studyindex.header import allow_modality_option

    if pair_check not in PAIR_CHECK_MODES:
        fail(f"--pair-check must be one of {', '.join(PAIR_CHECK_MODES)}, got '{pair_check}'")
    config = ExtractConfig(patch_size=patch_size, margin=margin, register=register, pair_check=pair_check)
    try:
        res = extract_cohort(cohort, out, config, workers=workers, progress=progress,
                             allow_modality=allow_modality_option(allow_modality), overwrite=overwrite)
    except (NothingExtracted, ResultKept) as exc:
        for _, line in exc.failed:
            typer.echo("error: " + " ".join(line.split()), err=True)
        raise
    per_class = ", ".join(f"{n} {name}" for name, n in res.samples_per_class.items())
    if res.synthetic:
        typer.echo("synthetic cohort, simulated readers: no real patient")
    typer.echo(
        f"extracted {len(res.ok)} patient(s), {res.n_samples} sample(s) ({per_class}); "
        f"{len(res.failed)} failed; {res.seconds:.1f} s -> {res.patches_path}"
    )
    if res.replaced is not None:
        typer.echo(f"replaced the earlier patches in {out} ({res.replaced})")
    for line in res.warnings:
        typer.echo("warning: " + " ".join(line.split()), err=True)
    if res.failed:
        for _, line in res.failed:
            typer.echo("error: " + " ".join(line.split()), err=True)
        raise typer.Exit(2)
