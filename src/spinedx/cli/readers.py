"""``spinedx readers``: reader studies (``plan`` a blinded study, ``export`` its reads, ``analyze`` them: the
multi-reader multi-case analysis of READS.csv)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from spinedx.cli._app import app
from spinedx.cli._app import command as _command
from spinedx.errors import SpinedxError

readers_app = typer.Typer(
    name="readers",
    help="Reader studies: plan a blinded study (unaided and aided reads), export its reads, and the multi-reader "
         "multi-case (MRMC) analysis of readers' ratings (research use only).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(readers_app, name="readers")


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ``spinedx readers`` sub-command with the CLI's error rule (:func:`spinedx.cli._app.command`)."""
    return _command(*args, target=readers_app, interrupted="nothing was written (outputs are written whole or not "
                    "at all): rerun the same command", **kwargs)


@command("analyze")
def analyze(
    reads: Path = typer.Argument(..., help="READS.csv (case_id, reader, modality, score [, call]), or a study "
                                 "folder (spinedx readers plan): its reads and truth."),
    truth: Path | None = typer.Option(None, "--truth", help="TRUTH.csv: case_id, truth (1 = positive, 0 = "
                                      "negative); not with a study folder (it holds its truth)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full result here (JSON, atomically)."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level of every interval."),
    model_scores: Path | None = typer.Option(None, "--model-scores",
                                             help="CSV case_id, score of a standalone model: compared with the "
                                                  "readers of each modality (1T-RRRC). READS.csv form only."),
    threshold: float | None = typer.Option(None, "--threshold",
                                           help="Without a call column: call positive when score >= this (for "
                                                "sensitivity, specificity, McNemar). Default: no calls."),
    complete_cases_only: bool = typer.Option(False, "--complete-cases-only",
                                             help="Analyse only the cases every reader read in every modality "
                                                  "(else incomplete reads are refused)."),
    readers: str | None = typer.Option(None, "--readers",
                                       help="The study's readers, comma-separated: reads by others are refused and a "
                                            "listed reader without reads counts as missing. READS.csv form only "
                                            "(a study folder lists its readers)."),
    model: Path | None = typer.Option(None, "--model", help="Study folder form: the run folder that aided the "  # noqa: B008
                                      "reads (default: found from the study's kept answers); compared with the "
                                      "readers through its out-of-fold probabilities."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Study folder form: the study's manifest, when it "  # noqa: B008
                                       "moved since planning (same sha256)."),
    error_reader: str | None = typer.Option(None, "--error-reader", help="Study folder form: whose errors to "
                                            "analyse (default: the study's last reader, the least experienced)."),
) -> None:
    """Multi-reader multi-case analysis: Obuchowski-Rockette with Hillis's ddf (RRRC, FRRC, RRFC) of empirical AUCs
    with jackknife covariances, the readers' sensitivity and specificity, McNemar per reader, and a standalone model
    vs the readers (docs/readers.md). Given a study folder: its reads and truth, the model that aided them, and the
    least experienced reader's errors, unaided -> aided."""
    from spinedx.readers.analysis import write_result_json

    if reads.is_dir() and (reads / "study.json").is_file():
        given = [name for name, v in (("--truth", truth), ("--model-scores", model_scores), ("--readers", readers),
                                      ("--threshold", threshold)) if v is not None]
        if given:
            raise SpinedxError(f"a study folder holds its truth, readers, calls and model: drop {', '.join(given)} "
                               "(or analyse exported CSV files)", where=given[0])
        from spinedx.readers.study_analysis import analyze_study

        res = analyze_study(reads, cohort=cohort, model=model, alpha=alpha, complete_cases_only=complete_cases_only,
                            error_reader=error_reader)
        for line in res.summary_lines():
            typer.echo(line)
        if json_out is not None:
            write_result_json(res, json_out)
            typer.echo(f"wrote {json_out}")
        return
    given = [name for name, v in (("--model", model), ("--cohort", cohort), ("--error-reader", error_reader))
             if v is not None]
    if given:
        raise SpinedxError(f"{', '.join(given)} belong to the study folder form (spinedx readers analyze STUDY); "
                           "with READS.csv give --model-scores", where=given[0])
    if truth is None:
        if reads.is_dir():
            raise SpinedxError("is a folder but not a study folder (no study.json); give a study folder or READS.csv "
                               "with --truth TRUTH.csv", where=str(reads))
        raise SpinedxError("READS.csv needs its truth: --truth TRUTH.csv (case_id, truth)", where="--truth")
    _analyze_csv(reads, truth, json_out, alpha, model_scores, threshold, complete_cases_only, readers)


def _analyze_csv(reads: Path, truth: Path, json_out: Path | None, alpha: float, model_scores: Path | None,
                 threshold: float | None, complete_cases_only: bool, readers: str | None) -> None:
    from spinedx.readers.analysis import (
        analyze_reads,
        file_inputs,
        load_model_scores,
        load_reads,
        load_truth,
        write_result_json,
    )

    reader_list = None
    if readers is not None:
        reader_list = [r.strip() for r in readers.split(",") if r.strip()]
        if not reader_list:
            raise SpinedxError("no reader names given", where="--readers")
    res = analyze_reads(
        load_reads(reads), load_truth(truth),
        model_scores=load_model_scores(model_scores) if model_scores is not None else None, alpha=alpha,
        threshold=threshold, complete_cases_only=complete_cases_only, readers=reader_list, reads_name=str(reads),
        truth_name=str(truth), model_name=str(model_scores) if model_scores is not None else "model scores",
    )
    res.inputs = file_inputs(reads, truth, model_scores)
    for line in res.summary_lines():
        typer.echo(line)
    if json_out is not None:
        write_result_json(res, json_out)
        typer.echo(f"wrote {json_out}")


@command("plan")
def plan(
    cohort: Path = typer.Argument(..., help="Cohort manifest: every case with T1, T2, lesion slices, box and label."),  # noqa: B008
    readers: str = typer.Option(..., "--readers", help="Reader names, comma-separated, e.g. senior,r4,r1."),
    design: str = typer.Option(..., "--design", help="sequential (unaided, call locked, then aided) or crossover "
                               "(two sessions, half the cases aided in each, counterbalanced)."),
    washout_days: int | None = typer.Option(None, "--washout-days", help="Crossover: days between a reader's two "
                                            "sessions (default 28)."),
    seed: int = typer.Option(..., "--seed", help="Seeds the case numbers, reading orders and halves."),
    out: Path = typer.Option(..., "--out", help="Study folder to create (never overwritten)."),  # noqa: B008
    features: bool = typer.Option(False, "--features/--no-features",
                                  help="Also ask the 15 imaging features with every read."),
) -> None:
    """Plan a reader study: opaque case numbers, each reader's reading lists, one access token per reader."""
    from spinedx.readers.plan import describe_plan, plan_study

    study = plan_study(cohort, readers, design, seed, out, washout_days=washout_days, features=features)
    for line in describe_plan(study):
        typer.echo(line)


@command("export")
def export(
    study: Path = typer.Argument(..., help="Study folder (spinedx readers plan)."),  # noqa: B008
    out: Path = typer.Option(..., "--out", help="Folder for reads.csv and truth.csv."),  # noqa: B008
    cohort: Path | None = typer.Option(None, "--cohort", help="The study's manifest, when it moved since "  # noqa: B008
                                       "planning (same sha256)."),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete",
                                          help="Export although planned reads are missing."),
) -> None:
    """Write the reads (latest corrections applied) and the truth for `spinedx readers analyze`."""
    from spinedx.readers.reads import export_reads

    res = export_reads(study, out, cohort=cohort, allow_incomplete=allow_incomplete)
    typer.echo(f"reads: {res.reads_csv} ({res.n_reads} reads; {res.completeness.describe()}; "
               f"{res.corrected} corrected)")
    typer.echo(f"truth: {res.truth_csv} ({res.n_cases} cases, 1 = malignant)")
    if res.completeness.read < res.completeness.planned:
        typer.echo("warning: the study is incomplete (--allow-incomplete): the analysis sees only these reads",
                   err=True)
