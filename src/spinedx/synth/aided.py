"""A simulated reader study for the main job: the simulated readers read every case unaided, then aided.

**A simulation of reliance on the model, not evidence about real readers.** It exists so that the main job's
report shows the whole reader-study analysis (the MRMC table, the per-reader table, the arrows from unaided to
aided) on a cohort that has no real readers; every output that shows it says SIMULATED.

The unaided read is the simulated reader of :mod:`spinedx.synth.readers`, recomputed from the cohort's seed: a
probit observer with latent decision variable ``x = E + eps`` (its noiseless evidence ``E`` from the visible latent
lesion variables, its own noise ``eps ~ N(0, 1)``), calling malignant when ``x > 0``. Its confidence (probability
of malignancy, 0-100, what a reader records in ``spinedx serve --study``) comes from the same variable, so it
agrees with the call::

    q = Phi(x)                                                   unaided confidence
    logit(q_aided) = (1 - w) * logit(q) + w * logit(p_model)     aided: a logarithmic opinion pool
    call malignant  <=>  q > 1/2;   score = round(100 q), kept at 49 or below for a benign call, 51 or above for
                                    a malignant one (so the call and the score never disagree)

``p_model`` is the model's out-of-fold probability of the patient (the run's ``oof_patients.csv``: a model that
did not see the patient in training) and ``w`` the reader's *reliance* on it (:data:`RELIANCE`: more for the less
experienced reader, as the paper's motivation assumes; chosen, not fitted: there are no data on how these readers
would use the model). The logarithmic opinion pool (Genest & Zidek, Stat Sci 1986;1:114-148) is a weighted
average of the two opinions' log-odds: with ``w = 0`` the reader ignores the model, with ``w = 1`` it copies it.
It simulates the sequential design (each case unaided, then at once aided): the aided read starts from the
reader's own unaided impression of the same case, so it draws no new random numbers; the only randomness is the
readers' noise of the cohort itself, recomputed from its own per-patient generators
(:func:`spinedx.synth.study.patient_rng`, seeded by the cohort's seed and the patient's index). Nothing else's
random numbers are consumed: the main job's other figures do not change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError

#: Each simulated reader's reliance ``w`` on the model's probability (weight of the model's log-odds).
RELIANCE: dict[str, float] = {"senior": 0.15, "r4": 0.3, "r1": 0.5}

#: Probabilities are kept within [CLIP, 1 - CLIP] before taking log-odds (a certain 0 or 1 has no log-odds).
CLIP = 1e-3

#: What every output says about these reads.
SIMULATION_NOTE = ("SIMULATED reader study: the synthetic cohort's simulated readers read every case unaided, then "
                   "aided by the model's out-of-fold probability with a chosen reliance (logarithmic opinion pool); "
                   "a simulation of reliance on the model, not evidence about real readers")


@dataclass
class SimulatedStudy:
    """The tables of a simulated reader study, in the form :func:`spinedx.readers.analysis.analyze_reads` takes.

    Attributes:
        reads: ``case_id, reader, modality, score, call`` (unaided then aided per reader and case; case_id is the
            patient id: a simulation has nobody to blind).
        truth: ``case_id, truth`` (1 = malignant).
        model: ``case_id, score``: the model's out-of-fold probability of each case.
        left_out: patients of the cohort without a model probability (not read aided, so not in the study).
        info: what was simulated (model, reliance, seed), for the JSON.
    """

    reads: pd.DataFrame
    truth: pd.DataFrame
    model: pd.DataFrame
    left_out: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _cohort_seed(cohort_csv: Path) -> tuple[int, int]:
    """The synthetic cohort's seed and patient count, from ``synth.json`` beside the manifest."""
    side = cohort_csv.parent / "synth.json"
    if not side.is_file():
        raise SpinedxError("a simulated reader study recomputes the simulated readers' latent scores from the "
                           f"synthetic cohort's seed, and there is no synth.json beside the manifest ({side}); give "
                           "the cohort.csv spinedx synth wrote", where=str(cohort_csv))
    try:
        cfg = json.loads(side.read_text(encoding="utf-8"))["config"]
        return int(cfg["seed"]), int(cfg["n_patients"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpinedxError(f"cannot read the cohort's seed ({type(exc).__name__}); regenerate the cohort with "
                           "spinedx synth", where=str(side)) from None


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, CLIP, 1 - CLIP)
    return np.asarray(np.log(p / (1 - p)))


def aided_confidence(q: Any, p: Any, w: float) -> np.ndarray:
    """The aided confidence: ``logit(q_aided) = (1 - w) logit(q) + w logit(p)`` (a logarithmic opinion pool of the
    reader's own confidence ``q`` and the model's probability ``p``, ``w`` the reliance)."""
    z = (1 - w) * _logit(np.asarray(q, dtype=float)) + w * _logit(np.asarray(p, dtype=float))
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def call_and_score(q: Any) -> tuple[np.ndarray, np.ndarray]:
    """Calls (1 = malignant when q > 1/2) and 0-100 scores that agree with them (49 or below for a benign call,
    51 or above for a malignant one)."""
    q = np.asarray(q, dtype=float)
    call = (q > 0.5).astype(int)
    score = np.rint(100 * q).astype(int)
    score = np.where(call == 1, np.maximum(score, 51), np.minimum(score, 49))
    return call, score


def unaided_confidence(cohort_csv: str | Path) -> pd.DataFrame:
    """Each simulated reader's unaided confidence ``q = Phi(E + eps)`` of each patient, recomputed from the cohort's
    seed and checked against the manifest's calls.

    Returns:
        ``patient_id, reader, truth, q`` (reader ``senior``, ``r4``, ``r1``), in manifest then reader order.

    Raises:
        SpinedxError: a cohort that is not synthetic or lacks its ``synth.json``, patient ids that are not the
            seed's, reader calls that are not the ones the seed gives (an edited manifest).
    """
    from scipy.stats import norm

    from spinedx.cohort import load_manifest
    from spinedx.features import READER_COLUMNS
    from spinedx.synth.latents import sample_latents
    from spinedx.synth.readers import reader_calls
    from spinedx.synth.study import STREAM_TRUTH, patient_id, patient_rng

    cohort_csv = Path(cohort_csv)
    cohort = load_manifest(cohort_csv, require_images=False)
    if not cohort.synthetic:
        raise SpinedxError("not a synthetic cohort: a simulated reader study needs the simulated readers of "
                           "spinedx synth; for real readers plan a study (spinedx readers plan) and pass --study",
                           where=str(cohort_csv))
    seed, n_patients = _cohort_seed(cohort_csv)
    index = {patient_id(i): i for i in range(n_patients)}
    stray = [c.patient_id for c in cohort.cases if c.patient_id not in index]
    if stray:
        raise SpinedxError(f"patient {stray[0]} is not one of the {n_patients} patients synth.json's seed made; give "
                           "the cohort.csv spinedx synth wrote", where=str(cohort_csv))
    rows = []
    for case in cohort.cases:
        pid = case.patient_id
        lat = sample_latents(patient_rng(seed, index[pid], STREAM_TRUTH), np.array([case.y]))
        calls, ev = reader_calls(lat)
        for j, col in enumerate(READER_COLUMNS):
            # the scores must belong to the calls the manifest shows: recomputed, they must be the same calls
            have = case.readers.get(col)
            want = "malignant" if int(calls[col][0]) else "benign"
            if have != want:
                raise SpinedxError(f"patient {pid}: {col} is {have or 'empty'} in the manifest but {want} from the "
                                   "cohort's seed; the manifest was edited or made by another spinedx version: "
                                   "regenerate the cohort with spinedx synth", where=str(cohort_csv))
            x = float(ev[col][0] + lat["reader_noise"][0, j])
            rows.append({"patient_id": pid, "reader": col.removeprefix("reader_"), "truth": int(case.y),
                         "q": float(norm.cdf(x))})
    out = pd.DataFrame(rows, columns=["patient_id", "reader", "truth", "q"])
    out.attrs["seed"] = seed
    return out


def simulate_reader_study(cohort_csv: str | Path, model_probability: Mapping[str, float], *,
                          reliance: Mapping[str, float] | None = None) -> SimulatedStudy:
    """Unaided and aided reads of the synthetic cohort's simulated readers (see the module docstring).

    Args:
        cohort_csv: the synthetic cohort's manifest (``spinedx synth``: ``synth.json`` beside it holds the seed).
        model_probability: patient id -> the model's out-of-fold probability of malignancy.
        reliance: reader (``senior``, ``r4``, ``r1``) -> weight of the model's log-odds (default :data:`RELIANCE`).

    Returns:
        :class:`SimulatedStudy`.

    Raises:
        SpinedxError: see :func:`unaided_confidence`; a reliance outside [0, 1], model probabilities outside [0, 1]
            or of patients not in the cohort.
    """
    from spinedx.features import READER_COLUMNS

    weights = dict(RELIANCE if reliance is None else reliance)
    names = [c.removeprefix("reader_") for c in READER_COLUMNS]
    for r in names:
        w = weights.get(r)
        if w is None or not 0.0 <= float(w) <= 1.0:
            raise SpinedxError(f"reader {r}: reliance {w!r} must be a number between 0 and 1", where="reliance")
    conf = unaided_confidence(cohort_csv)
    seed = int(conf.attrs["seed"])
    patients = list(dict.fromkeys(conf["patient_id"]))
    unknown = sorted(set(model_probability) - set(patients))
    if unknown:
        raise SpinedxError(f"model probabilities of patient(s) not in the cohort: {', '.join(unknown[:5])}",
                           where="model probabilities")
    for pid, p in model_probability.items():
        if not (math.isfinite(float(p)) and 0.0 <= float(p) <= 1.0):
            raise SpinedxError(f"patient {pid}: model probability {p!r} is not in [0, 1]", where="model probabilities")
    left_out = [pid for pid in patients if pid not in model_probability]
    conf = conf[conf["patient_id"].isin(set(model_probability))].reset_index(drop=True)
    p = conf["patient_id"].map(model_probability).to_numpy(dtype=float)
    w = conf["reader"].map(weights).to_numpy(dtype=float)
    q = conf["q"].to_numpy(dtype=float)
    rows = []
    for modality, qq in (("unaided", q), ("aided", aided_confidence(q, p, w))):
        c, sc = call_and_score(qq)
        rows.append(pd.DataFrame({"case_id": conf["patient_id"], "reader": conf["reader"], "modality": modality,
                                  "score": sc, "call": np.where(c == 1, "malignant", "benign"),
                                  "_k": np.arange(len(conf))}))
    reads = (pd.concat(rows).assign(_m=lambda d: d["modality"].map({"unaided": 0, "aided": 1}))
             .sort_values(["_k", "_m"], kind="stable"))
    # reads ordered reader by reader (the analysis orders readers and modalities as they first appear)
    reads = reads.assign(_r=reads["reader"].map({r: i for i, r in enumerate(names)}))
    reads = reads.sort_values(["_r", "_k", "_m"], kind="stable").drop(columns=["_k", "_m", "_r"])
    reads = reads.reset_index(drop=True)[["case_id", "reader", "modality", "score", "call"]]
    kept = [pid for pid in patients if pid in model_probability]
    truth = conf.drop_duplicates("patient_id")[["patient_id", "truth"]].rename(columns={"patient_id": "case_id"})
    model = pd.DataFrame({"case_id": kept, "score": [float(model_probability[k]) for k in kept]})
    info = {
        "simulated": True,
        "note": SIMULATION_NOTE,
        "model": "unaided: q = Phi(E + eps), the simulated reader's own probit variable (spinedx.synth.readers); "
                 "aided: logit(q_aided) = (1 - w) logit(q) + w logit(p_model) (logarithmic opinion pool); call "
                 "malignant when q > 1/2; score = round(100 q), at most 49 with a benign call and at least 51 "
                 "with a malignant one",
        "reliance": {r: float(weights[r]) for r in names},
        "model_probability": "the run's out-of-fold patient probability (oof_patients.csv)",
        "cohort_seed": seed,
        "left_out": left_out,
    }
    return SimulatedStudy(reads, truth.reset_index(drop=True), model, left_out, info)
