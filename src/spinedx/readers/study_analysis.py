"""The reader study analysed from a study folder, or simulated for the main job; what ``spinedx stats`` keeps of it.

Three entries, one result (:class:`StudyAnalysis`):

* :func:`analyze_study` (``spinedx readers analyze STUDY``): the reads and the truth of a study folder (through
  :mod:`spinedx.readers.reads`), the MRMC analysis of :func:`spinedx.readers.analysis.analyze_reads`, the model
  that aided the reads compared with the readers when its out-of-fold probabilities cover the study's cases, and
  the paper's error analysis of the least experienced reader on the real reads.
* :func:`study_for_stats` (``spinedx stats COHORT --run RUN --study STUDY``): the same for a study planned on the
  run's own cohort and aided by the run's own model (anything else is refused), so that the report can draw each
  reader's unaided -> aided move over that model's out-of-fold ROC curve.
* :func:`simulated_for_stats` (``spinedx stats ... --simulated-study``, the main job): the synthetic cohort's
  simulated readers read unaided and then aided by the run's out-of-fold probabilities
  (:mod:`spinedx.synth.aided`); labelled simulated in every output. The caller passes the simulation
  (``simulate=spinedx.synth.aided.simulate_reader_study``): readers and synth are sibling layers that do not
  import each other (pyproject ``[tool.importlinter]``), so the CLI and the main job, above both, join them.

The error analysis is the paper's analysis of its first-year resident (R1): which cases the reader got wrong
unaided (false positives among benign cases, false negatives among malignant ones), the imaging features behind
those errors (:func:`spinedx.evaluation.tables.error_analysis`, features from the cohort manifest, as
``spinedx stats`` does), and whether the aided read fixed them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.readers.analysis import ReaderStudyResult, analyze_reads

__all__ = ["AidedErrors", "StudyAnalysis", "aided_errors", "analyze_study", "headline", "headline_line",
           "simulated_for_stats", "study_for_stats"]

#: How the model's scores of a study's cases are obtained (the only source used).
MODEL_SCORES = "the run's out-of-fold patient probability (oof_patients.csv): each case scored by the fold model " \
               "that did not train on it"
#: Files :meth:`StudyAnalysis.stats_files` writes into ``RUN/stats``.
STATS_JSON = "reader_study.json"


# ---------------------------------------------------------------------------------------------------------------
# The error analysis of one reader, unaided -> aided
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class AidedErrors:
    """One reader's unaided errors and what the aided read did with them.

    Attributes:
        reader: the reader (the least experienced by default: the paper's R1).
        cases: per case ``case_id, truth, unaided_call, aided_call, unaided_score, aided_score, outcome`` with
            outcome ``right`` (right both times), ``fixed`` (wrong unaided, right aided), ``still wrong``,
            ``new error`` (right unaided, wrong aided).
        counts: per kind of error (``false_positive``: benign called malignant; ``false_negative``) the unaided
            errors, how many the aid ``fixed``, how many stayed (``still_wrong``), and the ``new_errors`` aided.
        features: the features of the unaided errors against the correct calls (Fisher, Holm; columns of
            :data:`spinedx.evaluation.tables.ERROR_COLUMNS`), None when the manifest has no features.
    """

    reader: str
    cases: pd.DataFrame
    counts: dict[str, dict[str, int]]
    features: pd.DataFrame | None

    def to_dict(self) -> dict[str, Any]:
        from spinedx.common import json_clean

        return json_clean({"reader": self.reader, "counts": self.counts,
                           "cases": self.cases.to_dict(orient="records"),
                           "features": None if self.features is None else self.features.to_dict(orient="records")})

    def sentence(self) -> str:
        """``r1 unaided: 12 false positives, 5 false negatives; aided: 9 of the 17 fixed, 2 new errors``."""
        fp, fn = self.counts["false_positive"], self.counts["false_negative"]
        n_err = fp["unaided"] + fn["unaided"]
        new = fp["new_errors"] + fn["new_errors"]
        return (f"{self.reader} unaided: {fp['unaided']} false positive(s) (benign called malignant), "
                f"{fn['unaided']} false negative(s); aided: {fp['fixed'] + fn['fixed']} of the {n_err} fixed "
                f"({fp['fixed']} FP, {fn['fixed']} FN), {new} new error(s)")


def aided_errors(reads: pd.DataFrame, truth: pd.DataFrame, reader: str, features: pd.DataFrame | None = None,
                 cases: list[str] | None = None) -> AidedErrors:
    """The paper's R1 error analysis on unaided and aided reads.

    Args:
        reads: ``case_id, reader, modality, score, call`` (calls ``benign``/``malignant``), the analysed reads.
        truth: ``case_id, truth`` (0/1).
        reader: whose errors.
        features: the cases' imaging features, indexed by case id (``feature_*`` columns, 0/1), or None.
        cases: the analysed cases (default: every case of ``truth``).
    """
    from spinedx.evaluation.tables import error_analysis, feature_columns

    t = truth.assign(case_id=truth["case_id"].astype(str), truth=truth["truth"].astype(int))
    if cases is not None:
        t = t[t["case_id"].isin(set(cases))]
    r = reads[reads["reader"].astype(str) == reader]
    got = {(str(c), str(m)): (str(k), float(s)) for c, m, k, s in
           zip(r["case_id"], r["modality"], r["call"], r["score"], strict=True)}
    rows = []
    for cid, y in zip(t["case_id"], t["truth"], strict=True):
        (cu, su), (ca, sa) = got[(cid, "unaided")], got[(cid, "aided")]
        ok_u, ok_a = (cu == "malignant") == bool(y), (ca == "malignant") == bool(y)
        outcome = ("right" if ok_u and ok_a else "fixed" if ok_a else "still wrong" if not ok_u else "new error")
        rows.append({"case_id": cid, "truth": int(y), "unaided_call": cu, "aided_call": ca, "unaided_score": su,
                     "aided_score": sa, "outcome": outcome})
    tab = pd.DataFrame(rows, columns=["case_id", "truth", "unaided_call", "aided_call", "unaided_score",
                                      "aided_score", "outcome"])
    counts = {}
    for kind, y in (("false_positive", 0), ("false_negative", 1)):
        g = tab[tab["truth"] == y]
        counts[kind] = {"cases": len(g), "unaided": int(g["outcome"].isin(["fixed", "still wrong"]).sum()),
                        "fixed": int((g["outcome"] == "fixed").sum()),
                        "still_wrong": int((g["outcome"] == "still wrong").sum()),
                        "new_errors": int((g["outcome"] == "new error").sum())}
    feats = None
    if features is not None and feature_columns(features):
        frame = features.reindex(tab["case_id"]).reset_index(drop=True)
        frame["y"] = tab["truth"].to_numpy()
        unaided = (tab["unaided_call"] == "malignant").to_numpy(dtype=float)
        feats = error_analysis(frame, unaided, reader)
    return AidedErrors(reader, tab, counts, feats)


# ---------------------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------------------

def headline(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The RRRC comparison of aided with unaided as ``aided - unaided`` (the analysis orders modalities as read,
    so its own comparison is ``unaided - aided``): ``estimate``, ``low``, ``high``, ``p``, ``f``, ``ndf``,
    ``ddf`` and the reader-averaged AUCs; None without both modalities or an RRRC result."""
    rrrc = doc.get("rrrc")
    if not isinstance(rrrc, dict):
        return None
    avg = (doc.get("auc") or {}).get("reader_average") or {}
    for c in rrrc.get("ci") or []:
        sign = {"aided - unaided": 1.0, "unaided - aided": -1.0}.get(str(c.get("comparison")))
        if sign is None:
            continue
        lo, hi = c.get("low"), c.get("high")
        est = c.get("estimate")

        def flip(v: Any, s: float = sign) -> float | None:
            return None if v is None else s * float(v)

        low, high = (flip(lo), flip(hi)) if sign > 0 else (flip(hi), flip(lo))
        return {"comparison": "aided - unaided", "estimate": flip(est), "low": low, "high": high,
                "p": c.get("p", rrrc.get("p")), "f": rrrc.get("f"), "ndf": rrrc.get("ndf"), "ddf": rrrc.get("ddf"),
                "auc_unaided": avg.get("unaided"), "auc_aided": avg.get("aided")}
    return None


def headline_line(doc: dict[str, Any]) -> str:
    """One line of a reader study's JSON (``reader_study.json``): the RRRC difference aided - unaided with its
    interval and p, SIMULATED when simulated. What ``spinedx stats`` and the main job print."""
    from spinedx.common import format_p

    what = "simulated reader study (SIMULATED readers and reliance)" if doc.get("simulated") else "reader study"
    h = doc.get("aided_minus_unaided") or headline(doc)
    if not h or h.get("estimate") is None:
        return f"{what}: no RRRC comparison of aided with unaided reads (see {STATS_JSON})"

    def num(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(float(v), fmt)

    pct = round(100 * (1 - float(doc.get("alpha", 0.05))))
    p = format_p(h.get("p"))
    return (f"{what}: RRRC aided - unaided AUC {num(h['estimate'], '+.3f')} ({pct}% CI {num(h['low'], '+.3f')} to "
            f"{num(h['high'], '+.3f')}), F(1, {num(h.get('ddf'), '.3g')}) = {num(h.get('f'), '.2f')}, "
            f"p {p if p.startswith('<') else '= ' + p}; reader-averaged AUC {num(h.get('auc_unaided'), '.3f')} "
            f"unaided, {num(h.get('auc_aided'), '.3f')} aided")


@dataclass
class StudyAnalysis:
    """A reader study analysed (:func:`analyze_study`, :func:`study_for_stats`, :func:`simulated_for_stats`).

    Attributes:
        result: the MRMC analysis and the readers' tables.
        study: what was analysed: ``kind`` (``study folder`` or ``simulated``) and its description.
        simulated: True for the simulated reads of the main job.
        model: the model compared with the readers (``identity``, ``run``, ``scores``, ``threshold``) or None.
        notes: one-line notes (what was left out and why).
        cases: ``case_id, truth, model_score`` (NaN without a model) of the analysed cases.
        errors: the least experienced reader's error analysis, unaided -> aided.
        reads, truth, model_scores: the tables analysed (kept with the statistics of a simulated study).
    """

    result: ReaderStudyResult
    study: dict[str, Any]
    simulated: bool
    model: dict[str, Any] | None
    notes: list[str]
    cases: pd.DataFrame
    errors: AidedErrors | None
    reads: pd.DataFrame
    truth: pd.DataFrame
    model_scores: pd.DataFrame | None = None
    simulation: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of :func:`analyze_reads` (same fields as ``spinedx readers analyze READS.csv --json``) with
        ``study``, ``simulated``, ``simulation``, ``model``, ``notes``, ``cases``, ``aided_minus_unaided`` and
        ``error_analysis`` added."""
        from spinedx.common import json_clean

        doc = self.result.to_dict()
        doc["what"] = ("SIMULATED reader study (spinedx.synth.aided): " if self.simulated else "") + doc["what"]
        doc.update({"simulated": self.simulated, "simulation": self.simulation, "study": self.study,
                    "model": self.model, "notes": self.notes, "cases": self.cases.to_dict(orient="records"),
                    "error_analysis": None if self.errors is None else self.errors.to_dict()})
        doc["aided_minus_unaided"] = headline(json_clean(doc))
        return dict(json_clean(doc))

    def summary_lines(self) -> list[str]:
        """What ``spinedx readers analyze STUDY`` prints."""
        s = self.study
        head = []
        if self.simulated:
            head.append(str((self.simulation or {}).get("note") or "SIMULATED reader study"))
        else:
            head.append(f"study: {s['path']} ({s['design']} design, readers {', '.join(s['readers'])}; "
                        f"{s['completeness']})")
        lines = self.result.summary_lines()
        body, tail = lines[:-1], lines[-1:]
        out = head + body
        if self.model is not None:
            out.append(f"model: {self.model['identity']} ({self.model['run']}): {self.model['scores']}")
        out += [f"note: {n}" for n in self.notes]
        if self.errors is not None:
            out.append(f"error analysis: {self.errors.sentence()}")
            f = self.errors.features
            if f is not None:
                alpha = self.result.alpha
                sig = f[f["p_value"] < alpha]
                shown = "; ".join(f"{'FP vs TN' if r['comparison'] == 'fp_vs_tn' else 'FN vs TP'}: "
                                  f"{r['feature']} {r['group1_n']}/{r['group1_total']} vs "
                                  f"{r['group2_n']}/{r['group2_total']} (p {r['p_value']:.3f})"
                                  for _, r in sig.iterrows())
                out.append(f"  features of {self.errors.reader}'s unaided errors with Fisher p < {alpha:g}: "
                           f"{shown or 'none'}")
        if self.simulated:
            out.append("SIMULATED: " + "; ".join(f"{r} reliance {w:g}" for r, w in
                                                  (self.simulation or {}).get("reliance", {}).items()))
        return out + tail

    def stats_files(self) -> dict[str, Any]:
        """Files for ``RUN/stats`` (name -> DataFrame for a CSV, dict for a JSON): the analysis JSON, the per-reader
        and McNemar tables, the error analysis and, for a simulated study, the reads, truth and model scores it
        analysed (so ``spinedx readers analyze`` can redo it from the files)."""
        files: dict[str, Any] = {STATS_JSON: self.to_dict(), "reader_study_readers.csv": self.result.readers_table}
        if self.result.mcnemar is not None:
            files["reader_study_mcnemar.csv"] = self.result.mcnemar
        if self.errors is not None:
            files["reader_study_error_cases.csv"] = self.errors.cases
            if self.errors.features is not None:
                files["reader_study_error_features.csv"] = self.errors.features
        if self.simulated:
            files["reader_study_reads.csv"] = self.reads
            files["reader_study_truth.csv"] = self.truth
            if self.model_scores is not None:
                files["reader_study_model.csv"] = self.model_scores
        return files

    def identity(self) -> dict[str, Any]:
        """What ``spinedx stats`` records as this input (a rerun with another study is another job)."""
        if self.simulated:
            return {"kind": "simulated", "reliance": (self.simulation or {}).get("reliance")}
        return {"kind": "study folder", "path": self.study["path"], "study_id": self.study["study_id"]}


# ---------------------------------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------------------------------

def _features(cohort: Path, patient_of: dict[str, str]) -> pd.DataFrame | None:
    """The manifest's ``feature_*`` columns, indexed by case id (None without features)."""
    from spinedx.evaluation.study import load_study_table
    from spinedx.evaluation.tables import feature_columns

    frame = load_study_table(cohort)
    cols = feature_columns(frame)
    if not cols:
        return None
    by_patient = frame.set_index("patient_id")[cols]
    out = by_patient.reindex([patient_of[c] for c in patient_of])
    out.index = pd.Index(list(patient_of), name="case_id")
    return out


def _finish(reads: pd.DataFrame, truth: pd.DataFrame, model_scores: pd.DataFrame | None, *, readers: list[str],
            alpha: float, complete_cases_only: bool, error_reader: str | None, features: pd.DataFrame | None,
            reads_name: str, truth_name: str, model_name: str) -> tuple[ReaderStudyResult, pd.DataFrame,
                                                                         AidedErrors | None]:
    """Analyse the tables; the analysed cases with truth and model score; the error analysis."""
    res = analyze_reads(reads[["case_id", "reader", "modality", "score", "call"]], truth,
                        model_scores=model_scores, alpha=alpha, complete_cases_only=complete_cases_only,
                        readers=readers, reads_name=reads_name, truth_name=truth_name, model_name=model_name)
    score = ({} if model_scores is None else
             dict(zip(model_scores["case_id"].astype(str), model_scores["score"].astype(float), strict=True)))
    cases = pd.DataFrame({"case_id": res.cases, "truth": res.truth.astype(int),
                          "model_score": [score.get(c, math.nan) for c in res.cases]})
    errors = None
    if res.modalities == ["unaided", "aided"]:
        who = error_reader if error_reader is not None else res.readers[-1]
        if who not in res.readers:
            raise SpinedxError(f"no reader {who!r} in the study; choose one of {', '.join(res.readers)}",
                               where="--error-reader")
        errors = aided_errors(reads, truth, who, features, cases=res.cases)
    return res, cases, errors


def _oof(run: Path) -> tuple[pd.DataFrame, Any]:
    from spinedx.runfolder import RunFolder

    rf = RunFolder(run)
    record = rf.read_record()
    return rf.read_oof_patients(record, rf.read_splits()), record


def _load(study_dir: str | Path) -> tuple[Any, pd.DataFrame, str | None, Any]:
    """The study, its reads, the identity of the model that aided them, and the completeness."""
    from spinedx.readers.plan import load_study
    from spinedx.readers.reads import completeness, reads_frame
    from spinedx.readers.store import ReadStore

    study = load_study(study_dir)
    store = ReadStore(study.store_path, study.study_id)
    try:
        reads = reads_frame(study, store)
        identity = store.meta("model")
        done = completeness(study, store)
    finally:
        store.close()
    if not len(reads):
        raise SpinedxError(f"the study has no reads yet ({done.describe()}): read it first (spinedx serve --study "
                           f"{study.path} ...), then analyse it", where=str(study.path))
    return study, reads, identity, done


def _inputs(study: Any, cohort: Path, run: Path | None) -> dict[str, Any]:
    """``inputs`` of a study folder's result: the store and the manifest with their sha256, the model's run."""
    from spinedx.provenance import sha256_file

    return {"study": str(study.path),
            "reads": {"path": str(study.store_path), "sha256": sha256_file(study.store_path)},
            "truth": {"path": str(cohort), "sha256": study.doc["cohort"]["sha256"]},
            "model_scores": None if run is None else {"path": str(run), "what": MODEL_SCORES}}


def _describe(study: Any, done: Any) -> dict[str, Any]:
    return {"kind": "study folder", "path": str(study.path), "study_id": study.study_id, "design": study.design,
            "readers": study.readers, "n_cases": len(study.case_ids), "cohort": study.doc["cohort"],
            "completeness": done.describe(), "synthetic": study.synthetic}


# ---------------------------------------------------------------------------------------------------------------
# spinedx readers analyze STUDY
# ---------------------------------------------------------------------------------------------------------------

def analyze_study(study_dir: str | Path, *, cohort: str | Path | None = None, model: str | Path | None = None,
                  alpha: float = 0.05, complete_cases_only: bool = False,
                  error_reader: str | None = None) -> StudyAnalysis:
    """Analyse a study folder: its reads (latest corrections applied) against the truth of its manifest.

    The model that aided the reads (the identity kept in the store) is compared with the readers when its
    out-of-fold probabilities cover the study's cases, i.e. when the study was planned on the run's training
    cohort (the manifest its patches were extracted from, by sha256); otherwise the comparison is left out with a
    note (the ensemble's answer on a case it trained on would flatter the model).

    Args:
        study_dir: the study folder (``spinedx readers plan``).
        cohort: the study's manifest when it moved since planning (same sha256); None: the recorded path.
        model: the run folder of the model that aided the reads; None: found from the kept answers
            (``STUDY/aided/<model>/*/prediction.json``).
        alpha: 1 - confidence level.
        complete_cases_only: analyse the cases every reader read in both modalities (else incomplete reads are
            refused).
        error_reader: whose errors to analyse (default: the last reader of the study, the least experienced).

    Raises:
        SpinedxError: a damaged study, no reads, another manifest, ``model`` not the model that aided the reads,
            and every refusal of :func:`analyze_reads`.
    """
    from spinedx.readers.modelref import find_study_model, model_identity, same_model

    study, reads, identity, done = _load(study_dir)
    from spinedx.readers.reads import truth_frame

    truth = truth_frame(study, cohort)
    cohort_path = Path(cohort) if cohort is not None else study.cohort_path
    notes: list[str] = []
    run: Path | None = None
    explicit = model is not None
    if model is not None:
        run = Path(model)
        if not (run / "config.yaml").is_file():
            raise SpinedxError("not a run folder (no config.yaml); give the run folder spinedx serve --study used as "
                               "--model", where=str(run))
        if identity is not None and not same_model(model_identity(run), identity):
            raise SpinedxError(f"this study's aided reads showed model {identity}, not this one "
                               f"({model_identity(run)}): give the run that aided the reads", where=str(run))
    elif identity is None:
        notes.append("model vs readers left out: no aided read was made yet, so the store names no model")
    else:
        run = find_study_model(study.path, identity)
        if run is None:
            notes.append(f"model vs readers left out: the run of model {identity} was not found (its answers in "
                         f"{study.path / 'aided'} name no folder that still holds it); pass --model RUN")
    model_scores = None
    model_doc = None
    if run is not None:
        model_scores, model_doc, why = _study_model_scores(run, study, identity, strict=explicit)
        if why:
            notes.append(f"model vs readers left out: {why}")
    res, cases, errors = _finish(
        reads, truth, model_scores, readers=study.readers, alpha=alpha, complete_cases_only=complete_cases_only,
        error_reader=error_reader, features=_features(cohort_path, {c: study.patient_of(c) for c in study.case_ids}),
        reads_name=f"{study.path} (reads)", truth_name=f"{cohort_path} (truth)",
        model_name=f"{run} (out-of-fold probabilities)")
    res.inputs = _inputs(study, cohort_path, run if model_scores is not None else None)
    if res.excluded_cases:
        notes.append(f"{len(res.excluded_cases)} case(s) not read by every reader in both modalities were left out "
                     f"(--complete-cases-only): {', '.join(res.excluded_cases[:10])}"
                     + (" ..." if len(res.excluded_cases) > 10 else ""))
    return StudyAnalysis(res, _describe(study, done), False, model_doc, notes, cases, errors, reads, truth,
                         model_scores)


def _study_model_scores(run: Path, study: Any, identity: str | None, *, strict: bool
                        ) -> tuple[pd.DataFrame | None, dict[str, Any] | None, str | None]:
    """The run's out-of-fold probability of every study case, or (None, None, why not)."""
    from spinedx.readers.modelref import model_identity

    try:
        oof, record = _oof(run)
    except SpinedxError as exc:
        if strict:
            raise
        return None, None, f"the run {run} cannot be read ({exc.message})"
    man = record.patches.manifest
    want = study.doc["cohort"]["sha256"]
    if man is None or man.get("sha256") != want:
        return None, None, (f"the study's cases are not the run's training cohort (the study was planned on "
                            f"{study.cohort_path}, the run's patches were extracted from "
                            f"{man['path'] if man else 'an unrecorded manifest'}), so the run has no out-of-fold "
                            "probability of them")
    prob = dict(zip(oof["patient_id"].astype(str), oof["probability"].astype(float), strict=True))
    lack = [c for c in study.case_ids if study.patient_of(c) not in prob]
    if lack:
        return None, None, (f"{len(lack)} case(s) have no out-of-fold probability in the run ({', '.join(lack[:5])})")
    scores = pd.DataFrame({"case_id": study.case_ids, "score": [prob[study.patient_of(c)] for c in study.case_ids]})
    doc = {"identity": identity or model_identity(run), "run": str(run.resolve()), "scores": MODEL_SCORES,
           "threshold": record.threshold}
    return scores, doc, None


# ---------------------------------------------------------------------------------------------------------------
# spinedx stats --study / --simulated-study
# ---------------------------------------------------------------------------------------------------------------

def study_for_stats(cohort_csv: str | Path, run_dir: str | Path, study_dir: str | Path, *,
                    alpha: float = 0.05) -> StudyAnalysis:
    """A study of the run's own cohort, aided by the run's own model, for ``RUN/stats`` and the report.

    Raises:
        SpinedxError: no reads; an incomplete study; a study planned on another manifest than ``cohort_csv``; a
            study aided by another model than the run's; study cases without an out-of-fold probability.
    """
    from spinedx.provenance import sha256_file
    from spinedx.readers.modelref import model_identity, same_model
    from spinedx.readers.reads import truth_frame

    cohort_csv, run = Path(cohort_csv), Path(run_dir)
    study, reads, identity, done = _load(study_dir)
    want, have = study.doc["cohort"]["sha256"], sha256_file(cohort_csv)
    if want != have:
        raise SpinedxError(f"this study was planned on another cohort manifest ({study.cohort_path}, sha256 "
                           f"{want[:12]}...) than {cohort_csv} (sha256 {have[:12]}...): its reads cannot stand beside "
                           "this run's model and cohort; give the study planned on this cohort, or analyse it alone "
                           "with spinedx readers analyze STUDY", where=str(study.path))
    if identity is not None and not same_model(model_identity(run), identity):
        raise SpinedxError(f"this study's aided reads showed model {identity}, not this run ({model_identity(run)}): "
                           "the report would draw them over another model's curve; give the run that aided them",
                           where=str(study.path))
    if done.read < done.planned:
        raise SpinedxError(f"the study is not complete ({done.describe()}): finish the reads, or analyse what there "
                           f"is with spinedx readers analyze {study.path} --complete-cases-only",
                           where=str(study.path))
    truth = truth_frame(study, cohort_csv)
    scores, model_doc, why = _study_model_scores(run, study, identity, strict=True)
    if why:
        raise SpinedxError(f"cannot compare the readers with the run's model: {why}", where=str(run))
    res, cases, errors = _finish(
        reads, truth, scores, readers=study.readers, alpha=alpha, complete_cases_only=False, error_reader=None,
        features=_features(cohort_csv, {c: study.patient_of(c) for c in study.case_ids}),
        reads_name=f"{study.path} (reads)", truth_name=f"{cohort_csv} (truth)",
        model_name=f"{run} (out-of-fold probabilities)")
    res.inputs = _inputs(study, cohort_csv, run)
    return StudyAnalysis(res, _describe(study, done), False, model_doc, [], cases, errors, reads, truth, scores)


class SimulatedTables(Protocol):
    """What a simulation of a reader study gives (:class:`spinedx.synth.aided.SimulatedStudy`)."""

    reads: pd.DataFrame
    truth: pd.DataFrame
    model: pd.DataFrame
    left_out: list[str]
    info: dict[str, Any]


def simulated_for_stats(cohort_csv: str | Path, run_dir: str | Path,
                        simulate: Callable[[Path, Mapping[str, float]], SimulatedTables], *,
                        alpha: float = 0.05) -> StudyAnalysis:
    """The synthetic cohort's simulated readers, unaided and aided by the run's out-of-fold probabilities.

    Args:
        cohort_csv: the synthetic cohort's manifest (the run's cohort).
        run_dir: the run whose out-of-fold probabilities the simulated readers see.
        simulate: the simulation, :func:`spinedx.synth.aided.simulate_reader_study` (passed in because readers
            does not import synth: they are sibling layers).
        alpha: 1 - confidence level of every interval.

    Raises:
        SpinedxError: what ``simulate`` refuses; a run that is not synthetic.
    """
    cohort_csv, run = Path(cohort_csv), Path(run_dir)
    oof, record = _oof(run)
    if not record.synthetic:
        raise SpinedxError("the run was not trained on a synthetic cohort: a simulated reader study is for the "
                           "synthetic cohort's simulated readers only", where=str(run))
    sim = simulate(cohort_csv, dict(zip(oof["patient_id"].astype(str),
                                                     oof["probability"].astype(float), strict=True)))
    readers = list(dict.fromkeys(sim.reads["reader"]))
    patient_of = {c: c for c in sim.truth["case_id"]}
    res, cases, errors = _finish(
        sim.reads, sim.truth, sim.model, readers=readers, alpha=alpha, complete_cases_only=False, error_reader=None,
        features=_features(cohort_csv, patient_of), reads_name="simulated reads", truth_name=f"{cohort_csv} (truth)",
        model_name=f"{run} (out-of-fold probabilities)")
    res.inputs = {"reads": "simulated (spinedx.synth.aided)", "truth": {"path": str(cohort_csv)},
                  "model_scores": {"path": str(run), "what": MODEL_SCORES}}
    notes = []
    if sim.left_out:
        notes.append(f"{len(sim.left_out)} patient(s) without an out-of-fold probability were not read aided and are "
                     f"left out: {', '.join(sim.left_out[:10])}")
    from spinedx.readers.modelref import model_identity

    model_doc = {"identity": model_identity(run), "run": str(run.resolve()), "scores": MODEL_SCORES,
                 "threshold": record.threshold}
    study = {"kind": "simulated", "cohort": str(cohort_csv.resolve()), "readers": readers,
             "n_cases": len(sim.truth), "design": "sequential (simulated)", "synthetic": True}
    return StudyAnalysis(res, study, True, model_doc, notes, cases, errors, sim.reads, sim.truth, sim.model,
                         sim.info)

