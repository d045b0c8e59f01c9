"""The self-contained HTML study report of a run folder (``spinedx report``).

One file, ``RUN_DIR/report.html``, with every figure embedded as a base64 PNG and the CSS
inline, so it can be mailed or archived and opened offline. Its sections follow the paper
(Yeh et al. 2022): cohort summary, Table 1 (imaging features, Fisher exact test), Table 2
(readers and model, Wilson intervals, McNemar tests), the model's per-patient ROC curve with
the readers' operating points, confusion matrices, per-fold AUCs, calibration, a gallery of
true/false positive/negative cases with Grad-CAM heatmaps (the paper's Figs. 3-6) and the
run's provenance. The tables are also written as CSV files beside the report.

:mod:`spinedx.report.loading` reads and checks the inputs; each section is built by its own module
in :mod:`spinedx.report.sections`; this module renders the page and writes the files atomically.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from spinedx.errors import SpinedxError
from spinedx.fsutil import atomic_path, atomic_write_text
from spinedx.report.loading import SECTIONS, load_inputs
from spinedx.report.page import Page
from spinedx.report.sections import build_all
from spinedx.report.sections.gallery import GALLERY_GROUPS

__all__ = ["GALLERY_GROUPS", "SECTIONS", "build_report"]


_META = re.compile(r'<meta name="spinedx-report-(run|tables)" content="([^"]*)">')
# reports written before the meta tags: the header line names the run, the provenance section the tables
_OLD_RUN = re.compile(r'<div class="sub">[^<]*? &middot; run (.*?) &middot; made ')
_OLD_TABLES = re.compile(r"Tables as CSV beside this report: ([^<]*?)\.</p>")


def _earlier_report(path: Path) -> tuple[str, list[str]] | None:
    """The run and the CSV tables of the spinedx report at ``path``; None when the file is no spinedx report."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if "<title>spinedx study report</title>" not in text:
        return None
    meta = dict(_META.findall(text[:8192]))
    if "run" in meta:
        return html.unescape(meta["run"]), [t for t in html.unescape(meta.get("tables", "")).split("/") if t]
    run, tables = _OLD_RUN.search(text), _OLD_TABLES.search(text)
    if run is None:
        return None
    return html.unescape(run.group(1)), html.unescape(tables.group(1)).split(", ") if tables else []


def _check_target(out_path: Path, run_dir: Path, overwrite: bool) -> list[str]:
    """Refuse to replace a file that is not this run's report unless ``overwrite``; the earlier report's tables.

    Returns:
        The CSV table names of the report being replaced (to remove those the new report does not write).
    """
    if not out_path.is_file():
        return []
    earlier = _earlier_report(out_path)
    if earlier is None:
        if not overwrite:
            raise SpinedxError("exists and is not a spinedx report; pass --overwrite to replace it, or choose "
                               "another --out", where=str(out_path))
        return []
    run, tables = earlier
    if run != str(run_dir.resolve()) and not overwrite:
        raise SpinedxError(f"holds the report of another run ({run}); pass --overwrite to replace it, or choose "
                           "another --out", where=str(out_path))
    return tables


def build_report(
    run_dir: str | Path,
    cohort: str | Path | None = None,
    *,
    out: str | Path | None = None,
    gallery_per_group: int = 2,
    reader: str | None = None,
    bootstrap_resamples: int = 2000,
    progress: bool = True,
    allow_missing_folds: bool = False,
    allow_changed_patches: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the self-contained HTML study report of a run folder.

    Runs the study statistics (:func:`spinedx.evaluation.study.run_study`) into ``RUN_DIR/stats``
    when they are missing and a cohort manifest is given or recorded by the run. Without
    features or readers the report shows the model-only sections and says what is missing.

    Args:
        run_dir: run folder written by ``spinedx cv``.
        cohort: the cohort manifest (``cohort.csv``); found from the run when omitted.
        out: output HTML path (default ``RUN_DIR/report.html``); CSV tables go beside it.
        gallery_per_group: cases shown per gallery group (TP, TN, FN, FP).
        reader: reader column for the error analysis when statistics are computed.
        bootstrap_resamples: bootstrap resamples of the AUC intervals of the statistics.
        progress: show progress bars.
        allow_missing_folds: make the report when some fold models are missing (a banner says so; their
            gallery cases have no heatmap); refused by default.
        allow_changed_patches: make the report when the patches file changed since training (a banner says
            so; the gallery shows no images); refused by default.
        overwrite: replace a file at ``out`` that is not this run's report (another run's report, any other
            file); without it such a file is refused before any work. This run's own report is rewritten, and
            the CSV tables it had that the new one lacks are removed (they would describe another report).

    Returns:
        The path of the written report.

    Raises:
        SpinedxError: see :func:`spinedx.report.loading.load_inputs`.
    """
    import jinja2

    from spinedx.provenance import provenance

    run_dir = Path(run_dir)
    out_path = Path(out) if out is not None else run_dir / "report.html"
    if out_path.is_dir():
        raise IsADirectoryError(21, "a folder stands where the report is to be written; pass a file name to --out",
                                str(out_path))
    earlier_tables = _check_target(out_path, run_dir, overwrite)
    inputs = load_inputs(run_dir, cohort, reader=reader, bootstrap_resamples=bootstrap_resamples,
                         allow_missing_folds=allow_missing_folds, allow_changed_patches=allow_changed_patches,
                         need_patches=gallery_per_group > 0)
    page = Page(title="spinedx study report", run_dir=str(inputs.run.path.resolve()), created=provenance()["created"],
                gallery_per_group=gallery_per_group, progress=progress)
    build_all(inputs, page)
    page.notes = inputs.notes
    prefix = out_path.with_suffix("")
    page.csv_files = [f"{prefix.name}_{name}.csv" for name in page.tables]

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("spinedx.report", "templates"), autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    html_text = env.get_template("report.html").render(r=page, sections=SECTIONS)
    # The tables first, the page last: a report.html present means its tables are complete.
    for name, df in page.tables.items():
        with atomic_path(Path(f"{prefix}_{name}.csv")) as tmp:
            df.to_csv(tmp, index=False)
    atomic_write_text(out_path, html_text)
    for name in set(earlier_tables) - set(page.csv_files):
        stale = out_path.parent / name
        if stale.name == name and stale.suffix == ".csv" and stale.is_file():  # a bare file name, never a path
            stale.unlink()
    return out_path
