"""`spinedx readers ...`: plan a blinded reader study and export its reads (research use only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from spinedx.cli._app import app, fail
from spinedx.errors import SpinedxError
from spinedx.fsutil import Terminated, describe_os_error, interrupt_exit_code

readers_app = typer.Typer(name="readers", no_args_is_help=True, pretty_exceptions_enable=False,
                          help="Reader studies: plan a blinded study (unaided and aided reads), export its reads.")
app.add_typer(readers_app, name="readers")


def _command(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``readers_app.command`` with the rule of every spinedx command: user errors -> one ``error:`` line, exit 2;
    Ctrl-C 130, SIGTERM 143 (as ``spinedx.cli._app.command``)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except SpinedxError as exc:
                fail(exc.one_line(), exc.exit_code)
            except (KeyboardInterrupt, Terminated) as exc:
                what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
                fail(f"{what}; nothing half-written was left: rerun the same command", interrupt_exit_code(exc))
            except OSError as exc:
                fail(describe_os_error(exc))

        readers_app.command(name)(wrapper)
        return fn

    return deco


@_command("plan")
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


@_command("export")
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
