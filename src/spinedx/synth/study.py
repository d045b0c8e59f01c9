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
a patient's truth does not depend on how many workers render the cohort. The latents are drawn by
:func:`spinedx.synth.latents.sample_latents` (importable from here), which the readers' calibration uses too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.features import FEATURE_COLUMNS, FEATURE_NAMES, READER_COLUMNS
from spinedx.synth.latents import LESION_LEVELS, sample_latents
from spinedx.synth.prevalence import MARROW_PATTERNS
from spinedx.synth.readers import reader_calls

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")

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
