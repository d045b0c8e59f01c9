"""``spinedx cv``: tenfold cross-validation of the paper's model (a thin layer over
:func:`spinedx.evaluation.cv.run_cv`; what it shows is :mod:`spinedx.cli.cvview`)."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command


@command("cv")
def cv(
    patches_dir: Path = typer.Argument(..., help="Folder with patches.npz (from spinedx extract), or the file."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Run folder; an existing one is resumed (finished folds skipped)."),
    folds: int = typer.Option(10, help="Number of folds (grouped by patient, stratified)."),
    repeats: int = typer.Option(1, help="Repeat the whole cross-validation N times with seeds seed..seed+N-1 (new "
                                "splits and initial weights; repeats/<r>/ in the run folder); metrics add the mean, "
                                "SD and range across repeats. predict/export use repeat 0's fold models."),
    seed: int = typer.Option(0, help="Master seed (splits, initial weights, augmentation)."),
    profile: str = typer.Option("paper", help="paper (full protocol), quick (fewer epochs, views), cpu (the main "
                                "job's)."),
    backbone: str | None = typer.Option(None, help="torchvision backbone (default: the profile's; paper resnet50)."),
    pretrained: str = typer.Option("auto",
                                   help="auto (ImageNet if a local file is found, else scratch), imagenet, none."),
    weights: Path | None = typer.Option(None, help="Local torchvision ImageNet weights file (never downloaded)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs per fold (profile default: paper 100)."),
    patience: int | None = typer.Option(None, help="Early-stopping patience in epochs (0: never stop early)."),
    views_benign: int | None = typer.Option(None, help="Augmented views per benign slice per epoch (paper 20)."),
    views_malignant: int | None = typer.Option(None, help="Augmented views per malignant slice per epoch (paper 40)."),
    dropout: float | None = typer.Option(None, help="Dropout before the final layer during training (default 0.5, our "
                                         "assumption: the paper used dropout but gives no rate)."),
    early_stop_on: str | None = typer.Option(None, help="inner (unbiased), outer (the paper literally; optimistic) "
                                             "or none (last epoch kept); default: the profile's (inner, cpu: none)."),
    recalibrate_bn: bool | None = typer.Option(None, "--recalibrate-bn/--no-recalibrate-bn", help="Re-estimate "
                                               "BatchNorm statistics on the un-augmented training patches after "
                                               "training (default: the profile's; cpu on, paper and quick off)."),
    tta: str | None = typer.Option(None, help="Test-time augmentation of every prediction the run makes: none or "
                                   "affine8 (mean over the patch and 8 fixed affine views); default: the profile's "
                                   "(cpu affine8, paper and quick none)."),
    threshold: float = typer.Option(0.5, help="Malignant when patient probability >= threshold."),
    aggregation: str = typer.Option("max", help="Patient probability from its slices: max (paper) or mean."),
    alpha: float = typer.Option(0.10, help="Conformal error rate per class, in (0, 0.5): each patient's prediction "
                                "set ({benign}, {malignant}, or refer) holds the true label for at least 1 - alpha of "
                                "each class (docs/decision.md)."),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads of each fold, whichever executor runs it "
                                       "(default 1). It changes the last digits of the results, so the run records "
                                       "it and a resume must use the same."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    compile: str = typer.Option("auto", help="torch.compile the training step: auto (paper profile only), on, off."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; one log line per epoch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder made with other settings "
                                   "(only while none of its folds has finished)."),
    executor: str = typer.Option("local", help="local (folds on this machine) or ray (each fold a Ray "
                                 "task; pip install 'spinedx[ray]')."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="local executor: folds trained at once in worker "
                             "processes, each with --threads threads (2 jobs of 1 thread on a 2-core CPU is "
                             "fastest); the same bytes as --jobs 1."),
    address: str | None = typer.Option(None, help="Ray cluster: auto (the cluster of this node) or ray://host:10001; "
                                       "default: a local Ray instance sized to this machine."),
    gpus_per_fold: float = typer.Option(0.0, help="GPUs per fold task with --executor ray (0.5: two folds per GPU)."),
    cpus_per_fold: float | None = typer.Option(None, help="CPUs reserved per fold task with --executor ray "
                                               "(default: --threads, the fold's thread count)."),
) -> None:
    """Cross-validate the paper's model by patient and write the run folder (metrics, models, curves).

    An existing run folder is resumed (finished folds skipped) only when it was made with the same settings
    and the same patches; otherwise the command refuses before training.
    """
    import logging

    from spinedx.cli.cvview import progress_for, summary_lines
    from spinedx.evaluation.cv import run_cv
    from spinedx.training.config import CVConfig

    logging.basicConfig(level=logging.INFO if quiet else logging.WARNING, format="%(message)s")
    config = CVConfig.from_profile(
        profile, folds=folds, seed=seed, backbone=backbone, pretrained=pretrained,
        weights=str(weights) if weights else None, epochs=epochs, patience=patience, views_benign=views_benign,
        views_malignant=views_malignant, dropout=dropout, early_stop_on=early_stop_on, threshold=threshold,
        recalibrate_bn=recalibrate_bn, tta=tta,
        aggregation=aggregation, alpha=alpha,
        threads=threads, device=device, compile=compile,
    )
    ray_options = None
    if executor == "ray":
        from spinedx.evaluation.executors import RayOptions

        ray_options = RayOptions(address=address, cpus_per_fold=cpus_per_fold, gpus_per_fold=gpus_per_fold)
    metrics = run_cv(patches_dir, out, config, progress=progress_for(quiet), overwrite=overwrite, executor=executor,
                     ray_options=ray_options, repeats=repeats, jobs=jobs)
    for line in summary_lines(metrics):
        typer.echo(line)
    typer.echo(f"run folder: {out}")
