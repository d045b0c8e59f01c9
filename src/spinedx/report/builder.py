"""The self-contained HTML study report of a run folder (``spinedx report``).

One file, ``RUN_DIR/report.html``, with every figure embedded as a base64 PNG and the CSS
inline, so it can be mailed or archived and opened offline. Its sections follow the paper
(Yeh et al. 2022): cohort summary, Table 1 (imaging features, Fisher exact test), Table 2
(readers and model, Wilson intervals, McNemar tests), the model's per-patient ROC curve with
the readers' operating points, confusion matrices, per-fold AUCs, calibration, a gallery of
true/false positive/negative cases with Grad-CAM heatmaps (the paper's Figs. 3-6) and the
run's provenance. The tables are also written as CSV files beside the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import SpinedxError
from spinedx.features import FEATURES, LABELS
from spinedx.report.run_info import RunInfo, find_key, load_run_info

#: Gallery groups in the order of the paper's Figs. 3-6.
GALLERY_GROUPS: dict[str, tuple[str, str]] = {
    "tp": ("True positives", "malignant fractures called malignant by the model (cf. the paper's Fig. 3)"),
    "tn": ("True negatives", "benign fractures called benign by the model (cf. Fig. 4)"),
    "fn": ("False negatives", "malignant fractures the model called benign (cf. Fig. 5)"),
    "fp": ("False positives", "benign fractures the model called malignant (cf. Fig. 6)"),
}

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Cohort summary"),
    ("table1", "Table 1 - Imaging features"),
    ("table2", "Table 2 - Diagnostic performance of readers and model"),
    ("roc", "ROC curve"),
    ("confusion", "Confusion matrices"),
    ("folds", "Per-fold AUC"),
    ("calibration", "Calibration"),
    ("gallery", "Case gallery with Grad-CAM"),
    ("provenance", "Provenance"),
)

_STATS_FILES = ("table2_performance.csv", "mcnemar.csv", "table1_features.csv")


@dataclass
class ReportData:
    """Everything the template renders (strings already formatted)."""

    title: str
    run_dir: str
    created: str
    banners: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    summary: list[list[str]] = field(default_factory=list)
    summary_text: str = ""
    table1: list[list[str]] | None = None
    table1_head: list[str] = field(default_factory=list)
    table2: list[list[str]] | None = None
    table2_head: list[str] = field(default_factory=list)
    mcnemar: list[list[str]] | None = None
    mcnemar_head: list[str] = field(default_factory=list)
    logistic: str = ""
    figures: dict[str, str] = field(default_factory=dict)
    folds: list[list[str]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[list[str]] = field(default_factory=list)
    versions: list[list[str]] = field(default_factory=list)
    config_text: str = ""
    csv_files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# small helpers


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{nd}f}"
    return str(v)


def _fmt_p(p: Any) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ci(est: Any, low: Any, high: Any, pct: bool = False) -> str:
    try:
        e, lo, hi = float(est), float(low), float(high)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(e):
        return "n/a"
    if pct:
        return f"{100 * e:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"
    return f"{e:.3f} ({lo:.3f}-{hi:.3f})"


def _label_codes(values: pd.Series, where: str) -> np.ndarray:
    """benign/malignant (or 0/1) -> 0/1."""
    out = []
    for v in values:
        s = str(v).strip().lower()
        if s in LABELS:
            out.append(LABELS[s])
        elif s in ("0", "1"):
            out.append(int(s))
        else:
            raise SpinedxError(f"label {v!r} is neither benign nor malignant", where=where)
    return np.asarray(out, dtype=int)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpinedxError(f"cannot read CSV ({exc})", where=str(path)) from exc


def _pretty_rater(name: str) -> str:
    n = str(name)
    return n[len("reader_"):].replace("_", " ") if n.startswith("reader_") else n


def _is_model_rater(name: str) -> bool:
    n = str(name).lower()
    return not n.startswith("reader_") and ("model" in n or "resnet" in n or "ai" == n)


# ---------------------------------------------------------------------------------------------
# inputs


def load_oof(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The run's out-of-fold patient and slice predictions."""
    pat_path = run_dir / "oof_patients.csv"
    if not pat_path.is_file():
        raise SpinedxError("oof_patients.csv missing: the cross-validation has not finished; run `spinedx cv` "
                           "again (it resumes)", where=str(run_dir))
    patients = _read_csv(pat_path)
    need = {"patient_id", "fold", "label", "probability"}
    if not need <= set(patients.columns):
        raise SpinedxError(f"columns {sorted(need - set(patients.columns))} missing", where=str(pat_path))
    patients["label"] = _label_codes(patients["label"], str(pat_path))
    slices = None
    sl_path = run_dir / "oof_slices.csv"
    if sl_path.is_file():
        slices = _read_csv(sl_path)
        if "label" in slices.columns:
            slices["label"] = _label_codes(slices["label"], str(sl_path))
    return patients, slices


def find_cohort(info: RunInfo, cohort: str | Path | None) -> Path | None:
    """The cohort manifest: the one given, else the one the run recorded (config or extract.json)."""
    if cohort is not None:
        path = Path(cohort)
        if not path.is_file():
            raise SpinedxError("cohort manifest not found; pass the cohort.csv the run was made from",
                               where=str(path))
        return path
    return info.cohort_path()


def ensure_stats(run_dir: Path, cohort: Path | None, notes: list[str], reader: str | None = None,
                 bootstrap_resamples: int = 2000) -> Path | None:
    """``RUN_DIR/stats`` with the study statistics, computed with ``run_study`` when missing.

    Returns the stats folder, or None (with a note saying why) when it cannot be made.
    """
    stats_dir = run_dir / "stats"
    if all((stats_dir / f).is_file() for f in _STATS_FILES):
        return stats_dir
    if cohort is None:
        notes.append("No cohort manifest was given or recorded by the run, so the readers' performance, McNemar "
                     "tests and imaging features are not shown; run `spinedx report RUN_DIR --cohort COHORT.csv`.")
        return stats_dir if (stats_dir / "table2_performance.csv").is_file() else None
    cols = pd.read_csv(cohort, nrows=0).columns
    if not any(c.startswith(("feature_", "reader_")) for c in cols):
        notes.append(f"The cohort manifest {cohort} has no feature_* or reader_* columns, so only the model's "
                     "figures are shown.")
        return None
    from spinedx.evaluation.study import run_study

    # reader None: run_study analyses the least experienced reader's errors, as the paper does for R1
    run_study(cohort, stats_dir, run_dir=run_dir, reader=reader, bootstrap_resamples=bootstrap_resamples)
    return stats_dir


# ---------------------------------------------------------------------------------------------
# gallery


def _fold_models(run_dir: Path, folds: list[int]) -> dict[int, Any]:
    """The fold models of the run, keyed by fold number."""
    from spinedx.models import load_fold_model

    out = {}
    for k in folds:
        path = run_dir / "folds" / str(k) / "model.pt"
        if path.is_file():  # a fold still training has no model yet: its cases get crops only
            out[k] = load_fold_model(path)
    return out


def select_gallery(patients: pd.DataFrame, threshold: float, per_group: int) -> dict[str, pd.DataFrame]:
    """The most clear-cut true calls and the most confident errors, ``per_group`` of each kind."""
    y = patients["label"].to_numpy()
    pred = (patients["probability"].to_numpy() >= threshold).astype(int)
    groups = {
        "tp": patients[(y == 1) & (pred == 1)].sort_values("probability", ascending=False),
        "tn": patients[(y == 0) & (pred == 0)].sort_values("probability", ascending=True),
        "fn": patients[(y == 1) & (pred == 0)].sort_values("probability", ascending=True),
        "fp": patients[(y == 0) & (pred == 1)].sort_values("probability", ascending=False),
    }
    return {k: g.head(per_group) for k, g in groups.items()}


def build_gallery(
    info: RunInfo, patients: pd.DataFrame, slices: pd.DataFrame | None, cohort_df: pd.DataFrame | None,
    per_group: int, notes: list[str], progress: bool = True,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Gallery entries: for each chosen patient the slice that set its probability, with Grad-CAM."""
    from spinedx.explain import figure_png, gradcam, overlay_figure
    from spinedx.report.figures import png_data_uri

    chosen = select_gallery(patients, info.threshold, per_group)
    groups: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    npz_path = info.patches_dir / "patches.npz" if info.patches_dir else None
    if npz_path is None or not npz_path.is_file():
        notes.append("The run's patches.npz was not found (config.yaml patches_dir), so the gallery lists the cases "
                     "without images.")
        data = None
    else:
        with np.load(npz_path, allow_pickle=False) as npz:  # each npz[key] access re-reads: read once
            data = {k: npz[k] for k in ("x", "patient_id", "slice_index")}
    pids_all = data["patient_id"] if data is not None else None
    folds_needed = sorted({int(f) for g in chosen.values() for f in g["fold"]})
    models: dict[int, Any] = {}
    if data is not None and folds_needed:
        try:
            models = _fold_models(info.run_dir, folds_needed)
        except (SpinedxError, OSError) as exc:
            notes.append(f"Fold models could not be loaded ({exc}); crops are shown without heatmaps.")
        else:
            absent = [k for k in folds_needed if k not in models]
            if absent:
                notes.append(f"No model.pt for fold(s) {', '.join(map(str, absent))}: their cases have no heatmap.")
    # Pass 1: each chosen patient's deciding slice and its patch.
    picked: list[dict[str, Any]] = []
    for key in GALLERY_GROUPS:
        for _, row in chosen[key].iterrows():
            pid = str(row["patient_id"])
            case: dict[str, Any] = {"group": key, "patient_id": pid, "fold": int(row["fold"]),
                                    "prob": float(row["probability"]), "label": int(row["label"]),
                                    "slice": None, "slice_prob": None, "patch": None}
            if slices is not None:
                ps = slices[slices["patient_id"].astype(str) == pid]
                if len(ps):
                    best = ps.loc[ps["probability"].idxmax()]
                    case["slice"], case["slice_prob"] = int(best["slice_index"]), float(best["probability"])
            if data is not None:
                idx = np.flatnonzero(pids_all == pid)
                if case["slice"] is not None:
                    hit = idx[data["slice_index"][idx] == case["slice"]]
                    idx = hit if len(hit) else idx
                if len(idx):
                    i = int(idx[0])
                    case["slice"] = int(data["slice_index"][i]) if case["slice"] is None else case["slice"]
                    case["patch"] = np.asarray(data["x"][i], dtype=np.float32)
            picked.append(case)

    # Pass 2: Grad-CAM with the fold model that scored the patient out of fold, one batch per fold.
    from rich.progress import Progress

    heats: dict[int, np.ndarray] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("gallery (Grad-CAM)", total=len(models))
        for fold, model in models.items():
            members = [n for n, c in enumerate(picked) if c["fold"] == fold and c["patch"] is not None]
            if members:
                hm = gradcam(model, np.stack([picked[n]["patch"] for n in members]))
                heats.update({n: h for n, h in zip(members, hm, strict=True)})
            bar.advance(task)

    # Pass 3: figures and captions.
    for key, (title, desc) in GALLERY_GROUPS.items():
        cases = []
        for n, c in enumerate(picked):
            if c["group"] != key:
                continue
            pid = c["patient_id"]
            img = None
            if c["patch"] is not None:
                img = png_data_uri(figure_png(overlay_figure(c["patch"], heats.get(n), panel_inches=1.9)))
            feats: list[str] = []
            readers: dict[str, Any] = {}
            if cohort_df is not None and pid in cohort_df.index:
                rec = cohort_df.loc[pid]
                feats = [FEATURES[col[len("feature_"):]] for col in cohort_df.columns
                         if col.startswith("feature_") and col[len("feature_"):] in FEATURES
                         and str(rec[col]).strip() in ("1", "1.0", "True")]
                readers = {col: rec[col] for col in cohort_df.columns if col.startswith("reader_")}
            reader_txt = ", ".join(f"{_pretty_rater(k)}: {v}" for k, v in readers.items() if pd.notna(v))
            label = "malignant" if c["label"] == 1 else "benign"
            cases.append({
                "patient_id": pid, "fold": c["fold"], "probability": f"{c['prob']:.3f}",
                "slice": "n/a" if c["slice"] is None else str(c["slice"]),
                "slice_probability": "n/a" if c["slice_prob"] is None else f"{c['slice_prob']:.3f}",
                "label": label, "image": img, "heatmap": n in heats, "features": feats, "readers": reader_txt,
                "empty_heatmap": n in heats and not bool(np.any(heats[n] > 0)),
            })
            rows.append({"group": key, "patient_id": pid, "fold": c["fold"], "label": label,
                         "probability": c["prob"], "slice_index": c["slice"], "slice_probability": c["slice_prob"],
                         "heatmap": n in heats})
        groups.append({"key": key, "title": title, "description": desc, "cases": cases})
    return groups, pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# report


def _cohort_frame(cohort: Path | None) -> pd.DataFrame | None:
    if cohort is None:
        return None
    df = _read_csv(cohort)
    if "patient_id" not in df.columns:
        raise SpinedxError("no patient_id column", where=str(cohort))
    return df.set_index("patient_id", drop=False)


def build_report(
    run_dir: str | Path,
    cohort: str | Path | None = None,
    *,
    out: str | Path | None = None,
    gallery_per_group: int = 2,
    reader: str | None = None,
    bootstrap_resamples: int = 2000,
    progress: bool = True,
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
        bootstrap_resamples: bootstrap resamples of the AUC intervals (statistics and ROC band).
        progress: show progress bars.

    Returns:
        The path of the written report.
    """
    import jinja2
    import yaml

    from spinedx.evaluation.metrics import metrics_from_counts
    from spinedx.provenance import provenance
    from spinedx.report import figures as F

    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    cohort_path = find_cohort(info, cohort)
    patients, slices = load_oof(run_dir)
    out_path = Path(out) if out is not None else run_dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    csv_prefix = out_path.with_suffix("")
    notes: dict[str, list[str]] = {k: [] for k, _ in SECTIONS}
    stats_dir = ensure_stats(run_dir, cohort_path, notes["table2"], reader=reader,
                             bootstrap_resamples=bootstrap_resamples)
    cohort_df = _cohort_frame(cohort_path)
    prov = provenance()

    y = patients["label"].to_numpy()
    p = patients["probability"].to_numpy(dtype=float)
    model_rep = _model_metrics(run_dir, y, p, info.threshold, bootstrap_resamples)
    csv_written: list[str] = []

    def write_csv(df: pd.DataFrame, name: str) -> None:
        path = Path(f"{csv_prefix}_{name}.csv")
        df.to_csv(path, index=False)
        csv_written.append(path.name)

    rd = ReportData(
        title="spinedx study report", run_dir=str(run_dir.resolve()), created=prov["created"],
    )
    rd.banners.append(("research", (f"{RESEARCH_USE_ONLY[0].upper()}{RESEARCH_USE_ONLY[1:]}. "
                                    "All figures are cross-validated estimates on the cohort below.")))
    if info.optimistic:
        rd.banners.append(("optimistic", ("Optimistic estimates: early stopping chose each fold's epoch on that "
                                          "fold's own validation patients (as the paper describes), so the "
                                          "performance below is biased upward.")))
    if info.pretrained is False:
        why = ("no local ImageNet weights file was found" if info.weights.get("source") == "fallback-none"
               else "as asked (pretrained: none)")
        rd.banners.append(("warning", (f"No ImageNet weights: the models were trained from scratch ({why}), unlike "
                                       "the paper, which initialised ResNet50 from ImageNet. See Provenance.")))

    # -- cohort summary -------------------------------------------------------------------------
    n_slices = slices.groupby("patient_id").size() if slices is not None else None
    summ_rows = []
    for lab, name in ((1, "malignant"), (0, "benign")):
        pids = patients.loc[patients["label"] == lab, "patient_id"].astype(str)
        ns = int(n_slices.reindex(pids).fillna(0).sum()) if n_slices is not None else None
        summ_rows.append({"group": name, "patients": len(pids), "slices": ns})
    summ_rows.append({"group": "total", "patients": len(patients),
                      "slices": int(n_slices.sum()) if n_slices is not None else None})
    summary = pd.DataFrame(summ_rows)
    write_csv(summary, "cohort_summary")
    rd.summary = [[str(r["group"]), str(r["patients"]), _fmt(r["slices"])] for r in summ_rows]
    n_folds = patients["fold"].nunique()
    aggregation = str(find_key(info.config, "aggregation", default="max"))
    how = ("the highest slice probability, as in the paper" if aggregation == "max"
           else f"the {aggregation} of the slice probabilities")
    parts = [(f"{len(patients)} patients evaluated out-of-fold in {n_folds}-fold patient-grouped cross-validation "
              f"(backbone {info.backbone or 'n/a'}, decision threshold {info.threshold:g} on the patient probability, "
              f"which is {how}).")]
    if cohort_df is not None:
        readers = [c for c in cohort_df.columns if c.startswith("reader_")]
        feats = [c for c in cohort_df.columns if c.startswith("feature_")]
        parts.append(f"Cohort manifest {cohort_path}: {len(cohort_df)} patients, {len(feats)} imaging features, "
                     f"readers: {', '.join(_pretty_rater(r) for r in readers) or 'none'}.")
        missing = sorted(set(cohort_df.index.astype(str)) - set(patients["patient_id"].astype(str)))
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            parts.append(f"{len(missing)} patient(s) of the manifest have no model prediction "
                         f"(skipped at extraction): {shown}.")
    else:
        notes["summary"].append("No cohort manifest: features and readers are unknown.")
    rd.summary_text = " ".join(parts)

    # -- Table 1 ------------------------------------------------------------------------------
    t1_path = stats_dir / "table1_features.csv" if stats_dir else None
    if t1_path is not None and t1_path.is_file():
        t1 = pd.read_csv(t1_path)
        write_csv(t1, "table1_features")
        rd.table1_head = ["Feature", "Malignant n (%)", "Benign n (%)", "Fisher p", "Odds ratio (95% CI)"]
        rd.table1 = []
        for _, r in t1.iterrows():
            name = str(r["feature"])
            key = name.removeprefix("feature_")
            mt, bt = int(r["malignant_total"]), int(r["benign_total"])
            mn, bn = int(r["malignant_n"]), int(r["benign_n"])
            orr = f"{_fmt(r['odds_ratio'], 2)} ({_fmt(r['or_low'], 2)}-{_fmt(r['or_high'], 2)})"
            if str(r.get("haldane", "")).strip().lower() in ("true", "1", "1.0"):
                orr += " *"
            desc = r["description"] if "description" in t1.columns and pd.notna(r["description"]) else None
            rd.table1.append([desc or FEATURES.get(key, name), f"{mn}/{mt} ({100 * mn / max(mt, 1):.0f}%)",
                              f"{bn}/{bt} ({100 * bn / max(bt, 1):.0f}%)", _fmt_p(r["p_value"]), orr])
        if not rd.table1:
            notes["table1"].append("The cohort manifest has no feature_* columns: Table 1 is empty.")
        fl = t1_path.parent / "feature_logistic.json"
        if fl.is_file():
            rd.logistic = _logistic_text(json.loads(fl.read_text()))
    else:
        notes["table1"].append("No imaging features (feature_* columns of the cohort manifest): Table 1 is not shown.")

    # -- Table 2 ------------------------------------------------------------------------------
    t2 = None
    t2_path = stats_dir / "table2_performance.csv" if stats_dir else None
    if t2_path is not None and t2_path.is_file():
        t2 = pd.read_csv(t2_path)
    model_row = {"rater": "model", **metrics_from_counts(model_rep["tp"], model_rep["tn"], model_rep["fp"],
                                                         model_rep["fn"])}
    if t2 is None or not any(_is_model_rater(r) for r in t2["rater"]):
        t2 = pd.concat([t2, pd.DataFrame([model_row])], ignore_index=True) if t2 is not None else \
            pd.DataFrame([model_row])
    write_csv(t2, "table2_performance")
    rd.table2_head = ["Rater", "n", "TP", "TN", "FP", "FN", "Sensitivity (95% CI)", "Specificity (95% CI)",
                      "Accuracy (95% CI)", "PPV (95% CI)", "NPV (95% CI)"]
    rd.table2 = []
    for _, r in t2.iterrows():
        rd.table2.append([_pretty_rater(r["rater"]), str(int(r["n"])),
                          *(str(int(r[k])) for k in ("tp", "tn", "fp", "fn")),
                          *(_ci(r[m], r[f"{m}_low"], r[f"{m}_high"], pct=True)
                            for m in ("sensitivity", "specificity", "accuracy", "ppv", "npv"))])
    mc_path = stats_dir / "mcnemar.csv" if stats_dir else None
    if mc_path is not None and mc_path.is_file():
        mc = pd.read_csv(mc_path)
        write_csv(mc, "mcnemar")
        rd.mcnemar_head = ["Rater A", "Rater B", "Compared on", "A right, B wrong", "A wrong, B right", "McNemar p"]
        rd.mcnemar = [[_pretty_rater(r["rater_a"]), _pretty_rater(r["rater_b"]),
                       "malignant patients (sensitivity)" if r["group"] == "malignant"
                       else "benign patients (specificity)",
                       str(int(r["b"])), str(int(r["c"])), _fmt_p(r["p_value"])] for _, r in mc.iterrows()]
    else:
        notes["table2"].append("No reader calls: only the model's row and no McNemar tests.")

    # -- figures --------------------------------------------------------------------------------
    readers_ops = [F.OperatingPoint(_pretty_rater(r["rater"]), float(r["sensitivity"]), float(r["specificity"]))
                   for _, r in t2.iterrows() if not _is_model_rater(r["rater"])
                   and np.isfinite(float(r["sensitivity"])) and np.isfinite(float(r["specificity"]))]
    auc = (model_rep["auc"], model_rep["auc_low"], model_rep["auc_high"])
    rd.figures["roc"] = F.data_uri(F.roc_figure(y, p, auc=auc, threshold=info.threshold, readers=readers_ops,
                                                 n_boot=min(bootstrap_resamples, 1000)))
    conf_rows = [(_pretty_rater(r["rater"]), int(r["tp"]), int(r["tn"]), int(r["fp"]), int(r["fn"]))
                 for _, r in t2.iterrows()]
    rd.figures["confusion"] = F.data_uri(F.confusion_figure(conf_rows))

    from spinedx.evaluation.metrics import roc_auc

    fold_rows = []
    for fold, g in patients.groupby("fold"):
        gy = g["label"].to_numpy()
        fa = roc_auc(gy, g["probability"])
        sa = math.nan
        if slices is not None and "fold" in slices.columns:
            s = slices[slices["fold"] == fold]
            sa = roc_auc(s["label"], s["probability"])
        fold_rows.append({"fold": int(fold), "patients": len(g), "malignant": int(gy.sum()),
                          "benign": int((gy == 0).sum()), "patient_auc": fa, "slice_auc": sa})
    fold_df = pd.DataFrame(fold_rows)
    write_csv(fold_df, "per_fold_auc")
    rd.folds = [[str(r["fold"]), str(r["patients"]), str(r["malignant"]), str(r["benign"]),
                 _fmt(r["patient_auc"]), _fmt(r["slice_auc"])] for r in fold_rows]
    rd.figures["folds"] = F.data_uri(F.fold_auc_figure(fold_df["fold"].tolist(), fold_df["patient_auc"].tolist(),
                                                       pooled=model_rep["auc"]))
    if fold_df["patient_auc"].isna().any():
        notes["folds"].append("A fold with patients of one class only has no AUC (n/a).")
    rd.figures["calibration"] = F.data_uri(F.calibration_figure(y, p))
    brier = float(np.mean((p - y) ** 2))
    notes["calibration"].append(f"Brier score {brier:.3f}. The patient probability is the maximum over slices, "
                                "so it tends to overstate malignancy for patients with many slices.")

    # -- gallery -------------------------------------------------------------------------------
    rd.gallery, gal_df = build_gallery(info, patients, slices, cohort_df, gallery_per_group, notes["gallery"],
                                       progress=progress)
    write_csv(gal_df, "gallery")
    for g in rd.gallery:
        if not g["cases"]:
            g["empty"] = f"No {g['title'].lower()} in this run."

    # -- provenance ------------------------------------------------------------------------------
    w = info.weights
    rd.provenance = [
        ["Run folder", str(run_dir.resolve())],
        ["Cohort manifest", str(cohort_path) if cohort_path else "not found"],
        ["Patches", str(info.patches_dir) if info.patches_dir else "not found"],
        ["Backbone", str(info.backbone or "n/a")],
        ["ImageNet weights used", "yes" if info.pretrained else ("no" if info.pretrained is False else "unknown")],
        ["Weights", " ".join(str(w.get(k)) for k in ("source", "path", "sha256") if w.get(k)) or "n/a"],
        ["Weights note", str(w.get("message") or "")],
        ["Early stopping optimistic",
         "yes (validation fold chose the epoch)" if info.optimistic
         else ("no" if info.optimistic is False else "unknown")],
        ["Decision threshold", f"{info.threshold:g}"],
        ["Run git commit", str(info.git_commit or "n/a")],
        ["Report made by", f"spinedx {__version__}, git {prov['git_commit'] or 'n/a'}, {prov['created']}"],
    ]
    run_versions = info.versions
    rd.versions = [[k, str(run_versions.get(k, "")), str(v)] for k, v in prov["versions"].items()]
    rd.config_text = yaml.safe_dump(info.config, sort_keys=False, default_flow_style=False)
    rd.notes = notes
    rd.csv_files = csv_written

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("spinedx.report", "templates"), autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    html_text = env.get_template("report.html").render(r=rd, sections=SECTIONS)
    out_path.write_text(html_text, encoding="utf-8")
    return out_path


def _model_metrics(run_dir: Path, y: np.ndarray, p: np.ndarray, threshold: float,
                   n_resamples: int = 2000) -> dict[str, Any]:
    """The model's patient-level metrics at ``threshold``; the AUC interval from metrics.json when recorded.

    The bootstrap AUC interval is what `spinedx cv` already computed (same function, same seed),
    so it is reused rather than recomputed (thousands of AUCs).
    """
    from spinedx.evaluation.metrics import auc_with_ci, binary_metrics

    out = binary_metrics(y, (p >= threshold).astype(int))
    out["threshold"] = threshold
    mpath = run_dir / "metrics.json"
    rec: dict[str, Any] = {}
    if mpath.is_file():
        try:
            m = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            m = {}
        for key in ("patient", "patients", "patient_level"):
            if isinstance(m.get(key), dict):
                rec = m[key]
                break
        else:
            rec = m if isinstance(m, dict) else {}
    if all(isinstance(rec.get(k), (int, float)) for k in ("auc", "auc_low", "auc_high")):
        out["auc"], out["auc_low"], out["auc_high"] = (float(rec[k]) for k in ("auc", "auc_low", "auc_high"))
    else:
        out["auc"], out["auc_low"], out["auc_high"] = auc_with_ci(y, p, n_resamples=n_resamples)
    return out


def _logistic_text(d: dict[str, Any]) -> str:
    """One sentence on the feature logistic regression (the paper reports accuracy 0.94)."""
    ev: dict[str, Any] = d["evaluation"] if isinstance(d.get("evaluation"), dict) else d
    txt = "Logistic regression on all features, evaluated out of fold"
    if ev.get("folds_source"):
        txt += f" ({ev['folds_source']})"
    if ev.get("accuracy") is not None:
        txt += f": accuracy {_ci(ev.get('accuracy'), ev.get('accuracy_low'), ev.get('accuracy_high'))}"
    if ev.get("auc") is not None:
        txt += f", AUC {_ci(ev.get('auc'), ev.get('auc_low'), ev.get('auc_high'))}"
    txt += " (the paper: accuracy 0.94)."
    if d.get("method_note"):
        txt += f" Method: {d['method_note']}."
    return txt
