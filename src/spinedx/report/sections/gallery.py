"""Case gallery (the paper's Figs. 3-6): the clearest true calls and the most confident errors, with heatmaps.

The heatmaps are those of :data:`spinedx.explain.DEFAULT_METHOD` (the method docs/explanations.md chose on
synthetic lesions); the section's heading and caption name it and its publication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spinedx.common import label_name
from spinedx.features import FEATURES
from spinedx.report.page import pretty_rater

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page

#: Gallery groups in the order of the paper's Figs. 3-6.
GALLERY_GROUPS: dict[str, tuple[str, str]] = {
    "tp": ("True positives", "malignant fractures called malignant by the model (cf. the paper's Fig. 3)"),
    "tn": ("True negatives", "benign fractures called benign by the model (cf. Fig. 4)"),
    "fn": ("False negatives", "malignant fractures the model called benign (cf. Fig. 5)"),
    "fp": ("False positives", "benign fractures the model called malignant (cf. Fig. 6)"),
}


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


def _pick(inp: ReportInputs, per_group: int) -> list[dict[str, Any]]:
    """Each chosen patient's deciding slice (highest probability) and its patch, when the patches are shown."""
    chosen = select_gallery(inp.patients, inp.threshold, per_group)
    data = inp.patches
    picked: list[dict[str, Any]] = []
    for key in GALLERY_GROUPS:
        for _, row in chosen[key].iterrows():
            pid = str(row["patient_id"])
            ps = inp.slices[inp.slices["patient_id"] == pid]
            best = ps.loc[ps["probability"].idxmax()]
            case: dict[str, Any] = {"group": key, "patient_id": pid, "fold": int(row["fold"]),
                                    "prob": float(row["probability"]), "label": int(row["label"]),
                                    "slice": int(best["slice_index"]), "slice_prob": float(best["probability"]),
                                    "patch": None}
            if data is not None:
                hit = np.flatnonzero((data.patient_id == pid) & (data.slice_index == case["slice"]))
                if len(hit):
                    case["patch"] = np.asarray(data.x[int(hit[0])], dtype=np.float32)
            picked.append(case)
    return picked


def _heatmaps(inp: ReportInputs, picked: list[dict[str, Any]], progress: bool) -> dict[int, np.ndarray]:
    """Heatmap (:data:`spinedx.explain.DEFAULT_METHOD`) of each shown case with the fold model that scored it out of
    fold, one batch per fold."""
    from rich.progress import Progress

    from spinedx.explain import DEFAULT_METHOD, explain, method_info
    from spinedx.models.run import load_fold_model

    folds = sorted({c["fold"] for c in picked if c["patch"] is not None} & set(inp.fold_models.paths))
    heats: dict[int, np.ndarray] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"gallery ({method_info(DEFAULT_METHOD).label})", total=len(folds))
        for fold in folds:
            model = load_fold_model(inp.fold_models.paths[fold], fold=fold, backbone=inp.record.config.backbone)
            members = [n for n, c in enumerate(picked) if c["fold"] == fold and c["patch"] is not None]
            hm = explain(model, np.stack([picked[n]["patch"] for n in members]), DEFAULT_METHOD)
            heats.update(dict(zip(members, hm, strict=True)))
            bar.advance(task)
    return heats


def build(inp: ReportInputs, page: Page) -> None:
    """Gallery entries (``page.gallery_per_group`` per group; ``report_gallery.csv``)."""
    from spinedx.explain import DEFAULT_METHOD, explanation_record, overlay_png
    from spinedx.report.figures import png_data_uri

    page.gallery_method = {k: str(v) for k, v in explanation_record(DEFAULT_METHOD).items()}

    picked = _pick(inp, page.gallery_per_group)
    heats = _heatmaps(inp, picked, page.progress) if inp.patches is not None else {}
    absent = sorted({c["fold"] for c in picked} & set(inp.fold_models.missing))
    if absent:
        inp.notes["gallery"].append(f"No model.pt for fold(s) {', '.join(map(str, absent))}: their cases have no "
                                    "heatmap.")
    cohort = inp.cohort
    rows: list[dict[str, Any]] = []
    for key, (title, desc) in GALLERY_GROUPS.items():
        cases = []
        for n, c in enumerate(picked):
            if c["group"] != key:
                continue
            pid = c["patient_id"]
            img = None
            if c["patch"] is not None:
                img = png_data_uri(overlay_png(c["patch"], heats.get(n), method=DEFAULT_METHOD))
            feats: list[str] = []
            readers: dict[str, Any] = {}
            if cohort is not None and pid in cohort.index:
                rec = cohort.loc[pid]
                feats = [FEATURES[str(col)[len("feature_"):]] for col in cohort.columns
                         if str(col).startswith("feature_") and str(col)[len("feature_"):] in FEATURES
                         and str(rec[col]).strip() in ("1", "1.0", "True")]
                readers = {str(col): rec[col] for col in cohort.columns if str(col).startswith("reader_")}
            reader_txt = ", ".join(f"{pretty_rater(k)}: {v}" for k, v in readers.items() if pd.notna(v))
            label = label_name(c["label"])
            cases.append({
                "patient_id": pid, "fold": c["fold"], "probability": f"{c['prob']:.3f}",
                "slice": str(c["slice"] + 1),  # numbered from 1 as viewers show it; the CSV keeps slice_index
                "slice_probability": f"{c['slice_prob']:.3f}", "label": label, "image": img,
                "heatmap": n in heats, "features": feats, "readers": reader_txt,
                "empty_heatmap": n in heats and not bool(np.any(heats[n] > 0)),
            })
            rows.append({"group": key, "patient_id": pid, "fold": c["fold"], "label": label,
                         "probability": c["prob"], "slice_index": c["slice"], "slice_probability": c["slice_prob"],
                         "heatmap": n in heats})
        page.gallery.append({"key": key, "title": title, "description": desc, "cases": cases,
                             "empty": f"No {title.lower()} in this run." if not cases else ""})
    page.tables["gallery"] = pd.DataFrame(rows, columns=["group", "patient_id", "fold", "label", "probability",
                                                         "slice_index", "slice_probability", "heatmap"])
