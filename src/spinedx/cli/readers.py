"""``spinedx readers``: reader studies (``analyze``: the multi-reader multi-case analysis of READS.csv)."""

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
    help="Reader studies: the multi-reader multi-case (MRMC) analysis of readers' ratings (research use only).",
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
    reads: Path = typer.Argument(..., help="READS.csv: case_id, reader, modality, score [, call]."),
    truth: Path = typer.Option(..., "--truth", help="TRUTH.csv: case_id, truth (1 = positive, 0 = negative)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full result here (JSON, atomically)."),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level of every interval."),
    model_scores: Path | None = typer.Option(None, "--model-scores",
                                             help="CSV case_id, score of a standalone model: compared with the "
                                                  "readers of each modality (1T-RRRC)."),
    threshold: float | None = typer.Option(None, "--threshold",
                                           help="Without a call column: call positive when score >= this (for "
                                                "sensitivity, specificity, McNemar). Default: no calls."),
    complete_cases_only: bool = typer.Option(False, "--complete-cases-only",
                                             help="Analyse only the cases every reader read in every modality "
                                                  "(else incomplete reads are refused)."),
    readers: str | None = typer.Option(None, "--readers",
                                       help="The study's readers, comma-separated: reads by others are refused and a "
                                            "listed reader without reads counts as missing."),
) -> None:
    """Multi-reader multi-case analysis: Obuchowski-Rockette with Hillis's ddf (RRRC, FRRC, RRFC) of empirical AUCs
    with jackknife covariances, the readers' sensitivity and specificity, McNemar per reader, and a standalone model
    vs the readers (docs/readers.md)."""
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
