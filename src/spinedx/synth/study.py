"""Per-patient truth of the synthetic cohort: label -> visible latent lesion variables -> reader calls.

The causal chain (docs/synth.md, "Causal chain"): the label is drawn first; the *latent lesion
variables* are drawn from label-conditional distributions that overlap between the classes (the
15 features with the paper's Table 1 prevalences, the marrow pattern, the signal of the abnormal
marrow on T1W and T2W, the extent of the change, the fracture shape); the image is rendered from
those latents alone (:mod:`spinedx.synth.phantom` never reads the label), and each simulated
reader's call is a function of the same latents plus that reader's noise
(:mod:`spinedx.synth.readers`). Level, height loss and the anatomy do not depend on the label;
age and sex follow the paper's demographics by class and appear only in the DICOM header.

Sampling is separate from rendering (the TorchIO habit: sample parameters, then render them
deterministically), so :func:`sample_study_table` checks prevalences and reader operating points
on thousands of patients in a second, and :func:`spinedx.synth.generate_cohort` renders exactly
the same rows. Each patient draws from its own generator seeded by ``(seed, patient index)``, so
a patient's truth does not depend on how many workers render the cohort. :func:`sample_latents`
is vectorised: the same code draws one patient or the large calibration sample of the readers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, FEATURE_NAMES, READER_COLUMNS
from spinedx.synth.prevalence import (
    LESION_SIGNAL,
    MARROW_PATTERNS,
    NEEDS_ABNORMAL_MARROW,
    PATTERN_EXTENT,
    PREVALENCE,
    pattern_probabilities,
)

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")

#: Levels a fracture may sit at, with weights (the thoracolumbar junction is the commonest site).
LESION_LEVELS: dict[str, float] = {
    "T10": 0.05, "T11": 0.12, "T12": 0.24, "L1": 0.24, "L2": 0.15, "L3": 0.12, "L4": 0.08,
}

# Stream ids of the per-patient generators: truth, anatomy, motion/noise. Fixed forever, so a
# given (seed, patient) always gets the same numbers.
STREAM_TRUTH, STREAM_ANATOMY, STREAM_ACQ = 1, 2, 3


def patient_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one patient and one purpose (truth, anatomy or acquisition)."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def check_counts(n_patients: int, n_malignant: int, difficulty: str) -> None:
    """Refuse impossible cohort sizes or an unknown difficulty (SpinedxError)."""
    if n_patients < 1:
        raise SpinedxError(f"--patients must be at least 1, got {n_patients}", where="synth")
    if not 0 <= n_malignant <= n_patients:
        raise SpinedxError(
            f"--malignant must be between 0 and --patients ({n_patients}), got {n_malignant}", where="synth"
        )
    if difficulty not in DIFFICULTIES:
        raise SpinedxError(f"--difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}", where="synth")


def assign_labels(n_patients: int, n_malignant: int, seed: int) -> np.ndarray:
    """0/1 labels, exactly ``n_malignant`` ones, in an order shuffled by ``seed``."""
    labels = np.zeros(n_patients, dtype=np.int64)
    labels[:n_malignant] = 1
    return np.random.default_rng([int(seed), 0]).permutation(labels)


def _categorical(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Index drawn by inverse CDF: ``u`` (n,) uniform, ``probs`` (n, k) rows summing to 1."""
    cum = np.cumsum(probs, axis=1)
    return np.minimum((u[:, None] >= cum[:, :-1]).sum(axis=1), probs.shape[1] - 1)


def sample_latents(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Draw the latent lesion variables of ``len(labels)`` patients (vectorised).

    Order of draws (fixed, so a patient's numbers never move): marrow pattern, the 15 feature
    uniforms, abnormal-marrow signal (T1W, T2W), extent, level, age, sex, height loss, readers'
    noise. Features follow :data:`PREVALENCE`: the marrow pattern (homogeneous / diffuse / band /
    focal) sets three features; every other feature is drawn independently, fluid sign and an
    intravertebral mass only where the marrow is not homogeneous (probability scaled so the class
    prevalence stays that of the table). The abnormal-marrow signal comes from the overlapping
    class distributions of :data:`LESION_SIGNAL`; the extent from :data:`PATTERN_EXTENT` (pattern
    only).

    Args:
        rng: the generator (one patient's, or a calibration generator).
        labels: (n,) 0 benign / 1 malignant.

    Returns:
        Arrays of length n: ``label``, ``pattern`` (index into :data:`MARROW_PATTERNS`),
        ``feature_<name>`` (0/1), ``signal_t1``, ``signal_t2``, ``extent``, ``level`` (index into
        :data:`LESION_LEVELS`), ``age``, ``female`` (0/1), ``height_loss`` and ``reader_noise`` (n, 3).
    """
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    pp = np.array([[pattern_probabilities(c)[m] for m in MARROW_PATTERNS] for c in (0, 1)])
    pattern = _categorical(rng.random(n), pp[y])
    homogeneous = pattern == MARROW_PATTERNS.index("homogeneous")
    out: dict[str, np.ndarray] = {"label": y, "pattern": pattern}
    fixed = {
        "homogeneous_marrow": homogeneous,
        "diffuse_signal_change": pattern == MARROW_PATTERNS.index("diffuse"),
        "band_pattern_edema": pattern == MARROW_PATTERNS.index("band"),
    }
    u = rng.random((n, len(FEATURE_NAMES)))  # always all drawn, so adding a rule never shifts later draws
    p_abnormal = 1.0 - pp[y, MARROW_PATTERNS.index("homogeneous")]
    for j, name in enumerate(FEATURE_NAMES):
        if name in fixed:
            out[f"feature_{name}"] = fixed[name].astype(np.int64)
            continue
        p = np.where(y == 1, PREVALENCE[name].malignant, PREVALENCE[name].benign)
        if name in NEEDS_ABNORMAL_MARROW:
            p = np.where(homogeneous, 0.0, p / p_abnormal)
        out[f"feature_{name}"] = (u[:, j] < p).astype(np.int64)
    z = rng.standard_normal((n, 2))
    dist = [LESION_SIGNAL["benign"], LESION_SIGNAL["malignant"]]
    out["signal_t1"] = np.array([dist[c].t1_mean for c in y]) + np.array([dist[c].t1_sd for c in y]) * z[:, 0]
    out["signal_t2"] = np.array([dist[c].t2_mean for c in y]) + np.array([dist[c].t2_sd for c in y]) * z[:, 1]
    lo = np.array([PATTERN_EXTENT[MARROW_PATTERNS[k]][0] for k in pattern])
    hi = np.array([PATTERN_EXTENT[MARROW_PATTERNS[k]][1] for k in pattern])
    out["extent"] = lo + (hi - lo) * rng.random(n)
    w = np.array(list(LESION_LEVELS.values()))
    out["level"] = _categorical(rng.random(n), np.tile(w / w.sum(), (n, 1)))
    # paper: mean age 61.7 (malignant) / 68.8 (benign), range 23-95; written in the DICOM header only
    out["age"] = np.clip(np.where(y == 1, 61.7, 68.8) + 11.0 * rng.standard_normal(n), 23, 95).astype(np.int64)
    out["female"] = (rng.random(n) < np.where(y == 1, 0.45, 0.65)).astype(np.int64)
    out["height_loss"] = rng.uniform(0.2, 0.5, n)
    out["reader_noise"] = rng.standard_normal((n, len(READER_COLUMNS)))
    return out


def _shape(non_wedged: int, posterior_preserved: int) -> str:
    if non_wedged:
        return "concave" if posterior_preserved else "crush"
    return "wedge"  # with or without posterior wall loss (posterior_height_preserved)


def sample_patient(seed: int, index: int, label: int) -> dict[str, Any]:
    """Truth of one patient: latent lesion variables, readers' calls, age and sex.

    Args:
        seed: cohort seed.
        index: 0-based patient index.
        label: 0 benign, 1 malignant.

    Returns:
        ``label``, ``pattern``, ``features`` (name -> 0/1), ``signal`` (T1W, T2W of the abnormal
        marrow), ``extent``, ``shape``, ``level``, ``age``, ``sex``, ``height_loss``, ``readers``
        (column -> 0/1) and ``evidence`` (column -> the reader's noiseless evidence score).
    """
    from spinedx.synth.readers import reader_calls

    lat = sample_latents(patient_rng(seed, index, STREAM_TRUTH), np.array([label]))
    calls, evidence = reader_calls(lat)
    f = {n: int(lat[f"feature_{n}"][0]) for n in FEATURE_NAMES}
    return {
        "label": int(label), "pattern": MARROW_PATTERNS[int(lat["pattern"][0])], "features": f,
        "signal": (float(lat["signal_t1"][0]), float(lat["signal_t2"][0])), "extent": float(lat["extent"][0]),
        "shape": _shape(f["non_wedged_collapse"], f["posterior_height_preserved"]),
        "level": list(LESION_LEVELS)[int(lat["level"][0])], "age": int(lat["age"][0]),
        "sex": "F" if lat["female"][0] else "M", "height_loss": float(lat["height_loss"][0]),
        "readers": {r: int(calls[r][0]) for r in READER_COLUMNS},
        "evidence": {r: float(evidence[r][0]) for r in READER_COLUMNS},
    }


def patient_id(index: int) -> str:
    """Pseudonymous id of the patient at 0-based ``index`` (SYN0001, ...)."""
    return f"SYN{index + 1:04d}"


def truth_row(index: int, truth: dict[str, Any]) -> dict[str, Any]:
    """Manifest columns known before rendering (no paths, slices or box)."""
    row: dict[str, Any] = {"patient_id": patient_id(index), "label": "malignant" if truth["label"] else "benign"}
    row.update({f"feature_{n}": v for n, v in truth["features"].items()})
    # reader calls are written as the manifest spells them (docs/io.md): benign | malignant
    row.update({r: ("malignant" if v else "benign") for r, v in truth["readers"].items()})
    row.update({
        "level": truth["level"], "fracture_shape": truth["shape"], "marrow_pattern": truth["pattern"],
        "lesion_signal_t1": round(truth["signal"][0], 4), "lesion_signal_t2": round(truth["signal"][1], 4),
        "lesion_extent": round(truth["extent"], 4),
        "height_loss": round(truth["height_loss"], 3), "age": truth["age"], "sex": truth["sex"],
    })
    return row


def sample_study_table(
    n_patients: int, n_malignant: int, seed: int = 0, difficulty: str = "medium"
) -> pd.DataFrame:
    """The cohort's truth table without rendering images.

    Same draws as :func:`spinedx.synth.generate_cohort` (which adds paths, ``lesion_slices``,
    ``box``, ``lesion_mask`` and ``synthetic``). ``difficulty`` changes only the rendering, never
    the truth, so that feature prevalences and reader operating points stay those of the paper at
    every level.

    Returns:
        One row per patient: ``patient_id``, ``label`` (benign|malignant), the 15
        ``feature_*`` columns (0/1), ``reader_senior``, ``reader_r4``, ``reader_r1`` (each
        reader's call, ``benign`` or ``malignant``) and the extras ``level``, ``fracture_shape``,
        ``marrow_pattern``, ``lesion_signal_t1``, ``lesion_signal_t2``, ``lesion_extent``,
        ``height_loss``, ``age``, ``sex``.
    """
    check_counts(n_patients, n_malignant, difficulty)
    labels = assign_labels(n_patients, n_malignant, seed)
    rows = [truth_row(i, sample_patient(seed, i, int(labels[i]))) for i in range(n_patients)]
    df = pd.DataFrame(rows)
    cols = ["patient_id", "label", *FEATURE_COLUMNS, *READER_COLUMNS]
    return df[cols + [c for c in df.columns if c not in cols]]
