"""Figures of the study report, drawn with matplotlib's object API (no pyplot state, Agg only).

Every function returns a ``matplotlib.figure.Figure``; :func:`data_uri` turns one into a
``data:image/png;base64,...`` string so the report stays a single self-contained file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def _roc_axes(ax: Any) -> None:
    """The ROC plane of every ROC figure here: unit square, equal aspect, the axes named in the readers' words."""
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity (benign called malignant)")
    ax.set_ylabel("sensitivity (malignant called malignant)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)

@dataclass(frozen=True)
class OperatingPoint:
    """A reader's (or the model's) call on the ROC plane."""

    name: str
    sensitivity: float
    specificity: float


def data_uri(fig: Figure, dpi: int = 110) -> str:
    """The figure as an inline PNG ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def roc_figure(
    y: np.ndarray, p: np.ndarray, *, auc: tuple[float, float, float] | None = None,
    threshold: float = 0.5, readers: Sequence[OperatingPoint] = (), n_boot: int = 1000, seed: int = 0,
) -> Figure:
    """Per-patient ROC curve of the model with a 95% stratified bootstrap band (the resampling scheme of the
    AUC interval, :func:`spinedx.evaluation.metrics.roc_band`) and the readers' operating points."""
    from sklearn.metrics import roc_curve

    from spinedx.evaluation.metrics import roc_band

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    fig = Figure(figsize=(5.6, 6.4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--", label="chance")
    if len(np.unique(y)) == 2:
        grid, low, high = roc_band(y, p, n_resamples=n_boot, seed=seed)
        ax.fill_between(grid, low, high, color="tab:blue", alpha=0.18, lw=0, label="95% bootstrap band")
        fpr, tpr, _ = roc_curve(y, p)
        lab = "model (out-of-fold)"
        if auc is not None and np.isfinite(auc[0]):
            lab += f", AUC {auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}]"
        ax.plot(fpr, tpr, color="tab:blue", lw=2, label=lab)
        pred = p >= threshold
        sens = float(pred[y == 1].mean())
        spec = float((~pred[y == 0]).mean())
        ax.plot(1 - spec, sens, "o", color="tab:blue", mec="k", ms=8, label=f"model at threshold {threshold:g}")
    markers = ["s", "^", "D", "v", "P", "X"]
    colors = ["tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    for i, op in enumerate(readers):
        ax.plot(1 - op.specificity, op.sensitivity, markers[i % 6], color=colors[i % 6], mec="k", ms=8,
                label=f"{op.name} (sens {op.sensitivity:.2f}, spec {op.specificity:.2f})")
    _roc_axes(ax)
    # below the axes: inside, it hides the curve exactly where the readers' points often lie
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def baselines_roc_figure(
    y: np.ndarray, p: np.ndarray, model_name: str, model_auc: float,
    baselines: Sequence[tuple[str, np.ndarray, np.ndarray]],
) -> Figure:
    """Patient-level ROC curves of the model and of each baseline (label, labels, probabilities) on one plot."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = Figure(figsize=(5.6, 5.9))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--", label="chance")
    styles = [("tab:orange", "--"), ("tab:green", "-."), ("tab:purple", ":"), ("tab:brown", "--")]
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color="tab:blue", lw=2.2, label=f"{model_name}, AUC {model_auc:.3f}")
    for i, (name, yb, pb) in enumerate(baselines):
        yb = np.asarray(yb).astype(int)
        if len(np.unique(yb)) < 2:
            continue
        fpr, tpr, _ = roc_curve(yb, pb)
        color, ls = styles[i % len(styles)]
        ax.plot(fpr, tpr, color=color, ls=ls, lw=1.8, label=f"{name}, AUC {roc_auc_score(yb, pb):.3f}")
    _roc_axes(ax)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7.5, ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def confusion_figure(rows: Sequence[tuple[str, int, int, int, int]]) -> Figure:
    """Confusion matrices (rows = truth, columns = call) for ``(name, tp, tn, fp, fn)`` rows."""
    n = max(len(rows), 1)
    fig = Figure(figsize=(2.6 * n, 2.8))
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, tp, tn, fp, fn) in zip(axes, rows, strict=False):
        m = np.array([[tn, fp], [fn, tp]])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=12,
                    color="white" if v > 0.6 * m.max() else "black")
        ax.set_xticks([0, 1], ["benign", "malignant"], fontsize=8)
        ax.set_yticks([0, 1], ["benign", "malignant"], fontsize=8)
        ax.set_xlabel("call", fontsize=8)
        ax.set_ylabel("truth", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def fold_auc_figure(folds: Sequence[int], aucs: Sequence[float], pooled: float | None = None) -> Figure:
    """Bar chart of the per-fold patient-level AUCs, with the pooled out-of-fold AUC."""
    fig = Figure(figsize=(max(3.5, 0.5 * len(folds) + 1.5), 2.8))
    ax = fig.subplots()
    vals = np.asarray(aucs, dtype=float)
    ax.bar([str(f) for f in folds], np.nan_to_num(vals), color="tab:blue", alpha=0.8)
    for i, v in enumerate(vals):
        ax.text(i, (0 if np.isnan(v) else v) + 0.02, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", fontsize=7)
    if pooled is not None and np.isfinite(pooled):
        ax.axhline(pooled, color="k", ls="--", lw=1)
        ax.set_title(f"dashed: pooled out-of-fold AUC {pooled:.3f}", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("fold")
    ax.set_ylabel("patient AUC")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def calibration_figure(y: np.ndarray, p: np.ndarray, n_bins: int = 10, *, after: np.ndarray | None = None,
                       others: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Figure:
    """Reliability diagram (sklearn ``calibration_curve``, quantile bins) with a histogram of p.

    Args:
        y: the patients' labels.
        p: the model's (uncalibrated) patient probabilities.
        n_bins: at most this many quantile bins (fewer for small cohorts).
        after: the same patients' calibrated probabilities (out of fold), drawn beside the uncalibrated curve.
        others: more curves (a baseline's probabilities), name -> (labels, probabilities).
    """
    from sklearn.calibration import calibration_curve

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    fig = Figure(figsize=(5.0, 5.0))
    ax, hx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    bins = max(2, min(n_bins, len(y) // 5))
    curves: list[tuple[str, np.ndarray, np.ndarray, str, str]] = [
        ("model" + (", uncalibrated" if after is not None else ""), y, p, "tab:blue", "o-")]
    if after is not None:
        curves.append(("model, calibrated (out of fold)", y, np.asarray(after, dtype=float), "tab:purple", "s-"))
    for (name, (yo, po)), colour in zip((others or {}).items(), ("tab:orange", "tab:brown", "tab:olive"),
                                        strict=False):
        curves.append((name, np.asarray(yo).astype(int), np.asarray(po, dtype=float), colour, "^--"))
    for name, yy, pp, colour, style in curves:
        if len(np.unique(yy)) == 2:
            frac, mean_p = calibration_curve(yy, pp, n_bins=bins, strategy="quantile")
            ax.plot(mean_p, frac, style, color=colour, ms=4, label=f"{name} ({bins} quantile bins)")
    ax.set_ylabel("observed fraction malignant")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    hx.hist([p[y == 0], p[y == 1]], bins=20, range=(0, 1), stacked=True, color=["tab:green", "tab:red"],
            label=["benign", "malignant"])
    hx.set_xlabel("predicted probability of malignancy (patient, uncalibrated)")
    hx.set_ylabel("patients")
    hx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reader_study_figure(
    y: np.ndarray | None, p: np.ndarray | None, moves: Sequence[tuple[OperatingPoint, OperatingPoint]], *,
    threshold: float = 0.5, simulated: bool = False,
) -> Figure:
    """Each reader's operating point unaided -> aided, drawn as an arrow over the model's out-of-fold ROC curve on
    the study's cases (``y``, ``p``; None: no curve).

    Args:
        moves: per reader ``(unaided, aided)`` operating points (the name is the reader's).
        threshold: the model's decision threshold (its operating point is marked).
        simulated: the reads are simulated: said in the title, so the image says it even when copied alone.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = Figure(figsize=(5.6, 6.4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--", label="chance")
    if y is not None and p is not None and len(np.unique(y)) == 2:
        y = np.asarray(y).astype(int)
        p = np.asarray(p, dtype=float)
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color="tab:blue", lw=2,
                label=f"model (out-of-fold), AUC {roc_auc_score(y, p):.3f} on these {len(y)} cases")
        pred = p >= threshold
        ax.plot(1 - float((~pred[y == 0]).mean()), float(pred[y == 1].mean()), "o", color="tab:blue", mec="k",
                ms=8, label=f"model at threshold {threshold:g}")
    colors = ["tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    for i, (u, a) in enumerate(moves):
        c = colors[i % len(colors)]
        ms = max(5.0, 10.0 - 1.5 * i)  # each later reader smaller: readers at the same point stay visible
        xu, yu, xa, ya = 1 - u.specificity, u.sensitivity, 1 - a.specificity, a.sensitivity
        ax.plot(xu, yu, "o", mfc="white", mec=c, mew=2, ms=ms)
        ax.plot(xa, ya, "o", color=c, mec="k", ms=ms,
                label=f"{u.name}: sens {u.sensitivity:.2f} -> {a.sensitivity:.2f}, spec {u.specificity:.2f} -> "
                      f"{a.specificity:.2f}")
        if (xu, yu) != (xa, ya):
            ax.annotate("", xy=(xa, ya), xytext=(xu, yu),
                        arrowprops={"arrowstyle": "-|>", "color": c, "lw": 1.8, "shrinkA": 5, "shrinkB": 5})
    _roc_axes(ax)
    ax.set_title(("SIMULATED readers: " if simulated else "Readers: ") + "unaided (open) -> aided (filled)",
                 fontsize=9, color="#6a4fa3" if simulated else "black", fontweight="bold" if simulated else "normal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def conformal_curve_figure(curve: Sequence[Mapping[str, Any]], alpha: float) -> Figure:
    """Coverage per class and referral rate against alpha (out of fold), the run's alpha marked."""
    a = np.array([float(c["alpha"]) for c in curve])

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if c.get(key) is None else float(c[key]) for c in curve])

    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    ax.plot(a, 1 - a, color="0.6", ls="--", lw=1, label="target coverage 1 - alpha")
    ax.plot(a, col("coverage_benign"), "o-", color="tab:green", ms=4, label="coverage, benign")
    ax.plot(a, col("coverage_malignant"), "o-", color="tab:red", ms=4, label="coverage, malignant")
    ax.plot(a, col("referral_rate"), "s-", color="0.3", ms=4, label="referral rate")
    ax.plot(a, col("accepted_accuracy"), "^:", color="tab:blue", ms=4, label="accuracy on accepted patients")
    ax.axvline(alpha, color="tab:purple", ls=":", label=f"run's alpha {alpha:g}")
    ax.set_xlabel("alpha (error rate allowed per class)")
    ax.set_ylabel("fraction of patients")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig
