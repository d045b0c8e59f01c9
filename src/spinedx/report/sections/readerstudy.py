"""The reader study: each reader unaided -> aided over the model's ROC curve, the MRMC table, the per-reader table,
the model vs the readers, and the least experienced reader's errors.

Shown from ``stats/reader_study.json`` (``spinedx stats --study STUDY``, or ``--simulated-study`` for the main job's
simulated readers); the report never computes it. A simulated study says SIMULATED in the section's title, a
banner, the figure's title and every table's file.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spinedx.common import format_p
from spinedx.report import figures as F
from spinedx.report.page import ci, fmt

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page

#: The banner of a simulated reader study.
SIMULATED_BANNER = ("SIMULATED reader study. These reads were not made by anyone: the synthetic cohort's simulated "
                    "readers read every case unaided and then aided by the model's out-of-fold probability, moving "
                    "toward it with a reliance chosen for the demonstration (spinedx.synth.aided). The section shows "
                    "the analysis a real study gets (spinedx readers plan, spinedx serve --study, spinedx stats "
                    "--study); its numbers are a simulation of reliance, not evidence about real readers.")


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _signed(est: Any, lo: Any, hi: Any) -> str:
    if est is None:
        return "n/a"
    return f"{float(est):+.3f} ({_num(lo):+.3f} to {_num(hi):+.3f})"


def _aided_minus_unaided(test: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The test's ``unaided - aided`` interval turned into ``aided - unaided``."""
    for c in test.get("ci") or []:
        if c.get("comparison") == "unaided - aided":
            return (None if c.get("estimate") is None else -c["estimate"],
                    None if c.get("high") is None else -c["high"], None if c.get("low") is None else -c["low"])
        if c.get("comparison") == "aided - unaided":
            return c.get("estimate"), c.get("low"), c.get("high")
    return None, None, None


def _mrmc_rows(rs: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, name in (("rrrc", "RRRC: readers and cases random (the main result)"),
                      ("frrc", "FRRC: readers fixed (these readers only)"), ("rrfc", "RRFC: cases fixed")):
        t = rs.get(key)
        if not isinstance(t, dict):
            continue
        est, lo, hi = _aided_minus_unaided(t)
        if key == "frrc":
            test = f"chi2({fmt(t.get('df'), 0)}) = {fmt(t.get('chisq'), 3)}"
        else:
            test = f"F({fmt(t.get('ndf'), 0)}, {fmt(_num(t.get('ddf')), 2)}) = {fmt(t.get('f'), 3)}"
        rows.append({"analysis": name, "test": test, "p": t.get("p"), "aided_minus_unaided": est, "low": lo,
                     "high": hi})
    return rows


def _reader_rows(rs: dict[str, Any]) -> list[dict[str, Any]]:
    tab = pd.DataFrame(rs["readers_table"])
    mc = pd.DataFrame(rs["mcnemar"] or [])
    rows = []
    for reader in rs["readers"]:
        row: dict[str, Any] = {"reader": reader}
        for mod in ("unaided", "aided"):
            r = tab[(tab["reader"] == reader) & (tab["modality"] == mod)].iloc[0].to_dict()
            row[f"auc_{mod}"] = r.get("auc")
            for m in ("sensitivity", "specificity", "accuracy"):
                for suffix in ("", "_low", "_high"):
                    row[f"{m}{suffix}_{mod}"] = r.get(f"{m}{suffix}")
        for group, what in (("positive", "sensitivity"), ("negative", "specificity")):
            hit = mc[(mc["reader"] == reader) & (mc["group"] == group)] if len(mc) else mc
            row[f"mcnemar_p_{what}"] = hit["p_value"].iloc[0] if len(hit) else None
            row[f"mcnemar_p_holm_{what}"] = hit["p_holm"].iloc[0] if len(hit) else None
        rows.append(row)
    return rows


def _standalone(rs: dict[str, Any]) -> list[str]:
    out = []
    for s in rs.get("model_vs_readers") or []:
        lo, hi = (s.get("ci_diff") or [None, None])[:2]
        out.append(f"Model vs readers, {s['modality']} reads (Chakraborty's 1T-RRRC, the model as a fixed reader): "
                   f"model AUC {fmt(s.get('model_auc'))}, readers' average {fmt(s.get('readers_mean'))}, readers - "
                   f"model {_signed(s.get('diff'), lo, hi)}, F(1, {fmt(_num(s.get('df')), 1)}) = "
                   f"{fmt(s.get('f'), 2)}, p {format_p(s.get('p'))}.")
    return out


def _errors(rs: dict[str, Any]) -> str:
    e = rs.get("error_analysis")
    if not isinstance(e, dict):
        return ""
    fp, fn = e["counts"]["false_positive"], e["counts"]["false_negative"]
    n_err = fp["unaided"] + fn["unaided"]
    text = (f"Errors of {e['reader']} (the least experienced reader, as the paper's R1): unaided, "
            f"{fp['unaided']} of {fp['cases']} benign cases called malignant and {fn['unaided']} of {fn['cases']} "
            f"malignant cases called benign; aided, {fp['fixed'] + fn['fixed']} of these {n_err} errors were fixed "
            f"({fp['fixed']} false positives, {fn['fixed']} false negatives) and {fp['new_errors'] + fn['new_errors']} "
            "new errors made.")
    feats = [f for f in e.get("features") or [] if f.get("p_value") is not None and f["p_value"] < 0.05]
    if e.get("features") is not None:
        shown = "; ".join(f"{f['description']} ({'false positives vs true negatives' if f['comparison'] == 'fp_vs_tn' else 'false negatives vs true positives'}: {f['group1_n']}/{f['group1_total']} vs {f['group2_n']}/{f['group2_total']}, Fisher p {format_p(f['p_value'])})"  # noqa: E501
                          for f in feats)
        text += f" Features behind the unaided errors with p < 0.05: {shown or 'none'}."
    return text


def build(inp: ReportInputs, page: Page) -> None:
    """The reader-study section (``report_reader_study_mrmc.csv``, ``report_reader_study_readers.csv``)."""
    rs = inp.reader_study
    if rs is None:
        inp.notes["readerstudy"].append(
            "No reader study: the statistics hold no unaided and aided reads. Plan a study on this cohort (spinedx "
            "readers plan), read it with this run's model (spinedx serve --study STUDY --model RUN), then spinedx "
            "stats COHORT --run RUN --study STUDY and this report again (docs/readers.md).")
        return
    simulated = bool(rs.get("simulated"))
    d = page.readerstudy
    d["title"] = "Reader study (SIMULATED readers)" if simulated else "Reader study"
    d["banner"] = SIMULATED_BANNER if simulated else ""
    study = rs.get("study") or {}
    head = (f"{rs['n_cases']} cases ({rs.get('n_positive')} malignant, {rs.get('n_negative')} benign), readers "
            f"{', '.join(rs['readers'])}, each case read unaided and aided by the model")
    if simulated:
        rel = (rs.get("simulation") or {}).get("reliance") or {}
        d["intro"] = (f"{head}. Simulated: each reader's aided confidence is a weighted average of its own log-odds "
                      f"and the model's out-of-fold log-odds, with reliance {', '.join(f'{r} {w:g}' for r, w in rel.items())} "  # noqa: E501
                      "(the weight of the model).")
    else:
        d["intro"] = (f"{head}. Study {study.get('path')} ({study.get('design')} design; "
                      f"{study.get('completeness')}); the model's scores are its out-of-fold probabilities.")
    d["notes"] = [str(n) for n in rs.get("notes") or []]

    cases = pd.DataFrame(rs["cases"])
    has_model = bool(len(cases)) and bool(cases["model_score"].notna().all())
    tab = pd.DataFrame(rs["readers_table"])
    moves = []
    for reader in rs["readers"]:
        pts = []
        for mod in ("unaided", "aided"):
            r = tab[(tab["reader"] == reader) & (tab["modality"] == mod)].iloc[0]
            pts.append(F.OperatingPoint(reader, _num(r.get("sensitivity")), _num(r.get("specificity"))))
        if all(np.isfinite([p.sensitivity, p.specificity]).all() for p in pts):
            moves.append((pts[0], pts[1]))
    model_info = rs.get("model") or {}
    threshold = float(model_info.get("threshold", inp.threshold))
    page.figures["readerstudy"] = F.data_uri(F.reader_study_figure(
        cases["truth"].to_numpy(dtype=int) if has_model else None,
        cases["model_score"].to_numpy(dtype=float) if has_model else None, moves, threshold=threshold,
        simulated=simulated))

    mrmc = _mrmc_rows(rs)
    avg = (rs.get("auc") or {}).get("reader_average") or {}
    each = {c.get("modality"): c for c in ((rs.get("rrrc") or {}).get("ci_each_modality") or [])}
    page.tables["reader_study_mrmc"] = pd.DataFrame(mrmc).assign(simulated=simulated)
    d["mrmc_head"] = ["Analysis", "Test", "p", "AUC aided - unaided (95% CI)"]
    d["mrmc"] = [[r["analysis"], r["test"], format_p(r["p"]), _signed(r["aided_minus_unaided"], r["low"], r["high"])]
                 for r in mrmc]
    d["auc_line"] = "Reader-averaged AUC (95% CI, RRRC): " + "; ".join(
        f"{mod} {ci(avg.get(mod), (each.get(mod) or {}).get('low'), (each.get(mod) or {}).get('high'))}"
        for mod in ("unaided", "aided"))

    rows = _reader_rows(rs)
    page.tables["reader_study_readers"] = pd.DataFrame(rows).assign(simulated=simulated)
    d["readers_head"] = ["Reader", "Reads", "AUC", "Sensitivity (95% CI)", "Specificity (95% CI)",
                         "Accuracy (95% CI)", "McNemar p, sensitivity (Holm)", "McNemar p, specificity (Holm)"]
    d["readers"] = []
    for r in rows:
        name = (r["reader"] + " (simulated)") if simulated else r["reader"]
        for mod in ("unaided", "aided"):
            mcn = ([f"{format_p(r[f'mcnemar_p_{w}'])} ({format_p(r[f'mcnemar_p_holm_{w}'])})"
                    for w in ("sensitivity", "specificity")] if mod == "aided" else ["", ""])
            d["readers"].append([name if mod == "unaided" else "", mod, fmt(r[f"auc_{mod}"]),
                                 *(ci(r[f"{m}_{mod}"], r[f"{m}_low_{mod}"], r[f"{m}_high_{mod}"], pct=True)
                                   for m in ("sensitivity", "specificity", "accuracy")), *mcn])
    d["standalone"] = _standalone(rs)
    if not d["standalone"]:
        d["notes"].append("No model vs readers comparison: the statistics hold no model scores of the study's cases.")
    d["errors"] = _errors(rs)
