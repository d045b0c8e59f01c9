"""Analyse a reader study: read and check ``READS.csv`` and ``TRUTH.csv``, run the MRMC analysis, tabulate readers.

Inputs (UTF-8 CSV with a header row; docs/readers.md, "Analysis"):

* ``READS.csv``: one row per read, ``case_id, reader, modality, score`` and optionally ``call`` (``benign``/
  ``malignant`` or ``0``/``1``); ``score`` is any number, higher = more likely positive (a probability, a 1-5 or
  0-100 confidence rating). Other columns are ignored.
* ``TRUTH.csv``: ``case_id, truth`` with truth ``1`` (positive, malignant) or ``0``.
* optionally ``MODEL.csv``: ``case_id, score``, the standalone model's score of every case, compared with the
  readers of each modality by Chakraborty's 1T-RRRC method. The model is a separate file, not a reader named
  ``model``, so that no reader's name changes meaning and the model needs no modality.

:func:`analyze_reads` works on DataFrames (a study folder can call it with tables it holds); :func:`load_reads`,
:func:`load_truth` and :func:`load_model_scores` read the files (they and the checks of every cell live in
:mod:`spinedx.readers.tables`). Every problem is a
:class:`~spinedx.errors.SpinedxError` that names the file (``where``), the line (the CSV line, header = line 1) and
the column, and says what to do; nothing is guessed. The design must be fully crossed: every reader reads every case
in every modality (``complete_cases_only`` keeps the cases that are, and says which were left out).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.readers.mrmc import ORResult, or_analysis
from spinedx.readers.standalone import StandaloneResult, standalone_vs_readers
from spinedx.readers.tables import (
    Reads,
    check_classes,
    check_duplicate_reads,
    check_known_cases,
    check_model_scores,
    check_reads_header,
    check_truth,
    incomplete_cases,
    load_model_scores,
    load_reads,
    load_truth,
    reads_columns,
    study_readers,
)

__all__ = [
    "ReaderStudyResult",
    "analyze_reads",
    "file_inputs",
    "load_model_scores",
    "load_reads",
    "load_truth",
    "write_result_json",
]

#: The references printed with every result (docs/readers.md has the full list).
METHOD = ("Obuchowski-Rockette analysis (Obuchowski & Rockette 1995) of empirical (Wilcoxon) AUCs with error "
          "covariances by the case jackknife and Hillis's denominator degrees of freedom (Hillis 2007; Hillis, "
          "Berbaum & Metz 2008); variance components after Hillis, Obuchowski & Berbaum 2011; the standalone model "
          "vs the readers by Chakraborty's 1T-RRRC method (RJafroc StSignificanceTestingCadVsRad)")


# ---------------------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class ReaderStudyResult:
    """Everything :func:`analyze_reads` found.

    Attributes:
        cases: the analysed case ids (truth file order).
        truth: their truth (0/1).
        excluded_cases: cases of the truth file left out by ``complete_cases_only`` (incomplete reads).
        readers, modalities: in the order of the reads (or of ``readers`` when given).
        mrmc: the Obuchowski-Rockette analysis (None with a single modality, allowed only with model scores).
        standalone: the model vs the readers, one per modality (empty without model scores).
        readers_table: per reader and modality: AUC and, with calls, counts, sensitivity, specificity, accuracy,
            PPV and NPV with Wilson intervals.
        mcnemar: per reader and pair of modalities, McNemar tests on positive (sensitivity) and negative
            (specificity) cases, with Holm-adjusted p; None without calls.
        calls_from: ``"call column"``, ``"score >= T"`` or None (no calls: no sensitivity, specificity, McNemar).
        alpha: 1 - confidence level.
        inputs: where the tables came from (names, and sha256 when read from files).
    """

    cases: list[str]
    truth: np.ndarray
    excluded_cases: list[str]
    readers: list[str]
    modalities: list[str]
    mrmc: ORResult | None
    standalone: list[StandaloneResult]
    readers_table: pd.DataFrame
    mcnemar: pd.DataFrame | None
    calls_from: str | None
    alpha: float
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_positive(self) -> int:
        """Positive cases analysed."""
        return int(self.truth.sum())

    @property
    def n_negative(self) -> int:
        """Negative cases analysed."""
        return int(len(self.truth) - self.truth.sum())

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see docs/readers.md, "JSON fields"); NaN/inf still floats (use ``json_clean``)."""
        doc: dict[str, Any] = {
            "format": 1,
            "what": "spinedx reader study analysis (research use only)",
            "method": METHOD,
            "inputs": self.inputs,
            "alpha": self.alpha,
            "n_cases": len(self.cases),
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "excluded_cases": self.excluded_cases,
            "readers": self.readers,
            "modalities": self.modalities,
            "calls_from": self.calls_from,
        }
        if self.mrmc is not None:
            m = self.mrmc.to_dict()
            doc["auc"] = {"per_reader": m["auc"], "reader_average": m["auc_reader_average"]}
            for key in ("rrrc", "frrc", "rrfc", "variance_components"):
                doc[key] = m[key]
        else:
            doc["auc"] = {"per_reader": _auc_from_table(self.readers_table), "reader_average": {
                mod: float(self.readers_table.loc[self.readers_table["modality"] == mod, "auc"].mean())
                for mod in self.modalities}}
            doc["rrrc"] = doc["frrc"] = doc["rrfc"] = doc["variance_components"] = None
        doc["readers_table"] = self.readers_table.to_dict(orient="records")
        doc["mcnemar"] = None if self.mcnemar is None else self.mcnemar.to_dict(orient="records")
        doc["model_vs_readers"] = [s.to_dict() for s in self.standalone] or None
        return doc

    def summary_lines(self) -> list[str]:
        """A short human summary (what ``spinedx readers analyze`` prints)."""
        pct = round(100 * (1 - self.alpha))
        out = [f"reader study: {len(self.cases)} cases ({self.n_positive} positive, {self.n_negative} negative), "
               f"{len(self.readers)} readers, modalities {', '.join(self.modalities)}"
               + (f"; {len(self.excluded_cases)} incomplete case(s) left out" if self.excluded_cases else "")]
        tab = self.readers_table
        for mod in self.modalities:
            aucs = tab.loc[tab["modality"] == mod, "auc"].to_numpy(dtype=float)
            out.append(f"  AUC {mod}: reader average {aucs.mean():.4f} (readers {' '.join(f'{a:.4f}' for a in aucs)})")
        m = self.mrmc
        if m is not None:
            out.append(f"Obuchowski-Rockette, Hillis ddf, jackknife covariances ({pct}% intervals):")
            for key, label, t in (("rrrc", "RRRC (readers and cases random):", m.rrrc),
                                  ("frrc", "FRRC (readers fixed):           ", m.frrc),
                                  ("rrfc", "RRFC (cases fixed):             ", m.rrfc)):
                test = (f"chi2({t.ndf:g}) = {t.chisq:.3f}" if key == "frrc"
                        else f"F({t.ndf:g}, {t.ddf:.4g}) = {t.f:.3f}")
                diffs = "; ".join(f"{c.modality_a} - {c.modality_b} = {c.estimate:+.4f} ({c.low:+.4f} to "
                                  f"{c.high:+.4f})" for c in t.ci_diff)
                out.append(f"  {label} {test}, p = {_p(t.p)}; {diffs}")
            v = m.components
            out.append(f"  variance components: Var {v.var:.3g}, Cov1 {v.cov1:.3g}, Cov2 {v.cov2:.3g}, "
                       f"Cov3 {v.cov3:.3g}, var(TR) {v.var_tr:.3g}, var(R) {v.var_r:.3g}")
        for s in self.standalone:
            out.append(f"model vs readers ({s.modality}, 1T-RRRC): model AUC {s.model_auc:.4f}, readers "
                       f"{s.readers_mean:.4f}, readers - model {s.diff:+.4f} ({s.ci_diff[0]:+.4f} to "
                       f"{s.ci_diff[1]:+.4f}), F(1, {s.df:.4g}) = {s.f:.3f}, p = {_p(s.p)}")
        if self.calls_from is not None:
            out.append(f"readers' calls ({self.calls_from}; {pct}% Wilson intervals):")
            for r in tab.to_dict(orient="records"):
                out.append(f"  {r['reader']:<12} {r['modality']:<10} sens {_prop(r, 'sensitivity')}  "
                           f"spec {_prop(r, 'specificity')}  acc {_prop(r, 'accuracy')}")
        if self.mcnemar is not None and len(self.mcnemar):
            out.append("McNemar per reader (b: first modality right, second wrong; p Holm-adjusted over the table):")
            for r in self.mcnemar.to_dict(orient="records"):
                out.append(f"  {r['reader']:<12} {r['modality_a']} vs {r['modality_b']} on {r['group']} cases: "
                           f"b {r['b']}, c {r['c']}, p = {_p(r['p_value'])} (Holm {_p(r['p_holm'])})")
        out.append("research use only, not for clinical decisions")
        return out


def _p(p: float) -> str:
    from spinedx.common import format_p

    return format_p(p)


def _prop(r: dict[str, Any], name: str) -> str:
    v = r.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f} ({r[name + '_low']:.3f}-{r[name + '_high']:.3f})"


def _auc_from_table(tab: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in tab.to_dict(orient="records"):
        out.setdefault(str(r["modality"]), {})[str(r["reader"])] = float(r["auc"])
    return out


# ---------------------------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------------------------

def analyze_reads(
    reads: pd.DataFrame, truth: pd.DataFrame, *, model_scores: pd.DataFrame | None = None, alpha: float = 0.05,
    threshold: float | None = None, complete_cases_only: bool = False, readers: Sequence[str] | None = None,
    reads_name: str = "READS.csv", truth_name: str = "TRUTH.csv", model_name: str = "model scores",
) -> ReaderStudyResult:
    """Check a reader study's tables and analyse it.

    Args:
        reads: ``case_id, reader, modality, score`` (+ optional ``call``), one row per read.
        truth: ``case_id, truth`` (0/1), one row per case; its cases are the study's cases.
        model_scores: optional ``case_id, score`` of a standalone model: compared with the readers of each modality
            (1T-RRRC). With it a single modality is allowed (then only that comparison and the reader table run).
        alpha: 1 - confidence level of every interval (0 < alpha < 1).
        threshold: with no ``call`` column, call positive when ``score >= threshold``; None: no calls (no
            sensitivity, specificity or McNemar). Refused when ``reads`` has a ``call`` column.
        complete_cases_only: analyse only the cases read by every reader in every modality (and scored by the model)
            instead of refusing incomplete reads.
        readers: the study's readers, when known: reads by anyone else are refused, and a listed reader without
            reads counts as missing every case. None: the readers are those in ``reads``.
        reads_name, truth_name, model_name: how error messages name the tables (their file names).

    Returns:
        :class:`ReaderStudyResult`.

    Raises:
        SpinedxError: naming the table, line and column: missing columns, empty ids, non-numeric or non-finite
            scores, calls other than benign/malignant/0/1, truth other than 0/1, duplicate cases or reads, reads of
            cases not in the truth table or by readers not in ``readers``, readers who did not read every case
            (unless ``complete_cases_only``), fewer than two modalities (without model scores) or readers, a truth
            with one class (or fewer than two cases of a class), a bad ``alpha`` or ``threshold``.
    """
    _check_options(alpha, threshold)
    has_call = check_reads_header(reads, threshold, reads_name)
    case_list, y_all = check_truth(truth, truth_name)
    check_classes(y_all, truth_name)
    rd = reads_columns(reads, has_call, reads_name)
    check_known_cases(rd, set(case_list), truth_name, reads_name)
    reader_list = study_readers(rd, readers, reads_name)
    mod_list = list(dict.fromkeys(rd.modality))
    check_duplicate_reads(rd, reads_name)
    model_map = None if model_scores is None else check_model_scores(model_scores, set(case_list), model_name)
    _check_design(reader_list, mod_list, model_map is not None, reads_name)
    excluded = incomplete_cases(rd, case_list, reader_list, mod_list, model_map,
                                complete_cases_only=complete_cases_only, truth_name=truth_name,
                                model_name=model_name, where=reads_name)
    cases, y = _analysed_cases(case_list, y_all, excluded, truth_name, reads_name)
    cube, calls, calls_from = _score_cube(rd, cases, reader_list, mod_list, threshold)

    mrmc = or_analysis(cube, y, modalities=mod_list, readers=reader_list, alpha=alpha) if len(mod_list) > 1 else None
    standalone = []
    if model_map is not None:
        model_vec = np.array([model_map[c] for c in cases])
        standalone = [standalone_vs_readers(model_vec, cube[i], y, readers=reader_list, modality=m, alpha=alpha)
                      for i, m in enumerate(mod_list)]
    table = _readers_table(cube, calls if calls_from else None, y, mod_list, reader_list, alpha)
    mcn = _mcnemar(calls, y, mod_list, reader_list) if calls_from and len(mod_list) > 1 else None
    return ReaderStudyResult(cases=cases, truth=y, excluded_cases=excluded, readers=reader_list, modalities=mod_list,
                             mrmc=mrmc, standalone=standalone, readers_table=table, mcnemar=mcn,
                             calls_from=calls_from, alpha=alpha,
                             inputs={"reads": reads_name, "truth": truth_name,
                                     "model_scores": model_name if model_scores is not None else None})


def _check_options(alpha: float, threshold: float | None) -> None:
    """Refuse an ``alpha`` outside (0, 1) and a threshold that is not a finite number."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise SpinedxError(f"must be between 0 and 1 (exclusive), not {alpha!r}", where="alpha")
    if threshold is not None and not math.isfinite(threshold):
        raise SpinedxError(f"must be a finite number, not {threshold!r}", where="threshold")


def _check_design(reader_list: list[str], mod_list: list[str], has_model: bool, where: str) -> None:
    """Refuse a single reader, and a single modality unless a model's scores are compared with the readers."""
    if len(reader_list) < 2:
        raise SpinedxError(f"only one reader ({', '.join(reader_list)}): a multi-reader analysis needs two or more",
                           where=where)
    if len(mod_list) < 2 and not has_model:
        raise SpinedxError(f"only one modality ({mod_list[0]}): the MRMC comparison needs two or more (e.g. unaided "
                           "and aided); to compare a model with the readers in one modality give the model's scores "
                           "(--model-scores)", where=where)


def _analysed_cases(case_list: list[str], y_all: np.ndarray, excluded: list[str], truth_name: str,
                    reads_name: str) -> tuple[list[str], np.ndarray]:
    """The cases left after ``excluded`` (truth order) and their truth; refused when none, or one class, is left."""
    left_out = set(excluded)
    keep = [i for i, c in enumerate(case_list) if c not in left_out]
    if not keep:
        raise SpinedxError("no case was read by every reader in every modality: nothing left to analyse",
                           where=reads_name)
    cases = [case_list[i] for i in keep]
    y = y_all[keep]
    check_classes(y, truth_name, " left after --complete-cases-only" if excluded else "")
    return cases, y


def _score_cube(rd: Reads, cases: list[str], reader_list: list[str], mod_list: list[str],
                threshold: float | None) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The (modality, reader, case) score and call cubes, in the orders given, and where the calls came from.

    Calls are -1 where there are none (no call column and no threshold: ``calls_from`` is None).
    """
    col_of = {c: k for k, c in enumerate(cases)}
    r_of = {r: j for j, r in enumerate(reader_list)}
    m_of = {m: i for i, m in enumerate(mod_list)}
    cube = np.full((len(mod_list), len(reader_list), len(cases)), np.nan)
    calls = np.full(cube.shape, -1, dtype=int)
    kk = rd.case.map(col_of).to_numpy(dtype=float)
    sel = ~np.isnan(kk)  # reads of excluded cases drop out
    ii = rd.modality.map(m_of).to_numpy(dtype=int)[sel]
    jj = rd.reader.map(r_of).to_numpy(dtype=int)[sel]
    idx = (ii, jj, kk[sel].astype(int))
    cube[idx] = rd.score[sel]
    if rd.call is not None:
        calls[idx] = rd.call[sel]
    elif threshold is not None:
        calls[idx] = (rd.score[sel] >= threshold).astype(int)
    calls_from = ("call column" if rd.call is not None
                  else (f"score >= {threshold:g}" if threshold is not None else None))
    return cube, calls, calls_from


def _readers_table(cube: np.ndarray, calls: np.ndarray | None, y: np.ndarray, mods: list[str], rdrs: list[str],
                   alpha: float) -> pd.DataFrame:
    from spinedx.evaluation.metrics import confusion_counts, metrics_from_counts
    from spinedx.readers.mrmc import empirical_auc

    auc = empirical_auc(cube, y)
    rows = []
    for i, m in enumerate(mods):
        for j, r in enumerate(rdrs):
            row: dict[str, Any] = {"reader": r, "modality": m, "n": int(len(y)), "auc": float(auc[i, j])}
            if calls is not None:
                row.update(metrics_from_counts(**confusion_counts(y, calls[i, j]), alpha=alpha))
            rows.append(row)
    return pd.DataFrame(rows)


def _mcnemar(calls: np.ndarray, y: np.ndarray, mods: list[str], rdrs: list[str]) -> pd.DataFrame:
    """Per reader, each pair of modalities: McNemar on positive cases (sensitivity) and negative (specificity)."""
    from spinedx.evaluation.stattests import discordant_counts, holm, mcnemar_from_counts

    rows = []
    correct = (calls == y[None, None, :]).astype(float)
    for j, r in enumerate(rdrs):
        for a, b in itertools.combinations(range(len(mods)), 2):
            for group, label in (("positive", 1), ("negative", 0)):
                sel = y == label
                n, nb, nc = discordant_counts(correct[a, j, sel], correct[b, j, sel])
                res = mcnemar_from_counts(nb, nc, n=n)
                rows.append({"reader": r, "modality_a": mods[a], "modality_b": mods[b], "group": group, "n": n,
                             "b": nb, "c": nc, "test": res.test, "statistic": res.statistic, "p_value": res.p_value})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float)) if len(table) else []
    return table


class _Document(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def write_result_json(result: _Document, path: str | Path) -> Path:
    """Write ``result`` (with provenance) as JSON, atomically (complete or untouched; :mod:`spinedx.fsutil`).

    ``result`` is a :class:`ReaderStudyResult` or a study folder's
    :class:`spinedx.readers.study_analysis.StudyAnalysis` (the same fields and the study's own)."""
    from spinedx.common import json_clean
    from spinedx.fsutil import atomic_write_json
    from spinedx.provenance import provenance

    doc = result.to_dict()
    doc["provenance"] = provenance()
    return atomic_write_json(path, json_clean(doc))


def file_inputs(reads: str | Path, truth: str | Path, model: str | Path | None) -> dict[str, Any]:
    """``inputs`` of a result read from files: each path with its sha256."""
    from spinedx.provenance import sha256_file

    out: dict[str, Any] = {}
    for key, p in (("reads", reads), ("truth", truth), ("model_scores", model)):
        out[key] = None if p is None else {"path": str(p), "sha256": sha256_file(p)}
    return out
