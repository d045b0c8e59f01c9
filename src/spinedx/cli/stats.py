"""``spinedx stats``: readers vs model (Table 2), imaging features (Table 1), error analysis."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from spinedx.cli._app import app, command  # noqa: F401

if TYPE_CHECKING:  # only for annotations: rich and the study code are imported inside the command
    from rich.console import Console

    from spinedx.evaluation.study import StudyResult


def _fmt(est: float, low: float, high: float, sep: str = " ") -> str:
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "-"
    if sep == "\n":  # two lines in a narrow table cell
        return f"{est:.2f}\n{low:.2f}-{high:.2f}"
    return f"{est:.2f} ({low:.2f}-{high:.2f})"


def _odds(est: float, low: float, high: float) -> str:
    """An odds ratio with its interval; ``inf`` where a zero cell makes it unbounded."""
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "-"

    def num(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.2f}"

    return f"{num(est)} ({num(low)}-{num(high)})"


def _p(p: float) -> str:
    from spinedx.common import format_p

    text = format_p(p, space=False)
    return "-" if text == "n/a" else text


@command("stats")
def stats(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV (patient_id, label, feature_*, reader_*)."),
    run: Path | None = typer.Option(None, "--run", help="CV run folder (oof_patients.csv, splits.json, config.yaml)."),
    reader: str | None = typer.Option(None, "--reader", help="Rater for the error analysis (default: the least "
                                         "experienced reader, reader_r1 if present; 'model' allowed)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN_DIR/stats with --run)."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="Bootstrap resamples of the AUC intervals."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace statistics in the output folder made from "
                                   "other inputs (cohort, run, reader, --bootstrap, reader study); the same inputs "
                                   "need none."),
    study: Path | None = typer.Option(None, "--study", help="A reader study folder planned on this cohort and aided "
                                      "by this run's model: its unaided and aided reads are analysed (MRMC, per "
                                      "reader) for the report's reader-study section. Needs --run."),
    simulated_study: bool = typer.Option(False, "--simulated-study", help="Synthetic cohort only: the simulated "
                                         "readers read unaided, then aided by the run's out-of-fold probabilities "
                                         "(a simulation of reliance, labelled SIMULATED). Needs --run."),
) -> None:
    """Study statistics of Yeh et al. 2022: Table 2 with McNemar tests, Table 1 with Fisher tests, a logistic
    regression on the features, and the error analysis of one reader; with --study (or --simulated-study) the
    reader study, unaided vs aided."""
    from rich.console import Console

    from spinedx.common import SYNTHETIC_BANNER
    from spinedx.errors import SpinedxError
    from spinedx.evaluation.study import HOLM_NOTE, ReaderStudyInput, run_study

    if study is not None or simulated_study:
        if study is not None and simulated_study:
            raise SpinedxError("give a study folder or ask for the simulated study, not both", where="--study")
        if run is None:
            raise SpinedxError("a reader study is set beside the run's model: give --run RUN",
                               where="--study" if study is not None else "--simulated-study")
    console = Console()
    reader_study: ReaderStudyInput | None = None
    if study is not None and run is not None:
        from spinedx.readers.study_analysis import study_for_stats

        reader_study = study_for_stats(cohort, run, study)
    elif simulated_study and run is not None:
        from spinedx.readers.study_analysis import simulated_for_stats
        from spinedx.synth.aided import simulate_reader_study

        reader_study = simulated_for_stats(cohort, run, simulate_reader_study)
    with console.status("Computing study statistics (the AUC bootstraps take a few seconds)..."):
        res = run_study(cohort, out, run, reader, bootstrap_resamples=bootstrap, overwrite=overwrite,
                        reader_study=reader_study)
    synthetic = bool(res.summary.get("synthetic"))
    if synthetic:
        console.print(f"[bold]{SYNTHETIC_BANNER.upper()}[/bold]")
    if run is not None:
        _print_repeats(console, run)
    _print_table2(console, res)
    _print_mcnemar(console, res, synthetic)
    _print_table1(console, res)
    _print_logistic(console, res)
    _print_error_analysis(console, res)
    _print_reader_study(console, res)
    console.print(HOLM_NOTE + ".")
    if synthetic:
        console.print(f"[bold]{SYNTHETIC_BANNER}[/bold]")
    console.print(f"wrote {len(res.files)} files to {res.out_dir}")


def _print_repeats(console: Console, run: Path) -> None:
    from spinedx.runfolder import RunFolder

    plan = RunFolder(run).read_repeats()
    if plan is not None:
        console.print(f"model: repeat 0 of {plan['repeats']} (seed {plan['seeds'][0]}: the run folder's own folds); "
                      "the spread across repeats is in metrics.json (repeats) and the report")


def _print_table2(console: Console, res: StudyResult) -> None:
    from rich import box
    from rich.table import Table

    t2 = Table(title="Table 2: readers and model (95% Wilson intervals)", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("rater", "n (miss)", "TP/TN/FP/FN", "sens.", "spec.", "acc."):
        t2.add_column(col, justify="left" if col == "rater" else "right", no_wrap=True)
    for r in res.table2.to_dict(orient="records"):
        t2.add_row(r["rater"], f"{r['n']} ({r['n_missing']})", f"{r['tp']}/{r['tn']}/{r['fp']}/{r['fn']}",
                   _fmt(r["sensitivity"], r["sensitivity_low"], r["sensitivity_high"], "\n"),
                   _fmt(r["specificity"], r["specificity_low"], r["specificity_high"], "\n"),
                   _fmt(r["accuracy"], r["accuracy_low"], r["accuracy_high"], "\n"))
    if len(res.table2):
        console.print(t2)


def _print_mcnemar(console: Console, res: StudyResult, synthetic: bool) -> None:
    from rich.table import Table

    from spinedx.common import SYNTHETIC_ILLUSTRATION

    mc = Table(title="McNemar tests (b: A right, B wrong; c: the reverse)"
               + (" - simulated readers: an illustration of the method" if synthetic else ""))
    for col in ("rater A", "rater B", "group", "n", "b", "c", "test", "p", "p (Holm)"):
        mc.add_column(col, no_wrap=col.startswith("rater"))
    for r in res.mcnemar.to_dict(orient="records"):
        mc.add_row(r["rater_a"], r["rater_b"], r["group"], str(r["n"]), str(r["b"]), str(r["c"]), r["test"],
                   _p(r["p_value"]), _p(r["p_holm"]))
    if len(res.mcnemar):
        console.print(mc)
        if synthetic:
            console.print(f"note: {SYNTHETIC_ILLUSTRATION}")


def _print_table1(console: Console, res: StudyResult) -> None:
    from rich.table import Table

    from spinedx.evaluation.study import ALPHA

    sig = res.table1[res.table1["p_value"] < ALPHA]
    t1 = Table(title=f"Table 1: features with Fisher p < {ALPHA} ({len(sig)} of {len(res.table1)}; "
               f"{int((res.table1['p_holm'] < ALPHA).sum())} after Holm)")
    for col in ("feature", "malignant", "benign", "p", "p (Holm)", "odds ratio (95% CI)"):
        t1.add_column(col)
    for r in sig.to_dict(orient="records"):
        t1.add_row(r["description"], f"{r['malignant_n']}/{r['malignant_total']} ({r['malignant_pct']:.0f}%)",
                   f"{r['benign_n']}/{r['benign_total']} ({r['benign_pct']:.0f}%)", _p(r["p_value"]),
                   _p(r["p_holm"]), _odds(r["odds_ratio"], r["or_low"], r["or_high"]))
    if len(res.table1):
        console.print(t1)
        console.print("odds ratio: conditional maximum likelihood with its exact conditional 95% interval")


def _print_logistic(console: Console, res: StudyResult) -> None:
    if res.logistic is None:
        return
    ins, ev = res.logistic["in_sample"], res.logistic["evaluation"]
    console.print(f"Logistic regression on {len(res.logistic['features'])} features "
                  f"({res.logistic['method']}, separation: {res.logistic['separation']}):")
    console.print(f"  in-sample accuracy (fitted and scored on the same {ins['n']} patients, as the paper "
                  f"reported): {_fmt(ins['accuracy'], ins['accuracy_low'], ins['accuracy_high'])} "
                  f"(paper: {ins['paper_accuracy']:.2f})")
    console.print(f"  out-of-fold accuracy ({ev['folds_source']}): "
                  f"{_fmt(ev['accuracy'], ev['accuracy_low'], ev['accuracy_high'])}, "
                  f"AUC {_fmt(ev['auc'], ev['auc_low'], ev['auc_high'])}")


def _print_error_analysis(console: Console, res: StudyResult) -> None:
    from rich.table import Table

    from spinedx.evaluation.study import ALPHA

    if res.error_analysis is None:
        return
    ea = res.error_analysis[res.error_analysis["p_value"] < ALPHA]
    te = Table(title=f"Error analysis of {res.error_reader}: features with Fisher p < {ALPHA}")
    for col in ("comparison", "feature", "errors", "correct", "p", "p (Holm)"):
        te.add_column(col)
    for r in ea.to_dict(orient="records"):
        te.add_row(r["comparison"], r["description"], f"{r['group1_n']}/{r['group1_total']}",
                   f"{r['group2_n']}/{r['group2_total']}", _p(r["p_value"]), _p(r["p_holm"]))
    console.print(te)


def _print_reader_study(console: Console, res: StudyResult) -> None:
    """One line of the reader study (the report shows the rest); SIMULATED when it is."""
    from spinedx.readers.study_analysis import headline_line

    if res.reader_study is not None:
        console.print(headline_line(res.reader_study), markup=False, soft_wrap=True)
