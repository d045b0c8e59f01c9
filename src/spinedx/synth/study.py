"""Per-patient truth of the synthetic cohort: label, the 15 features, fracture shape, readers.

Sampling is separate from rendering (the TorchIO habit: sample parameters, then render them
deterministically), so :func:`sample_study_table` checks prevalences and reader operating points
on thousands of patients in a second, and :func:`spinedx.synth.generate_cohort` renders exactly
the same rows. Each patient draws from its own generator seeded by ``(seed, patient index)``, so
a patient's truth does not depend on how many workers render the cohort.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, FEATURE_NAMES, READER_COLUMNS
from spinedx.synth.prevalence import (
    MARROW_PATTERNS,
    NEEDS_ABNORMAL_MARROW,
    PREVALENCE,
    R1_FALSE_POSITIVE_BY_PATTERN,
    READER_OPERATING_POINTS,
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


def _reader_call(rng: np.random.Generator, reader: str, label: int, f: dict[str, int], pattern: str) -> int:
    """One simulated reader's call (1 = malignant).

    The average sensitivity/specificity equal the paper's (READER_OPERATING_POINTS). Errors are
    not uniform: for the first-year resident the benign false-positive rate depends on the marrow
    pattern exactly as in the paper's error analysis (diffuse change and non-homogeneous marrow
    raise it); malignant fractures without diffuse change are missed more often by every reader;
    and the two experienced readers' rare false positives are three times likelier with diffuse
    change. The weights ``w`` are renormalised by their class mean so the averages are exact.
    """
    sens, spec = READER_OPERATING_POINTS[reader]
    p_diffuse = PREVALENCE["diffuse_signal_change"]
    if label == 1:
        if reader == "reader_r1":
            # P(call | no diffuse change) = 0.5; the diffuse-change stratum takes the rest of the misses.
            miss_not_diffuse = 0.5
            miss_diffuse = ((1 - sens) - (1 - p_diffuse.malignant) * miss_not_diffuse) / p_diffuse.malignant
            p_call = 1 - (miss_diffuse if f["diffuse_signal_change"] else miss_not_diffuse)
        else:
            w = 1.0 + 2.0 * (1 - f["diffuse_signal_change"])
            mean_w = 1.0 + 2.0 * (1 - p_diffuse.malignant)
            p_call = 1 - (1 - sens) * w / mean_w
    else:
        if reader == "reader_r1":
            p_call = R1_FALSE_POSITIVE_BY_PATTERN[pattern]
        else:
            w = 1.0 + 2.0 * f["diffuse_signal_change"]
            mean_w = 1.0 + 2.0 * p_diffuse.benign
            p_call = (1 - spec) * w / mean_w
    return int(rng.random() < p_call)


def sample_patient(seed: int, index: int, label: int) -> dict[str, Any]:
    """Truth of one patient: features, marrow pattern, fracture shape, readers, age and sex.

    Features are drawn from :data:`spinedx.synth.prevalence.PREVALENCE`: first the marrow pattern
    (homogeneous / diffuse / band / focal, which sets three features), then every other feature
    independently; fluid sign and intravertebral mass only where the marrow is not homogeneous,
    with the probability scaled so the class prevalence stays that of the table.

    Args:
        seed: cohort seed.
        index: 0-based patient index.
        label: 0 benign, 1 malignant.
    """
    rng = patient_rng(seed, index, STREAM_TRUTH)
    key = "malignant" if label else "benign"
    pp = pattern_probabilities(label)
    pattern = MARROW_PATTERNS[int(rng.choice(len(MARROW_PATTERNS), p=[pp[m] for m in MARROW_PATTERNS]))]
    f: dict[str, int] = {
        "homogeneous_marrow": int(pattern == "homogeneous"),
        "diffuse_signal_change": int(pattern == "diffuse"),
        "band_pattern_edema": int(pattern == "band"),
    }
    p_abnormal = 1.0 - pp["homogeneous"]
    for name in FEATURE_NAMES:
        u = rng.random()  # always drawn, so adding a rule never shifts later draws
        if name in f:
            continue
        p = getattr(PREVALENCE[name], key)
        if name in NEEDS_ABNORMAL_MARROW:
            p = 0.0 if pattern == "homogeneous" else p / p_abnormal
        f[name] = int(u < p)
    f = {n: f[n] for n in FEATURE_NAMES}

    if f["non_wedged_collapse"]:
        shape = "concave" if f["posterior_height_preserved"] else "crush"
    else:
        shape = "wedge"  # with or without posterior wall loss (posterior_height_preserved)
    levels = list(LESION_LEVELS)
    level = levels[int(rng.choice(len(levels), p=np.array(list(LESION_LEVELS.values())) / sum(LESION_LEVELS.values())))]
    age = int(np.clip(rng.normal(61.7 if label else 68.8, 11.0), 23, 95))  # paper: means 61.7 / 68.8, range 23-95
    sex = "F" if rng.random() < (0.45 if label else 0.65) else "M"
    height_loss = float(rng.uniform(0.2, 0.5))
    readers = {r: _reader_call(rng, r, label, f, pattern) for r in READER_COLUMNS}
    return {
        "label": label, "pattern": pattern, "features": f, "shape": shape, "level": level, "age": age, "sex": sex,
        "height_loss": height_loss, "readers": readers,
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
        "height_loss": round(truth["height_loss"], 3), "age": truth["age"], "sex": truth["sex"],
    })
    return row


def sample_study_table(
    n_patients: int, n_malignant: int, seed: int = 0, difficulty: str = "medium"
) -> pd.DataFrame:
    """The cohort's truth table without rendering images.

    Same draws as :func:`spinedx.synth.generate_cohort` (which adds paths, ``lesion_slices`` and
    ``box``). ``difficulty`` changes only the rendering, never the truth, so that feature
    prevalences and reader operating points stay those of the paper at every level.

    Returns:
        One row per patient: ``patient_id``, ``label`` (benign|malignant), the 15
        ``feature_*`` columns (0/1), ``reader_senior``, ``reader_r4``, ``reader_r1`` (each
        reader's call, ``benign`` or ``malignant``) and the extras ``level``, ``fracture_shape``, ``marrow_pattern``,
        ``height_loss``, ``age``, ``sex``.
    """
    check_counts(n_patients, n_malignant, difficulty)
    labels = assign_labels(n_patients, n_malignant, seed)
    rows = [truth_row(i, sample_patient(seed, i, int(labels[i]))) for i in range(n_patients)]
    df = pd.DataFrame(rows)
    cols = ["patient_id", "label", *FEATURE_COLUMNS, *READER_COLUMNS]
    return df[cols + [c for c in df.columns if c not in cols]]
