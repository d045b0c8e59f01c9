"""The study's tables: Table 2 (readers and model), McNemar tests between raters, Table 1 (features) and
the error analysis of one reader (Yeh et al. 2022, "Statistical analysis" and "Results")."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from spinedx.evaluation.metrics import metrics_from_counts
from spinedx.evaluation.stattests import (
    ALPHA,
    FisherResult,
    discordant_counts,
    fisher_from_counts,
    holm,
    mcnemar_from_counts,
)
from spinedx.features import FEATURES, READER_COLUMNS

#: Rater name of the model's out-of-fold patient predictions in every table.
MODEL_RATER = "model"

PERF_COLUMNS = (
    "rater", "n", "n_missing", "tp", "tn", "fp", "fn",
    *(f"{m}{s}" for m in ("sensitivity", "specificity", "accuracy", "ppv", "npv") for s in ("", "_low", "_high")),
)
MCNEMAR_COLUMNS = ("rater_a", "rater_b", "group", "n", "b", "c", "test", "statistic", "p_value", "p_holm")
TABLE1_COLUMNS = (
    "feature", "description", "malignant_n", "malignant_total", "malignant_pct", "benign_n", "benign_total",
    "benign_pct", "p_value", "p_holm", "odds_ratio", "or_low", "or_high",
)
ERROR_COLUMNS = (
    "reader", "comparison", "feature", "description", "group1_n", "group1_total", "group2_n", "group2_total",
    "p_value", "p_holm", "odds_ratio", "or_low", "or_high",
)
#: What the ``p_holm`` column of every table means (shown next to the tables).
HOLM_NOTE = ("p (Holm): Holm-adjusted for the number of tests in this table (statsmodels multipletests, "
             "method holm); the unadjusted p is what the paper reports")

_CALLS = {"benign": 0.0, "malignant": 1.0}


# --------------------------------------------------------------------------------------------
# Table 2: raters
# --------------------------------------------------------------------------------------------


def rater_performance(y_true: np.ndarray, calls: Mapping[str, np.ndarray], alpha: float = ALPHA) -> pd.DataFrame:
    """Table 2: one row per rater with counts and proportions with Wilson intervals.

    Args:
        y_true: Labels, 1 = malignant (positive), 0 = benign.
        calls: Rater name -> calls aligned with ``y_true`` (1 malignant, 0 benign, NaN no call).
            Patients without a call are left out of that rater's figures and counted in
            ``n_missing``.
        alpha: 1 - confidence level.

    Returns:
        Columns :data:`PERF_COLUMNS`.
    """
    y = np.asarray(y_true, dtype=int)
    rows = []
    for rater, call in calls.items():
        call = np.asarray(call, dtype=float)
        has = ~np.isnan(call)
        yt, yp = y[has], call[has].astype(int)
        counts = {
            "tp": int(np.sum((yt == 1) & (yp == 1))), "tn": int(np.sum((yt == 0) & (yp == 0))),
            "fp": int(np.sum((yt == 0) & (yp == 1))), "fn": int(np.sum((yt == 1) & (yp == 0))),
        }
        row = {"rater": rater, "n_missing": int((~has).sum()), **metrics_from_counts(**counts, alpha=alpha)}
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PERF_COLUMNS))


def mcnemar_table(y_true: np.ndarray, calls: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """McNemar tests between every pair of raters, on malignant and on benign patients.

    On malignant patients a rater is right when it calls malignant (the test compares
    sensitivities); on benign patients when it calls benign (specificities). Each pair uses the
    patients both raters called.

    Returns:
        Columns :data:`MCNEMAR_COLUMNS`; ``b`` counts patients ``rater_a`` got right and
        ``rater_b`` got wrong, ``c`` the reverse.
    """
    y = np.asarray(y_true, dtype=int)
    correct = {}
    for name, v in calls.items():
        call = np.asarray(v, dtype=float)
        correct[name] = np.where(np.isnan(call), np.nan, (call == y).astype(float))
    rows = []
    for a, b in itertools.combinations(list(calls), 2):
        for group, label in (("malignant", 1), ("benign", 0)):
            sel = y == label
            n, nb, nc = discordant_counts(correct[a][sel], correct[b][sel])
            res = mcnemar_from_counts(nb, nc, n=n)
            rows.append({"rater_a": a, "rater_b": b, "group": group, "n": n, "b": nb, "c": nc, "test": res.test,
                         "statistic": res.statistic, "p_value": res.p_value})
    return _with_holm(pd.DataFrame(rows, columns=list(MCNEMAR_COLUMNS)))


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``p_holm``: its ``p_value`` column Holm-adjusted within the table (:func:`holm`)."""
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float)) if len(table) else []
    return table


# --------------------------------------------------------------------------------------------
# Table 1: features
# --------------------------------------------------------------------------------------------


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The ``feature_*`` columns of ``frame``: the paper's Table 1 order, then any others."""
    known = [f"feature_{n}" for n in FEATURES if f"feature_{n}" in frame.columns]
    extra = sorted(c for c in frame.columns if c.startswith("feature_") and c not in known)
    return known + extra


def reader_columns(frame: pd.DataFrame) -> list[str]:
    """The ``reader_*`` columns: the known readers most to least experienced, then any others."""
    known = [c for c in READER_COLUMNS if c in frame.columns]
    return known + [c for c in frame.columns if c.startswith("reader_") and c not in known]


def _description(column: str) -> str:
    name = column.removeprefix("feature_")
    return FEATURES.get(name, name.replace("_", " "))


def _feature_row(col: str, a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Fisher/odds-ratio row for feature ``col`` in patient groups ``a`` vs ``b`` (NaN left out)."""
    a, b = a.dropna(), b.dropna()
    res = fisher_from_counts(int(a.sum()), len(a), int(b.sum()), len(b))
    return {"feature": col.removeprefix("feature_"), "description": _description(col),
            "p_value": res.p_value, "odds_ratio": res.odds_ratio, "or_low": res.or_low, "or_high": res.or_high,
            "_res": res}


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else math.nan


def feature_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1: each feature's count and percent in the malignant and benign groups, Fisher p, OR.

    Args:
        frame: Study table with ``y`` (1 malignant) and ``feature_*`` columns (0/1, NaN = not
            scored: left out of that feature's totals).

    Returns:
        Columns :data:`TABLE1_COLUMNS`, one row per feature in the paper's order.
    """
    mal, ben = frame[frame["y"] == 1], frame[frame["y"] == 0]
    rows = []
    for col in feature_columns(frame):
        row = _feature_row(col, mal[col], ben[col])
        res: FisherResult = row.pop("_res")
        row.update(malignant_n=res.a_n, malignant_total=res.a_total, malignant_pct=_pct(res.a_n, res.a_total),
                   benign_n=res.b_n, benign_total=res.b_total, benign_pct=_pct(res.b_n, res.b_total))
        rows.append(row)
    return _with_holm(pd.DataFrame(rows, columns=list(TABLE1_COLUMNS)))


# --------------------------------------------------------------------------------------------
# Error analysis and raters
# --------------------------------------------------------------------------------------------


def error_analysis(frame: pd.DataFrame, call: np.ndarray, reader: str) -> pd.DataFrame:
    """Features behind one reader's errors (the paper's analysis of the R1 resident).

    Among benign patients the reader's false positives are compared with the true negatives,
    among malignant patients the false negatives with the true positives, feature by feature
    with Fisher's exact test (features as scored by the senior reader). Patients without a
    call from the reader are left out.

    Args:
        frame: Study table (``y``, ``feature_*``).
        call: The reader's calls aligned with ``frame`` (1 malignant, 0 benign, NaN none).
        reader: The reader's name (reported).

    Returns:
        Columns :data:`ERROR_COLUMNS`; group 1 is the error group (FP or FN), group 2 the correct one.
    """
    call = np.asarray(call, dtype=float)
    y = frame["y"].to_numpy(dtype=int)
    groups = {
        "fp_vs_tn": ((y == 0) & (call == 1), (y == 0) & (call == 0)),
        "fn_vs_tp": ((y == 1) & (call == 0), (y == 1) & (call == 1)),
    }
    rows = []
    for comparison, (g1, g2) in groups.items():
        for col in feature_columns(frame):
            row = _feature_row(col, frame.loc[g1, col], frame.loc[g2, col])
            res: FisherResult = row.pop("_res")
            rows.append({**row, "reader": reader, "comparison": comparison, "group1_n": res.a_n,
                         "group1_total": res.a_total, "group2_n": res.b_n, "group2_total": res.b_total})
    return _with_holm(pd.DataFrame(rows, columns=list(ERROR_COLUMNS)))


def default_error_reader(frame: pd.DataFrame) -> str | None:
    """The least experienced reader present (``reader_r1`` in the paper), or None without readers."""
    readers = reader_columns(frame)
    known = [c for c in READER_COLUMNS if c in readers]
    if known:
        return known[-1]
    return readers[-1] if readers else None


def rater_calls(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reader columns as calls (1 malignant, 0 benign, NaN none), most experienced first."""
    return {c: frame[c].map(lambda v: _CALLS.get(v, np.nan) if isinstance(v, str) else np.nan)
            .to_numpy(dtype=float) for c in reader_columns(frame)}
