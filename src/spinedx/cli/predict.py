"""`spinedx predict`: one case through every fold model of a run, with Grad-CAM overlays."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command


@command("predict")
def predict(
    model: Path = typer.Option(..., "--model", help="Run folder written by `spinedx cv` (its fold models)."),
    t1: Path = typer.Option(..., "--t1", help="T1-weighted sagittal series (DICOM folder/file, NIfTI, NRRD)."),
    t2: Path = typer.Option(..., "--t2", help="T2-weighted sagittal series the box is drawn on."),
    lesion_slices: str = typer.Option(..., "--lesion-slices", help='0-based T2 lesion slices, e.g. "7;8".'),
    box: str = typer.Option(..., "--box", help="Lesion box on T2 in pixels, x0,y0,x1,y1 (half-open)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for prediction.json and overlay PNGs."),
    t1_series_uid: str | None = typer.Option(None, "--t1-series-uid", help="T1 SeriesInstanceUID to pick."),
    t2_series_uid: str | None = typer.Option(None, "--t2-series-uid", help="T2 SeriesInstanceUID to pick."),
    register: bool | None = typer.Option(
        None, "--register/--no-register", help="Force the T2->T1 registration on/off (default: as the run)."
    ),
    patient_id: str = typer.Option("case", "--id", help="Name of the case in the outputs."),
    allow_missing_folds: bool = typer.Option(
        False, "--allow-missing-folds",
        help="Answer from the finished fold models when some are missing (recorded in prediction.json)."),
) -> None:
    """Probability of a malignant fracture for one case (ensemble of the run's fold models). Research use only.

    The case is preprocessed with the extraction settings the run recorded at training time.
    """
    from spinedx.predict import predict_case

    res = predict_case(model, t1, t2, lesion_slices, box, out, t1_series_uid=t1_series_uid,
                       t2_series_uid=t2_series_uid, register=register, patient_id=patient_id,
                       allow_missing_folds=allow_missing_folds)
    m = res.record["model"]
    if m["synthetic_note"]:
        typer.echo(f"note: the model was {m['synthetic_note']}")
    if m["missing_folds_note"]:
        typer.echo(f"WARNING: {m['missing_folds_note']}")
    spread = res.record["spread"]
    typer.echo(f"p(malignant) = {res.probability:.3f} (fold models {spread['min']:.3f}-{spread['max']:.3f}, "
               f"sd {spread['std']:.3f}) -> {res.call} at threshold {res.threshold:g}")
    for s in res.record["slices"]:
        typer.echo(f"  slice {s['slice_index']}: {s['probability']:.3f}")
    typer.echo(f"written: {(Path(out) / 'prediction.json').resolve()} (+ {len(res.overlays)} overlay PNG)")
    typer.echo("research use only, not for clinical decisions")
