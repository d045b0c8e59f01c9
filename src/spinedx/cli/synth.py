"""`spinedx synth`: write the synthetic cohort (DICOM series + cohort.csv)."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command


def _identity(out: Path) -> int | None:
    """The folder's inode (atomic_dir swaps in a new folder, so a finished cohort has a new one), None if absent."""
    try:
        return out.stat().st_ino
    except OSError:
        return None


def _after_interrupt(out: Path, before: int | None) -> str:
    """What an interrupted synth left at ``out``, said exactly (the generic message promised kept outputs)."""
    from spinedx.fsutil import TMP_MARK

    left = [p for p in out.parent.glob(f".{out.name}{TMP_MARK}*")] if out.parent.is_dir() else []
    tail = f"; a temporary folder was left ({left[0]}): delete it" if left else ", and no temporary folder is left"
    if _identity(out) is None:
        return f"nothing was written ({out} does not exist){tail}; synth does not resume: rerun the command"
    if not any(out.iterdir()):
        return f"nothing was written ({out} is empty){tail}; synth does not resume: rerun the command"
    if _identity(out) == before:
        return (f"nothing was written: {out} holds what it held before, unchanged{tail}; synth does not resume: "
                "rerun the command")
    return f"the cohort was complete before the interrupt arrived: {out} holds it (cohort.csv, synth.json){tail}"


@command()
def synth(
    out_dir: Path = typer.Argument(..., help="Output folder: cohort.csv, synth.json, dicom/<patient>/{T1,T2}/."),  # noqa: B008 (Typer idiom)
    patients: int = typer.Option(190, "--patients", help="Number of patients."),
    malignant: int = typer.Option(50, "--malignant", help="How many of them have a malignant fracture."),
    seed: int = typer.Option(0, "--seed", help="Seed: same seed, same files byte for byte."),
    difficulty: str = typer.Option("medium", "--difficulty", help="easy | medium | hard (see docs/synth.md)."),
    preview: bool = typer.Option(False, "--preview", help="Also write OUT_DIR/preview.png (contact sheet)."),
    workers: int = typer.Option(1, "--workers", help="Processes rendering patients in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the whole content of a non-empty OUT_DIR (else it is refused)."),
) -> None:
    """Make a synthetic cohort of sagittal T1W/T2W spine MRI with benign and malignant fractures.

    Every patient and every reader call is simulated (cohort.csv column synthetic = 1). The cohort is
    written into a temporary sibling folder that replaces OUT_DIR only when complete.
    """
    import time

    import pandas as pd

    from spinedx.cli._app import fail
    from spinedx.fsutil import Terminated, interrupt_exit_code
    from spinedx.synth import generate_cohort
    from spinedx.synth.seeds import EVALUATION_SEED, TUNING_SEEDS

    t0 = time.perf_counter()
    before = _identity(Path(out_dir))
    try:
        manifest = generate_cohort(
            out_dir, n_patients=patients, n_malignant=malignant, seed=seed, difficulty=difficulty,
            preview=preview, workers=workers, progress=True, overwrite=overwrite,
        )
    except (KeyboardInterrupt, Terminated) as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
        fail(f"{what}; {_after_interrupt(Path(out_dir), before)}", interrupt_exit_code(exc))
    df = pd.read_csv(manifest)
    n_mal = int((df.label == "malignant").sum())
    typer.echo(
        f"wrote {len(df)} synthetic patients ({n_mal} malignant, {len(df) - n_mal} benign), difficulty "
        f"{difficulty}, seed {seed} in {time.perf_counter() - t0:.1f} s"
    )
    typer.echo(f"manifest: {manifest}")
    typer.echo(f"images:   {Path(out_dir) / 'dicom'}")
    if preview:
        typer.echo(f"preview:  {Path(out_dir) / 'preview.png'}")
    if seed in TUNING_SEEDS:
        typer.echo(f"note: seed {seed} was used to tune the simulation or training; report figures on an untouched "
                   f"seed such as {EVALUATION_SEED} (docs/synth.md)")
