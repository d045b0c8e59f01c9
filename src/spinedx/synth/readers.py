"""Simulated readers: each call is a function of the visible latent lesion variables plus reader noise.

A reader never sees the label. It sees what the image shows, the latent lesion variables of
:func:`spinedx.synth.latents.sample_latents`: the marrow pattern, the other 12 features and the
signal of the abnormal marrow on T1W and T2W. Each reader turns them into an *evidence* score
and calls malignant when the score plus its own noise is positive (a probit observer)::

    E = gamma * S(v) + b                      senior, R4
    E = gamma * (S(v) - L_pattern) + b_pattern  R1 (first-year resident)
    call malignant  <=>  E + eps > 0,   eps ~ N(0, 1) per reader and patient

``S(v)`` is the ideal observer's log-likelihood ratio of the visible variables under the
simulation's own class distributions (naive Bayes over the pattern, the 12 other features and
the two signal values; :func:`ideal_score`). ``gamma`` is the reader's skill (larger: closer to
the ideal observer), ``b`` its threshold. The resident does not weigh the marrow pattern by its
likelihood ratio ``L_pattern``: it has its own bias per pattern, which is how the paper's error
analysis reads (diffuse change and band edema make R1 call benign fractures malignant; R1 misses
half of the malignant fractures without diffuse change).

The parameters in :data:`READER_MODELS` were calibrated by :func:`calibrate` on 200 000 latent
draws per class from the calibration generator (:data:`CALIBRATION_SEED`, no cohort), so that
each reader's expected sensitivity and specificity are the paper's
(:data:`spinedx.synth.prevalence.READER_OPERATING_POINTS`) and R1's false-positive rate per
benign marrow pattern is the paper's (:data:`R1_FALSE_POSITIVE_BY_PATTERN`). Recompute with
``python -m spinedx.synth.readers``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spinedx.features import FEATURE_NAMES, READER_COLUMNS
from spinedx.synth.latents import sample_latents
from spinedx.synth.prevalence import (
    LESION_SIGNAL,
    MARROW_PATTERNS,
    PREVALENCE,
    R1_FALSE_POSITIVE_BY_PATTERN,
    READER_OPERATING_POINTS,
    pattern_probabilities,
)

#: Generator seed of the readers' calibration sample (its own stream: never a cohort).
CALIBRATION_SEED = 20220901

#: Features that are not the marrow pattern (the pattern features enter as one categorical variable).
PATTERN_FEATURES: tuple[str, ...] = ("homogeneous_marrow", "diffuse_signal_change", "band_pattern_edema")
OTHER_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in PATTERN_FEATURES)

_EPS = 0.005  # probabilities of 0 (a feature never seen in a class) are read as 0.5%: a strong, finite sign

#: Calibrated reader parameters (see the module docstring; ``python -m spinedx.synth.readers`` recomputes them).
READER_MODELS: dict[str, dict[str, Any]] = {
    "reader_senior": {"gamma": 0.86861, "bias": -1.32705},
    "reader_r4": {"gamma": 0.36459, "bias": -0.17845},
    "reader_r1": {"gamma": 0.03947,
                  "pattern_bias": {"homogeneous": -0.97413, "diffuse": 0.63154, "band": 0.35797, "focal": -0.49899}},
}


def _clip(p: float) -> float:
    return min(max(p, _EPS), 1 - _EPS)


def pattern_llr() -> np.ndarray:
    """Log-likelihood ratio (malignant vs benign) of each marrow pattern, in :data:`MARROW_PATTERNS` order."""
    pm, pb = pattern_probabilities(1), pattern_probabilities(0)
    return np.array([math.log(_clip(pm[m]) / _clip(pb[m])) for m in MARROW_PATTERNS])


def feature_llr() -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood ratios of the 12 other features when present and when absent."""
    present = np.array([math.log(_clip(PREVALENCE[n].malignant) / _clip(PREVALENCE[n].benign))
                        for n in OTHER_FEATURES])
    absent = np.array([math.log((1 - _clip(PREVALENCE[n].malignant)) / (1 - _clip(PREVALENCE[n].benign)))
                       for n in OTHER_FEATURES])
    return present, absent


def _gauss_llr(x: np.ndarray, mb: float, sb: float, mm: float, sm: float) -> np.ndarray:
    return (np.log(sb / sm) - 0.5 * ((x - mm) / sm) ** 2 + 0.5 * ((x - mb) / sb) ** 2)


def ideal_score(lat: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ideal observer's log-likelihood ratio of the visible latents (naive Bayes).

    Args:
        lat: latents from :func:`spinedx.synth.latents.sample_latents`.

    Returns:
        ``(S, L_pattern)``: the total score and the marrow pattern's part of it, (n,) each.
    """
    l_pattern = pattern_llr()[lat["pattern"]]
    present, absent = feature_llr()
    x = np.stack([lat[f"feature_{n}"] for n in OTHER_FEATURES], axis=1).astype(np.float64)
    s = l_pattern + x @ present + (1 - x) @ absent
    b, m = LESION_SIGNAL["benign"], LESION_SIGNAL["malignant"]
    # the abnormal signal is seen in the body's changed marrow or in involved pedicles; otherwise there is none
    abnormal = lat["pattern"] != MARROW_PATTERNS.index("homogeneous")
    abnormal |= lat["feature_pedicle_posterior_involvement"] == 1
    sig = _gauss_llr(lat["signal_t1"], b.t1_mean, b.t1_sd, m.t1_mean, m.t1_sd)
    sig = sig + _gauss_llr(lat["signal_t2"], b.t2_mean, b.t2_sd, m.t2_mean, m.t2_sd)
    return s + np.where(abnormal, sig, 0.0), l_pattern


def evidence(lat: dict[str, np.ndarray], models: dict[str, dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Each reader's noiseless evidence score E (malignant when E + noise > 0)."""
    models = models or READER_MODELS
    s, l_pattern = ideal_score(lat)
    out: dict[str, np.ndarray] = {}
    for reader in READER_COLUMNS:
        m = models[reader]
        if "pattern_bias" in m:
            bias = np.array([m["pattern_bias"][p] for p in MARROW_PATTERNS])[lat["pattern"]]
            out[reader] = m["gamma"] * (s - l_pattern) + bias
        else:
            out[reader] = m["gamma"] * s + m["bias"]
    return out


def reader_calls(lat: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reader calls (1 = malignant) from the visible latents and each reader's noise (``lat["reader_noise"]``).

    The label is not an input: a reader sees only what the image shows.

    Returns:
        ``(calls, evidence)``: per reader column, (n,) int calls and the noiseless evidence.
    """
    ev = evidence(lat)
    noise = lat["reader_noise"]
    calls = {r: (ev[r] + noise[:, j] > 0).astype(np.int64) for j, r in enumerate(READER_COLUMNS)}
    return calls, ev


# -- calibration ----------------------------------------------------------------------------------------------


def calibration_sample(n_per_class: int = 200_000, seed: int = CALIBRATION_SEED) -> dict[str, np.ndarray]:
    """Latents of ``n_per_class`` benign then ``n_per_class`` malignant patients from the calibration generator."""
    labels = np.r_[np.zeros(n_per_class, np.int64), np.ones(n_per_class, np.int64)]
    return sample_latents(np.random.default_rng([seed, 99]), labels)


def r1_targets() -> dict[str, float]:
    """What R1 must reproduce (paper, error analysis): P(call malignant) per benign marrow pattern, and per
    malignant stratum: half of the malignant fractures without diffuse change are missed, the rest of the
    misses fall on those with diffuse change, so that the sensitivity is the paper's."""
    sens, _ = READER_OPERATING_POINTS["reader_r1"]
    pd_m = PREVALENCE["diffuse_signal_change"].malignant
    miss_not_diffuse = 0.5
    t = {f"benign_{p}": v for p, v in R1_FALSE_POSITIVE_BY_PATTERN.items()}
    t["malignant_not_diffuse"] = 1 - miss_not_diffuse
    t["malignant_diffuse"] = 1 - ((1 - sens) - (1 - pd_m) * miss_not_diffuse) / pd_m
    return t


def expected_rates(lat: dict[str, np.ndarray], models: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Expected sensitivity and specificity of each reader (probit: P(call) = Phi(E)) and R1's strata."""
    from scipy.stats import norm

    ev = evidence(lat, models)
    y = lat["label"] == 1
    out: dict[str, dict[str, float]] = {}
    for r in READER_COLUMNS:
        p = norm.cdf(ev[r])
        out[r] = {"sensitivity": float(p[y].mean()), "specificity": float(1 - p[~y].mean())}
    p = norm.cdf(ev["reader_r1"])
    diffuse = lat["pattern"] == MARROW_PATTERNS.index("diffuse")
    strata = {f"benign_{m}": ~y & (lat["pattern"] == k) for k, m in enumerate(MARROW_PATTERNS)}
    strata.update({"malignant_not_diffuse": y & ~diffuse, "malignant_diffuse": y & diffuse})
    out["reader_r1_strata"] = {k: float(p[s].mean()) for k, s in strata.items()}
    return out


def calibrate(n_per_class: int = 200_000, seed: int = CALIBRATION_SEED) -> dict[str, dict[str, Any]]:
    """Fit :data:`READER_MODELS` on a calibration sample (never a cohort).

    Senior and R4: ``gamma`` and ``b`` solve expected sensitivity = paper and expected specificity
    = paper exactly. R1: ``gamma`` and the four pattern biases minimise the squared differences to
    :func:`r1_targets` (six rates, five parameters), weighted by the paper's counts, with the
    overall sensitivity and specificity held to the paper's by a heavy weight.
    """
    from scipy.optimize import least_squares
    from scipy.stats import norm

    lat = calibration_sample(n_per_class, seed)
    y = lat["label"] == 1
    s, l_pattern = ideal_score(lat)
    models: dict[str, dict[str, Any]] = {}
    for reader in ("reader_senior", "reader_r4"):
        sens, spec = READER_OPERATING_POINTS[reader]

        def resid(theta: np.ndarray, sens: float = sens, spec: float = spec) -> np.ndarray:
            p = norm.cdf(math.exp(theta[0]) * s + theta[1])
            return np.array([p[y].mean() - sens, (1 - p[~y].mean()) - spec]) * 100

        fit = least_squares(resid, np.array([0.0, 0.0]), xtol=1e-12, ftol=1e-12)
        models[reader] = {"gamma": round(math.exp(fit.x[0]), 5), "bias": round(float(fit.x[1]), 5)}

    targets = r1_targets()
    sens, spec = READER_OPERATING_POINTS["reader_r1"]
    weights = {"benign_homogeneous": 48, "benign_diffuse": 31, "benign_band": 44, "benign_focal": 17,
               "malignant_not_diffuse": 6, "malignant_diffuse": 44}
    diffuse = lat["pattern"] == MARROW_PATTERNS.index("diffuse")
    strata = {f"benign_{m}": ~y & (lat["pattern"] == k) for k, m in enumerate(MARROW_PATTERNS)}
    strata.update({"malignant_not_diffuse": y & ~diffuse, "malignant_diffuse": y & diffuse})
    rest = s - l_pattern

    def resid_r1(theta: np.ndarray) -> np.ndarray:
        p = norm.cdf(math.exp(theta[0]) * rest + theta[1:][lat["pattern"]])
        r = [math.sqrt(weights[k]) * (p[m].mean() - targets[k]) for k, m in strata.items()]
        r += [30 * (p[y].mean() - sens), 30 * ((1 - p[~y].mean()) - spec)]
        return np.array(r)

    fit = least_squares(resid_r1, np.zeros(1 + len(MARROW_PATTERNS)), xtol=1e-12, ftol=1e-12)
    biases = {m: round(float(b), 5) for m, b in zip(MARROW_PATTERNS, fit.x[1:], strict=True)}
    models["reader_r1"] = {"gamma": round(math.exp(fit.x[0]), 5), "pattern_bias": biases}
    return models


def main() -> None:
    """Print freshly calibrated :data:`READER_MODELS` and the rates they reach on a second sample."""
    import json

    models = calibrate()
    print(json.dumps(models, indent=1))
    check = expected_rates(calibration_sample(seed=CALIBRATION_SEED + 1), models)
    print(json.dumps(check, indent=1))
    print("targets R1:", json.dumps(r1_targets(), indent=1))


if __name__ == "__main__":
    main()
