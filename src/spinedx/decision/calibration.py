"""A calibrated patient probability: Platt scaling or isotonic regression (scikit-learn), and how calibrated a
probability is (Brier score, calibration intercept and slope by logistic recalibration with statsmodels, ECE), with
patient-bootstrap intervals.

A :class:`Calibrator` is a small, JSON-able map from the uncalibrated patient probability (the ensemble or fold
model's output after aggregation over slices) to a calibrated one. It is fitted on *honest* calibration data only:
predictions of fold models on patients they did not train on (``spinedx.evaluation.decisioncv`` builds them from
each fold's inner-validation predictions). It is applied in Python after the inference engine, so torch and ONNX
Runtime give the same calibrated value.

Platt: ``p_cal = 1 / (1 + exp(-(a * logit(p) + b)))``, params ``{"a", "b"}``; isotonic: ``p_cal = np.interp(p, x,
y)`` with the fitted breakpoints, params ``{"x": [...], "y": [...]}``; identity: ``p_cal = p``, params ``{}``.
:func:`fit_calibrator` with ``method="auto"`` chooses between Platt and isotonic by a cross-validated Brier score
on the calibration data (docs/decision.md, "Calibration").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinedx.errors import SpinedxError

__all__ = ["CALIBRATION_METHODS", "Calibrator", "calibration_report", "calibration_stats", "choose_method",
           "expected_calibration_error", "fit_calibrator", "logit"]

#: The maps a :class:`Calibrator` can hold.
CALIBRATION_METHODS = ("platt", "isotonic", "identity")
#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (a fold model may say exactly 0 or 1 in float32).
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of ``p`` clipped to [EPS, 1 - EPS]."""
    q = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


@dataclass(frozen=True)
class Calibrator:
    """A calibration map of the patient probability.

    Attributes:
        method: ``platt``, ``isotonic`` or ``identity``.
        params: the map's numbers (JSON-able): Platt ``{"a": float, "b": float}``; isotonic ``{"x": [...],
            "y": [...]}`` (increasing ``x``, non-decreasing ``y`` in [0, 1]); identity ``{}``.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.method, self.params, where="calibrator")

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the uncalibrated patient probabilities ``p`` (same shape)."""
        arr = np.asarray(p, dtype=float)
        if self.method == "platt":
            return _sigmoid(float(self.params["a"]) * logit(arr) + float(self.params["b"]))
        if self.method == "isotonic":
            return np.interp(arr, np.asarray(self.params["x"], float), np.asarray(self.params["y"], float))
        return arr.copy()

    def to_dict(self) -> dict[str, Any]:
        """``{"method", "params"}`` (what ``calibration.json`` holds beside ``format``)."""
        return {"method": self.method, "params": {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else float(v))
                                                  for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "calibration.json") -> Calibrator:
        """The calibrator :meth:`to_dict` wrote (a ``format`` key is allowed and ignored).

        Raises:
            SpinedxError: an unknown method, missing or extra keys, or numbers that do not make a map.
        """
        if not isinstance(d, dict):
            raise SpinedxError("not a calibrator record (expected a JSON object); rerun spinedx cv", where=where)
        extra = sorted(set(d) - {"format", "method", "params"})
        if extra or "method" not in d or "params" not in d:
            raise SpinedxError(f"not a calibrator record (keys {sorted(d)}; expected format, method, params); rerun "
                               "spinedx cv", where=where)
        _check(d["method"], d["params"], where=where)
        return cls(str(d["method"]), dict(d["params"]))


def _check(method: Any, params: Any, where: str) -> None:
    """Refuse a method or params that do not make a calibration map."""
    def bad(why: str) -> SpinedxError:
        return SpinedxError(f"calibrator: {why}; rerun spinedx cv to rewrite it", where=where)

    if method not in CALIBRATION_METHODS:
        raise bad(f"unknown method {method!r} (use {', '.join(CALIBRATION_METHODS)})")
    if not isinstance(params, dict):
        raise bad("params must be a mapping")
    want = {"platt": {"a", "b"}, "isotonic": {"x", "y"}, "identity": set()}[method]
    if set(params) != want:
        raise bad(f"{method} params must be {sorted(want)} (found {sorted(params)})")
    if method == "platt":
        if not all(isinstance(params[k], (int, float)) and not isinstance(params[k], bool)
                   and math.isfinite(params[k]) for k in ("a", "b")):
            raise bad("Platt a and b must be finite numbers")
    elif method == "isotonic":
        try:
            x = np.asarray(params["x"], dtype=float)
            y = np.asarray(params["y"], dtype=float)
        except (TypeError, ValueError):
            raise bad("isotonic x and y must be lists of numbers") from None
        if x.ndim != 1 or x.shape != y.shape or len(x) < 1 or not np.all(np.isfinite(x)) \
                or not np.all(np.isfinite(y)) or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) \
                or y.min() < 0 or y.max() > 1:
            raise bad("isotonic x must be increasing and y non-decreasing in [0, 1], of equal length")


# ------------------------------------------------------------------------------------------------
# fitting


def _fit_platt(p: np.ndarray, y: np.ndarray) -> Calibrator:
    from sklearn.linear_model import LogisticRegression

    # Platt scaling on the logit (a slope and an intercept), unpenalised: the map is two numbers
    lr = LogisticRegression(penalty=None, solver="lbfgs", max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separable toy data: the fit still gives a steep, usable map
        lr.fit(logit(p)[:, None], y)
    return Calibrator("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(p, y)
    # np.interp over the breakpoints, clamped at both ends: exactly scikit-learn's predict with out_of_bounds="clip"
    return Calibrator("isotonic", {"x": [float(v) for v in iso.X_thresholds_],
                                   "y": [float(v) for v in iso.y_thresholds_]})


def choose_method(p: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Platt or isotonic, by the Brier score of each fitted on all groups but one and scored on that one.

    ``groups`` are the fold models whose predictions make the calibration data (leave one model's predictions
    out). Isotonic is chosen only when its cross-validated Brier score is lower than Platt's: Platt has two
    parameters, isotonic as many as it has steps, and a few dozen malignant patients rarely pay for the steps.

    Returns:
        ``{"method": "platt" | "isotonic", "brier_cv": {"platt": float, "isotonic": float}, "groups": n}``;
        ``platt`` (with null scores) when fewer than two groups hold both labels.
    """
    p = np.asarray(p, float)
    y = np.asarray(y, int)
    groups = np.asarray(groups)
    scores: dict[str, list[float]] = {"platt": [], "isotonic": []}
    used = 0
    for g in np.unique(groups):
        test = groups == g
        train = ~test
        if len(np.unique(y[train])) < 2 or not test.any():
            continue
        used += 1
        for name, fit in (("platt", _fit_platt), ("isotonic", _fit_isotonic)):
            pc = fit(p[train], y[train]).apply(p[test])
            scores[name].append(float(np.sum((pc - y[test]) ** 2)))
    if used < 2:
        return {"method": "platt", "brier_cv": {"platt": None, "isotonic": None}, "groups": used}
    n = float(sum(int((groups == g).sum()) for g in np.unique(groups)
                  if len(np.unique(y[groups != g])) == 2))
    brier = {k: sum(v) / n for k, v in scores.items()}
    return {"method": "isotonic" if brier["isotonic"] < brier["platt"] else "platt", "brier_cv": brier,
            "groups": used}


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: str = "auto",
                   groups: np.ndarray | None = None) -> tuple[Calibrator, dict[str, Any]]:
    """Fit a calibration map on honest calibration data.

    Args:
        p: uncalibrated patient probabilities of models that did not train on these patients.
        y: their labels (0 benign, 1 malignant).
        method: ``platt``, ``isotonic``, ``identity`` or ``auto`` (:func:`choose_method`; needs ``groups``).
        groups: the predicting fold model of each row (for ``auto``).

    Returns:
        The calibrator and how it was chosen (``{"method", "brier_cv", "groups", "n", "n_malignant"}``).

    Raises:
        SpinedxError: fewer than two patients of each label, or an unknown method.
    """
    p = np.asarray(p, float)
    y = np.asarray(y, int)
    n_pos = int(y.sum())
    if n_pos < 2 or len(y) - n_pos < 2:
        raise SpinedxError(f"calibration needs at least two patients of each label (have {n_pos} malignant, "
                           f"{len(y) - n_pos} benign)", where="calibration data")
    if method == "auto":
        if groups is None:
            raise SpinedxError("method auto needs the predicting model of each row", where="calibration")
        how = choose_method(p, y, groups)
    elif method in CALIBRATION_METHODS:
        how = {"method": method, "brier_cv": None, "groups": None}
    else:
        raise SpinedxError(f"unknown calibration method {method!r}", where="calibration")
    fit = {"platt": _fit_platt, "isotonic": _fit_isotonic}.get(how["method"])
    cal = fit(p, y) if fit is not None else Calibrator("identity", {})
    return cal, {**how, "n": len(y), "n_malignant": n_pos}


# ------------------------------------------------------------------------------------------------
# how calibrated a probability is


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the patient-weighted mean of ``|observed rate - mean probability|`` over ``n_bins`` equal-width bins."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    if len(y) == 0:
        return math.nan
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / len(y))


def _intercept_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration intercept (calibration-in-the-large: logistic regression of y on an intercept with logit(p) as
    offset) and slope (logistic regression of y on logit(p)), statsmodels GLM; NaN when a fit fails."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    lp = logit(p)
    out = []
    for exog, offset, k in ((np.ones((len(y), 1)), lp, 0), (sm.add_constant(lp, has_constant="add"), None, 1)):
        with warnings.catch_warnings():
            # perfect separation (a resample the probability splits exactly) has no finite estimate: NaN, not 1e15
            warnings.simplefilter("error", PerfectSeparationWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                res = sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset).fit()
                v = float(res.params[k]) if res.converged else math.nan
            except Exception:  # noqa: BLE001 - a degenerate resample (one label, separation) has no logistic fit
                v = math.nan
        out.append(v if math.isfinite(v) else math.nan)
    return out[0], out[1]


def calibration_stats(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Brier score, calibration intercept and slope, ECE (10 equal-width bins) of probabilities ``p``."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    intercept, slope = _intercept_slope(y, p)
    return {"brier": float(np.mean((p - y) ** 2)), "intercept": intercept, "slope": slope,
            "ece": expected_calibration_error(y, p)}


def calibration_report(y: np.ndarray, p: np.ndarray, *, n_resamples: int = 200, seed: int = 0) -> dict[str, Any]:
    """:func:`calibration_stats` with 95% percentile intervals from a patient bootstrap (``name_low``,
    ``name_high``); one row per patient, so resampling rows resamples patients."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    out: dict[str, Any] = dict(calibration_stats(y, p))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in out}
    for _ in range(n_resamples):
        i = rng.integers(0, len(y), len(y))
        for k, v in calibration_stats(y[i], p[i]).items():
            draws[k].append(v)
    for k, vals in draws.items():
        finite = np.array([x for x in vals if math.isfinite(x)])
        # an interval only when nearly every resample has the statistic (a few separated resamples are dropped)
        low, high = (np.percentile(finite, [2.5, 97.5]) if len(finite) >= 0.9 * n_resamples else (math.nan, math.nan))
        out[f"{k}_low"], out[f"{k}_high"] = float(low), float(high)
    out["n"] = len(y)
    out["bootstrap_resamples"] = n_resamples
    return out
