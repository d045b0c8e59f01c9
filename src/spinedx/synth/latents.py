"""The latent lesion variables of the synthetic cohort: what the image shows and the simulated readers see.

:func:`sample_latents` draws them from label-conditional distributions that overlap between the classes (docs/synth.md,
"Causal chain"): the 15 features with the paper's Table 1 prevalences, the marrow pattern, the signal of the abnormal
marrow on T1W and T2W, the extent of the change, the level, age, sex, height loss and each reader's noise. It is
vectorised: the same code draws one patient (:func:`spinedx.synth.study.sample_patient`) or the large calibration
sample of the readers (:func:`spinedx.synth.readers.calibration_sample`). Both of those modules build on this one.
"""

from __future__ import annotations

import numpy as np

from spinedx.features import FEATURE_NAMES, READER_COLUMNS
from spinedx.synth.prevalence import (
    LESION_SIGNAL,
    MARROW_PATTERNS,
    NEEDS_ABNORMAL_MARROW,
    PATTERN_EXTENT,
    PREVALENCE,
    pattern_probabilities,
)

__all__ = ["LESION_LEVELS", "sample_latents"]

#: Levels a fracture may sit at, with weights (the thoracolumbar junction is the commonest site).
LESION_LEVELS: dict[str, float] = {
    "T10": 0.05, "T11": 0.12, "T12": 0.24, "L1": 0.24, "L2": 0.15, "L3": 0.12, "L4": 0.08,
}


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
