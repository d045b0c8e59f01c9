"""`spinedx demo`: the whole study on the default synthetic cohort in one command."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from spinedx.cli._app import command
from spinedx.synth.seeds import EVALUATION_SEED


@command("demo")
def demo(
    out_dir: Path = typer.Argument(..., help="Demo folder (created; an existing one is resumed)."),
    patients: int = typer.Option(190, "--patients", min=2, help="Synthetic patients (paper: 190)."),
    malignant: int | None = typer.Option(None, "--malignant", help="Malignant patients (default: 50/190 of them)."),
    seed: int = typer.Option(EVALUATION_SEED, "--seed", help="Seed of the cohort, folds and training."),
    profile: str = typer.Option("cpu", "--profile", help="cpu (minutes on 2 cores), quick (resnet50, fewer epochs) "
                                "or paper."),
    folds: int = typer.Option(10, "--folds", min=2, help="Cross-validation folds (paper: 10)."),
    backbone: str | None = typer.Option(None, "--backbone", help="torchvision backbone (default: the profile's)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Maximum epochs per fold (profile default)."),
    register: bool = typer.Option(True, "--register/--no-register", help="T2->T1 registration at extraction."),
    workers: int = typer.Option(min(4, os.cpu_count() or 1), "--workers", "-j", min=1,
                                 help="Processes for synthesis, extraction and (on a CPU) folds trained at once "
                                 "(default: the CPU count, at most 4)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """synth -> extract -> cv -> stats -> report; prints the report's path and the model vs the readers.

    Stages whose outputs are complete are skipped, so an interrupted demo resumes. Research use only.
    """
    from spinedx.cli.cvview import progress_for
    from spinedx.demo import run_demo

    res = run_demo(out_dir, n_patients=patients, n_malignant=malignant, seed=seed, profile=profile, folds=folds,
                   backbone=backbone, epochs=epochs, register=register, workers=workers, progress=progress,
                   log=typer.echo, cv_progress=progress_for(quiet=not progress))
    for line in res.summary_lines():
        typer.echo(line)
