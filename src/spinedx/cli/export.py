"""`spinedx export`: a run's fold models as a self-contained, checksummed model bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from spinedx.cli._app import command, fail


@command("export")
def export(
    run: Path = typer.Argument(..., help="Finished run folder written by `spinedx cv`."),  # noqa: B008
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (new, empty, or an earlier bundle)."),
    fmt: str = typer.Option("torch", "--format", help="torch (state dicts), or onnx (also model.onnx, checked "
                            "against torch)."),
    name: str | None = typer.Option(None, "--name", help="Bundle name (default spinedx-<backbone>-<fingerprint>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out folder that is not an earlier bundle "
                                   "(never a run folder; an earlier bundle is replaced without it)."),
) -> None:
    """Export a run as a model bundle, accepted wherever a run is (predict, serve, the API). Research use only."""
    from spinedx.inference import export_bundle
    from spinedx.interop.bundle import SUMS

    if fmt not in ("torch", "onnx"):
        fail(f"--format must be torch or onnx, got {fmt!r}")
    info = export_bundle(run, out, onnx=fmt == "onnx", name=name, overwrite=overwrite)
    doc = info.doc
    perf = doc.get("performance") or {}
    typer.echo(f"bundle {doc['name']}: {len(doc['model']['folds'])} {doc['model']['backbone']} fold models, "
               f"fingerprint {info.fingerprint[:16]}...")
    if perf.get("auc") is not None:
        note = " (optimistic: early stopping on the validation folds)" if doc["optimistic"] else ""
        typer.echo(f"cross-validated patient AUC {perf['auc']:.3f} (95% CI {perf['auc_low']:.3f}-"
                   f"{perf['auc_high']:.3f}), n={perf['n']}{note}")
    if info.onnx is not None:
        chk = doc["model"]["onnx_check"]
        typer.echo(f"ONNX: {info.onnx.name} (opset {chk['opset']}), ONNX Runtime vs the torch engine max |diff| "
                   f"{chk['max_abs_diff_vs_torch']:.1e} on {chk['n_random_patches']} random patches")
    tta = doc["model"].get("test_time_augmentation") or {}
    if tta.get("n_views", 1) > 1:
        where = " (in model.onnx too)" if info.onnx is not None else ""
        typer.echo(f"test-time augmentation {tta['name']}: each probability is the mean over the patch and "
                   f"{tta['n_views'] - 1} fixed affine views{where}")
    if doc.get("synthetic"):
        typer.echo("synthetic cohort, simulated readers: the models were trained on synthetic images")
    if doc.get("decision_files_note"):  # a run made before issue 20's decision files
        typer.echo(f"warning: {doc['decision_files_note']}", err=True)
    elif doc.get("decision_files"):
        typer.echo(f"decision files: {', '.join(doc['decision_files'])} (the bundle decides like its run)")
    typer.echo(f"written: {info.path.resolve()} ({len(info.files)} files, checksums in {SUMS})")
    typer.echo(f"bundle digest {info.digest} (sha256 of {SUMS}): pin it with predict/serve --expect-digest")
    typer.echo("research use only, not for clinical decisions")
