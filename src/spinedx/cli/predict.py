"""`spinedx predict`: one case through every fold model of a run, with heatmap overlays (explain.DEFAULT_METHOD)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from spinedx.cli._app import command, fail


@command("predict")
def predict(
    model: Path = typer.Option(..., "--model", help="Run folder (spinedx cv) or model bundle (spinedx export)."),
    t1: Path | None = typer.Option(None, "--t1", help="T1-weighted sagittal series (DICOM folder/file, NIfTI, NRRD)."),
    t2: Path | None = typer.Option(None, "--t2", help="T2-weighted sagittal series the box is drawn on."),
    lesion_slices: str = typer.Option(..., "--lesion-slices", help='0-based T2 lesion slices, e.g. "7;8".'),
    box: str = typer.Option(..., "--box", help="Lesion box on T2 in pixels, x0,y0,x1,y1 (half-open)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for prediction.json and overlay PNGs."),
    t1_series_uid: str | None = typer.Option(None, "--t1-series-uid", "--t1-series",
                                             help="T1 SeriesInstanceUID to pick (in the folder or on the server)."),
    t2_series_uid: str | None = typer.Option(None, "--t2-series-uid", "--t2-series",
                                             help="T2 SeriesInstanceUID to pick (in the folder or on the server)."),
    register: bool | None = typer.Option(
        None, "--register/--no-register", help="Force the T2->T1 registration on/off (default: as the run)."
    ),
    patient_id: str = typer.Option("case", "--id", help="Name of the case in the outputs."),
    allow_missing_folds: bool = typer.Option(
        False, "--allow-missing-folds",
        help="Answer from the finished fold models when some are missing (recorded in prediction.json)."),
    dicomweb: str | None = typer.Option(None, "--dicomweb", help="Fetch the series from this DICOMweb server "
                                        "(with --study) instead of --t1/--t2; auth from SPINEDX_DICOMWEB_* variables."),
    study: str | None = typer.Option(None, "--study", help="StudyInstanceUID on the --dicomweb server."),
    store: bool = typer.Option(False, "--store", help="Send the SR and the overlays back to the server (STOW-RS)."),
    engine: str = typer.Option("torch", "--engine", help="torch (the fold models), or onnx (ONNX Runtime: a bundle's "
                               "model.onnx, or the same graph exported from the models); both fp32."),
    fold: list[int] | None = typer.Option(  # noqa: B008
        None, "--fold", metavar="K", help="Answer with fold model K only (repeatable): for a cohort patient, the "
        "model that held it out reproduces its out-of-fold probability."),
    allow_modality: list[str] | None = typer.Option(  # noqa: B008
        None, "--allow-modality", metavar="MODALITY",
        help="Read DICOM series of this image modality besides MR (e.g. CT); repeatable."),
    expect_digest: str | None = typer.Option(None, "--expect-digest", metavar="HEX",
                                             help="Refuse the model unless it is the bundle with this digest (the "
                                             "one spinedx export printed): pins the bundle a deployment validated."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out folder that is not an earlier "
                                   "prediction (an earlier prediction is replaced without it)."),
) -> None:
    """Probability of a malignant fracture for one case (ensemble of the run's fold models). Research use only.

    The case is preprocessed with the extraction settings the run recorded at training time.
    """
    from spinedx.predict import predict_case
    from spinedx.studyindex.header import allow_modality_option

    allow = allow_modality_option(allow_modality)
    if dicomweb is not None:
        from spinedx.interop.cli_support import predict_dicomweb

        problem = _dicomweb_conflict(t1, t2, study, bool(allow), overwrite, bool(fold))
        if problem or study is None:
            fail(problem or "give --study UID with --dicomweb")
            return
        if expect_digest is not None:
            from spinedx.interop.bundle import check_bundle_digest

            check_bundle_digest(model, expect_digest)  # before anything is fetched from the server
        res, lines = predict_dicomweb(model, dicomweb, study, lesion_slices, box, out, t1_series=t1_series_uid,
                                      t2_series=t2_series_uid, store=store, register=register, engine=engine)
        for line in lines:
            typer.echo(line)
    elif t1 is None or t2 is None or study is not None or store:
        fail("give --t1 and --t2 (files or folders), or --dicomweb URL --study UID [--store]")
        return
    else:
        res = predict_case(model, t1, t2, lesion_slices, box, out, t1_series_uid=t1_series_uid,
                           t2_series_uid=t2_series_uid, register=register, patient_id=patient_id,
                           allow_missing_folds=allow_missing_folds, engine=engine, allow_modality=allow,
                           overwrite=overwrite, expect_digest=expect_digest, folds=fold or None)
    _echo_result(res, out, expect_digest)


def _dicomweb_conflict(t1: Path | None, t2: Path | None, study: str | None, allow: bool, overwrite: bool,
                       fold: bool) -> str | None:
    """What is wrong with --dicomweb's options (one message), or None."""
    if t1 is not None or t2 is not None or study is None:
        return "with --dicomweb give --study UID (and optionally --t1-series/--t2-series), not --t1/--t2"
    if allow:
        return ("--allow-modality is not available with --dicomweb (the server's series are chosen as MR); "
                "retrieve the series and give --t1/--t2")
    if overwrite:
        return ("--overwrite is for --t1/--t2 cases; with --dicomweb choose a new or empty --out folder (an earlier "
                "prediction is replaced)")
    if fold:
        return ("--fold is for --t1/--t2 cases (checking a cohort patient's out-of-fold probability); retrieve the "
                "series and give --t1/--t2")
    return None


def _echo_result(res: Any, out: Path, expect_digest: str | None) -> None:
    """The prediction's lines: warnings and notes, the probability and the decision, the slices, what was written."""
    for line in (res.record.get("pair_check") or {}).get("warnings", []):  # e.g. pixel data longer than described
        typer.echo("warning: " + " ".join(str(line).split()), err=True)
    m = res.record["model"]
    if m["synthetic_note"]:
        typer.echo(f"note: the model was {m['synthetic_note']}")
    if m["missing_folds_note"]:
        typer.echo(f"WARNING: {m['missing_folds_note']}")
    if m["fold_selection_note"]:
        typer.echo(f"note: {m['fold_selection_note']}")
    if (m.get("oof_inference") or {}).get("note"):
        typer.echo(f"note: {m['oof_inference']['note']}")
    if m.get("bundle_digest"):
        typer.echo(f"model bundle digest {m['bundle_digest']}" + (" (as expected)" if expect_digest else ""))
    spread = res.record["spread"]
    how = (f"fold models {spread['min']:.3f}-{spread['max']:.3f}, sd {spread['std']:.3f}" if spread["n_models"] > 1
           else f"fold model {res.folds[0]} alone")
    typer.echo(f"p(malignant) = {res.probability:.3f} ({how}; {res.record['engine']} engine, "
               f"{res.record['inference']['precision']}) -> {res.call} at threshold {res.threshold:g}")
    rec = res.record
    if rec.get("decision_warning"):
        typer.echo(f"warning: {rec['decision_warning']}", err=True)
    reasons = "; ".join(r.replace("_", " ") for r in rec["refer_reasons"])
    typer.echo(f"decision: {rec['decision'].upper()}" + (f" ({reasons})" if reasons else "")
               + f"; p(malignant) {rec['probability']:.3f} ("
               + ("uncalibrated: no calibrator" if "calibration.json" in rec["decision_missing"] else "calibrated")
               + ")"
               + (f", conformal set {{{', '.join(rec['conformal_set'])}}} at alpha {rec['alpha']:g}"
                  if rec["conformal_set"] is not None else "")
               + (f" [{rec['decision_note']}]" if rec.get("decision_note") else ""))
    for s in res.record["slices"]:
        typer.echo(f"  slice {s['slice_index']}: {s['probability']:.3f}")
    typer.echo(f"written: {(Path(out) / 'prediction.json').resolve()} (+ {len(res.overlays)} overlay PNG)")
    expl = res.record.get("explanation")
    if expl:
        typer.echo(f"heatmaps: {expl['caption']}, {expl['aggregation']}")
    if res.dicom is not None:
        typer.echo(f"DICOM: {res.dicom.describe()}")
    typer.echo("research use only, not for clinical decisions")
