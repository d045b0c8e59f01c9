"""The main job (``spinedx demo``): synthetic cohort -> patches -> cross-validation -> statistics -> report.

Runs the whole study of Yeh et al. 2022 on the default synthetic cohort (190 patients, 50 malignant,
as in the paper) in one call and ends with the report's path and the key metrics (the model's
sensitivity, specificity, accuracy and AUC with 95% intervals against the three readers: the
paper's Table 2). Every stage writes into ``OUT_DIR`` and is skipped when its outputs are already
complete, so an interrupted demo resumes where it stopped (the cross-validation also resumes
fold by fold). ``OUT_DIR/demo.json`` records the settings and the stages done.

Layout::

    OUT_DIR/cohort/    cohort.csv, synth.json, dicom/<patient>/{T1,T2}/   (spinedx synth)
    OUT_DIR/patches/   patches.npz, extract.json                         (spinedx extract)
    OUT_DIR/run/       config.yaml, oof_*.csv, metrics.json, folds/      (spinedx cv)
    OUT_DIR/run/stats/ table2_performance.csv, mcnemar.csv, ...          (spinedx stats --simulated-study)
                       reader_study.json, reader_study_*.csv: the SIMULATED reader study (unaided -> aided)
    OUT_DIR/run/report.html                                              (spinedx report)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx import RESEARCH_USE_ONLY
from spinedx.common import SYNTHETIC_BANNER
from spinedx.errors import SpinedxError
from spinedx.fsutil import atomic_write_text
from spinedx.synth.seeds import EVALUATION_SEED

if TYPE_CHECKING:
    from spinedx.evaluation.progress import CVProgress

#: The paper's cohort: 190 patients, 50 malignant.
PAPER_PATIENTS = 190
PAPER_MALIGNANT = 50
STAGES = ("synth", "extract", "cv", "stats", "report")


@dataclass
class DemoResult:
    """What :func:`run_demo` did and found.

    Attributes:
        out_dir: the demo folder.
        report: path of ``report.html``.
        stages: stage -> ``done`` (ran now) or ``skipped`` (outputs already complete), with seconds.
        table2: rows of ``stats/table2_performance.csv`` (readers and the model).
        metrics: the run's ``metrics.json`` (patient level, with AUC and interval).
        reader_study: ``stats/reader_study.json``: the simulated readers, unaided and aided by the model
            (:mod:`spinedx.synth.aided`; SIMULATED), or None.
    """

    out_dir: Path
    report: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    table2: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    reader_study: dict[str, Any] | None = None

    def reader_study_lines(self) -> list[str]:
        """One line of the simulated reader study (its RRRC difference aided - unaided), labelled simulated."""
        if self.reader_study is None:
            return []
        from spinedx.readers.study_analysis import headline_line

        return [headline_line(self.reader_study)]

    def summary_lines(self) -> list[str]:
        """Human-readable key metrics: the model against the readers (Table 2)."""

        def num(v: Any) -> str:
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"

        def ci(row: dict[str, Any], name: str) -> str:
            v, lo, hi = row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high")
            return f"{name} {num(v)} ({num(lo)}-{num(hi)})"

        lines = [f"report: {self.report.resolve()}"]
        m = self.metrics
        if m.get("synthetic"):
            lines.append(SYNTHETIC_BANNER.upper() + ": the figures describe a simulation; the readers are "
                         "simulated, so model-vs-reader comparisons illustrate the method only")
        if m.get("optimistic"):
            lines.append("WARNING: optimistic run (early stopping on the validation folds)")
        auc = m.get("auc")
        if auc is not None:
            lines.append(f"model AUC {num(auc)} ({num(m.get('auc_low'))}-{num(m.get('auc_high'))}), "
                         f"patient level, out-of-fold, {m.get('folds', '?')} folds, backbone {m.get('backbone', '?')}")
        from spinedx.evaluation.decisioncv import decision_summary_lines

        lines.extend(f"  {line}" for line in decision_summary_lines(m))
        rows = list(self.table2)
        baselines = m.get("baselines")
        for name, b in (baselines if isinstance(baselines, dict) else {}).items():
            label = b.get("label", name)
            if b.get("status") != "ok":
                lines.append(f"{label}: not fitted ({b.get('reason')})")
                continue
            lines.append(f"{label} AUC {num(b.get('auc'))} ({num(b.get('auc_low'))}-{num(b.get('auc_high'))}), "
                         "same folds")
            if isinstance(b.get("vs_model"), dict):
                lines.append(f"  -> {b['vs_model']['sentence']}")
            rows.append({**b, "rater": label})
        width = max([len(str(r["rater"]).removeprefix("reader_")) for r in rows] + [5])
        for r in rows:
            name = str(r["rater"]).removeprefix("reader_")
            lines.append(f"  {name:<{width}}  " + "  ".join(ci(r, k) for k in ("sensitivity", "specificity",
                                                                                 "accuracy")))
        lines += self.reader_study_lines()
        lines.append("(95% Wilson intervals; " + RESEARCH_USE_ONLY + ")")
        return lines


def _default_malignant(n_patients: int) -> int:
    """The paper's proportion (50/190) of malignant patients, at least one of each class when possible."""
    n = round(n_patients * PAPER_MALIGNANT / PAPER_PATIENTS)
    return int(min(max(n, 1), max(n_patients - 1, 1)))


_ABSENT = object()


def _setting_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``"cv.tta: absent there, 'affine8' now"`` for every (nested) setting that differs, in key order."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _setting_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            def show(v: Any) -> str:
                return "absent" if v is _ABSENT else repr(v)
            out.append(f"{prefix}{k}: {show(a)} there, {show(b)} now")
    return out


def _load_state(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return {"settings": settings, "stages": {}}
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpinedxError(f"cannot read the demo's state ({exc}); delete demo.json to let the demo check its "
                           "stages again, or choose a new OUT_DIR", where=str(path)) from None
    if not isinstance(state, dict) or not isinstance(state.get("settings", {}), dict):
        raise SpinedxError("not a demo state file; delete it or choose a new OUT_DIR", where=str(path))
    old = state.get("settings", {})
    diff = _setting_differences({k: v for k, v in old.items() if k in settings},
                                {k: v for k, v in settings.items() if k in old})
    if diff:
        raise SpinedxError(f"this demo folder was made with other settings ({'; '.join(diff)}); rerun with the same "
                           "options to resume, or choose a new OUT_DIR", where=str(path.parent))
    state["settings"] = settings
    state.setdefault("stages", {})
    return state


def _cv_jobs(workers: int) -> int:
    """Folds trained at once: one per worker on a CPU, one at a time on a GPU (it runs a fold's batches fast)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, workers)


def run_demo(
    out_dir: str | Path,
    n_patients: int = PAPER_PATIENTS,
    n_malignant: int | None = None,
    seed: int = EVALUATION_SEED,
    profile: str = "cpu",
    *,
    folds: int = 10,
    backbone: str | None = None,
    epochs: int | None = None,
    difficulty: str = "medium",
    register: bool = True,
    workers: int = 1,
    bootstrap_resamples: int = 2000,
    gallery_per_group: int = 2,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    cv_progress: CVProgress | None = None,
) -> DemoResult:
    """Run synth -> extract -> cv -> stats -> report, skipping stages whose outputs are complete.

    Args:
        out_dir: demo folder (created; an existing one is resumed).
        n_patients: synthetic patients (paper: 190).
        n_malignant: malignant patients; default the paper's proportion 50/190.
        seed: seed of the cohort, the folds and the training.
        profile: cross-validation profile, ``cpu`` (the main job's: minutes on 2 CPU cores), ``quick`` or ``paper``.
        folds: cross-validation folds (paper: 10).
        backbone: torchvision backbone; default the profile's (paper: resnet50).
        epochs: maximum epochs per fold; default the profile's.
        difficulty: synthetic cohort difficulty (``easy``, ``medium``, ``hard``).
        register: refine the T2->T1 mapping with the bounded rigid registration during extraction.
        workers: processes for the synthetic cohort, the extraction and (on a CPU) the folds trained at once.
        bootstrap_resamples: bootstrap resamples of the statistics' AUC intervals.
        gallery_per_group: cases per gallery group in the report.
        progress: show progress bars.
        cv_progress: where the cross-validation reports its progress (``spinedx demo`` passes its bars,
            :class:`spinedx.cli.cvview.RichProgress`); None: log lines.
        log: where stage messages go (None: silent).

    Returns:
        The result, with :meth:`DemoResult.summary_lines` for the key metrics.

    Raises:
        SpinedxError: impossible settings, an existing folder made with other settings, or a folder with content
            that is no demo folder (no ``demo.json``).
    """
    import pandas as pd

    from spinedx.evaluation.cv import run_cv
    from spinedx.evaluation.study import READER_STUDY_JSON, run_study
    from spinedx.preprocess import ExtractConfig, extract_cohort
    from spinedx.readers.study_analysis import simulated_for_stats
    from spinedx.report import build_report
    from spinedx.runfolder import RunFolder
    from spinedx.synth import generate_cohort
    from spinedx.synth.aided import simulate_reader_study
    from spinedx.training.config import CVConfig

    say = log or (lambda _msg: None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpinedxError("exists and is not a folder; choose another OUT_DIR", where=str(out))
    n_mal = _default_malignant(n_patients) if n_malignant is None else int(n_malignant)
    cv_config = CVConfig.from_profile(profile, folds=folds, seed=seed, backbone=backbone, epochs=epochs)
    extract_config = ExtractConfig(register=register)
    settings = {"n_patients": n_patients, "n_malignant": n_mal, "seed": seed, "difficulty": difficulty,
                "profile": profile, "cv": cv_config.to_dict(), "extract": extract_config.to_dict()}
    state_path = out / "demo.json"
    if out.is_dir() and not state_path.is_file():
        # demo.json is the first file a demo writes: without it the content is someone else's (a cohort/ or run/
        # there would have been taken as finished stages and used, or replaced by later ones)
        content = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if content:
            shown = ", ".join(content[:3]) + (", ..." if len(content) > 3 else "")
            raise SpinedxError(f"not empty ({shown}) and not a demo folder (no demo.json); choose a new or empty "
                               "OUT_DIR", where=str(out))
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(state_path, settings)
    cohort_dir, patches_dir, run_dir = out / "cohort", out / "patches", out / "run"
    manifest = cohort_dir / "cohort.csv"
    result = DemoResult(out, run_dir / "report.html")

    def save() -> None:
        atomic_write_text(state_path, json.dumps(state, indent=1, default=str) + "\n")

    ran_upstream = False

    def stage(name: str, complete: bool, fn: Callable[[], Any], what: str) -> None:
        nonlocal ran_upstream
        # Each stage writes its last file only when it has finished, so the presence of the outputs means
        # complete; once a stage has run, the later ones must run again on its new outputs.
        if complete and not ran_upstream:
            say(f"[{name}] {what}: already complete, skipped")
            result.stages[name] = {"status": "skipped", "seconds": 0.0}
            state["stages"].setdefault(name, {"status": "done"})
            return
        ran_upstream = True
        say(f"[{name}] {what} ...")
        t0 = time.perf_counter()
        fn()
        secs = round(time.perf_counter() - t0, 1)
        state["stages"][name] = {"status": "done", "seconds": secs,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        result.stages[name] = {"status": "done", "seconds": secs}
        save()
        say(f"[{name}] done in {secs:.0f} s")

    save()
    stage("synth", manifest.is_file() and (cohort_dir / "synth.json").is_file(),
          lambda: generate_cohort(cohort_dir, n_patients=n_patients, n_malignant=n_mal, seed=seed,
                                  difficulty=difficulty, preview=True, workers=workers, progress=progress),
          f"synthetic cohort of {n_patients} patients ({n_mal} malignant) -> {cohort_dir}")

    def do_extract() -> None:
        res = extract_cohort(manifest, patches_dir, extract_config, workers=workers, progress=progress)
        for pid, why in res.failed:
            say(f"[extract] skipped {pid}: {' '.join(why.split())}")
        if not res.ok:
            raise SpinedxError("no patient could be extracted; see the messages above", where=str(manifest))

    stage("extract", (patches_dir / "patches.npz").is_file() and (patches_dir / "extract.json").is_file(),
          do_extract, f"6-channel lesion patches -> {patches_dir}")
    # domain.json is the last file finish_run writes: a cv interrupted while fitting it is finished again
    stage("cv", all((run_dir / f).is_file() for f in ("metrics.json", "oof_patients.csv", "domain.json")),
          lambda: run_cv(patches_dir, run_dir, cv_config, progress=cv_progress, jobs=_cv_jobs(workers)),
          f"{cv_config.folds}-fold cross-validation ({profile} profile, {cv_config.backbone}) -> {run_dir}")
    def do_stats() -> None:
        # the simulated readers read again, aided by the model: the report's reader-study section (SIMULATED);
        # it draws no random numbers, so the other statistics are those of a demo without it
        reader_study = simulated_for_stats(manifest, run_dir, simulate_reader_study)
        run_study(manifest, run_dir / "stats", run_dir=run_dir, bootstrap_resamples=bootstrap_resamples, seed=seed,
                  reader_study=reader_study)

    stage("stats", (run_dir / "stats" / "stats.json").is_file()
          and (run_dir / "stats" / READER_STUDY_JSON).is_file(), do_stats,
          f"study statistics (Tables 1 and 2, McNemar, error analysis, SIMULATED reader study) -> {run_dir / 'stats'}")
    stage("report", result.report.is_file(),
          lambda: build_report(run_dir, manifest, gallery_per_group=gallery_per_group,
                               bootstrap_resamples=bootstrap_resamples, progress=progress),
          f"HTML report -> {result.report}")

    result.metrics = RunFolder(run_dir).read_metrics()
    t2 = pd.read_csv(run_dir / "stats" / "table2_performance.csv")
    result.table2 = t2.to_dict(orient="records")
    result.reader_study = json.loads((run_dir / "stats" / READER_STUDY_JSON).read_text(encoding="utf-8"))
    return result
