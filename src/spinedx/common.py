"""Constants and small helpers shared by every stage, defined once.

Only the standard library is imported at module level (numpy inside the functions that need it), so
any module, the command line's ``--help`` included, can use this one without pulling in torch,
SimpleITK or pandas.

* Labels: ``benign`` -> 0, ``malignant`` -> 1 (the positive class, Yeh et al. 2022).
* The six input channels of the network, in order (Yeh et al. 2022, "Deep learning architecture": "T1W
  and T2W images of the identified slice with its two neighboring slices ... the total number of input
  channel was six").
* Patient aggregation rules: ``max`` (the paper: "the highest probability of malignancy among all
  slices of each patient was assigned to that patient") or ``mean``.
* JSON cleaning (NaN/inf -> null, numpy -> Python) and p-value formatting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.errors import SpinedxError

if TYPE_CHECKING:
    import numpy as np

#: Label words -> codes (1 = malignant = positive).
LABELS: dict[str, int] = {"benign": 0, "malignant": 1}
#: Codes -> label words.
LABEL_NAMES: dict[int, str] = {0: "benign", 1: "malignant"}

#: The six input channels of the network, in order.
CHANNEL_NAMES: tuple[str, ...] = ("T1 s-1", "T1 s", "T1 s+1", "T2 s-1", "T2 s", "T2 s+1")

#: Rules that turn a patient's slice probabilities into the patient probability.
AGGREGATIONS: tuple[str, ...] = ("max", "mean")

_CODE_WORDS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


def label_code(value: Any, *, where: str | None = None) -> int:
    """0/1 from a label word (``benign``/``malignant``, any case) or a 0/1 number.

    Raises:
        SpinedxError: Anything else (naming ``where``).
    """
    if isinstance(value, bool):
        raise SpinedxError(f"label {value!r} is neither benign nor malignant (nor 0/1)", where=where)
    text = str(value).strip().lower()
    if text in LABELS:
        return LABELS[text]
    if text in _CODE_WORDS:
        return _CODE_WORDS[text]
    raise SpinedxError(f"label {value!r} is neither benign nor malignant (nor 0/1)", where=where)


def label_name(code: int) -> str:
    """``benign`` for 0, ``malignant`` for 1."""
    return LABEL_NAMES[int(code)]


def call(probability: float, threshold: float) -> str:
    """The call at ``threshold``: malignant when ``probability >= threshold`` (the paper's rule at 0.5)."""
    return "malignant" if probability >= threshold else "benign"


def check_aggregation(rule: str, *, where: str = "--aggregation") -> str:
    """``rule`` when it is one of :data:`AGGREGATIONS`, else a :class:`SpinedxError`."""
    if rule not in AGGREGATIONS:
        raise SpinedxError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {rule!r}", where=where)
    return rule


def aggregate(probabilities: np.ndarray, rule: str, axis: int = -1) -> np.ndarray:
    """Patient probability from slice probabilities along ``axis``: their maximum (paper) or mean."""
    import numpy as np

    p = np.asarray(probabilities, dtype=float)
    return p.max(axis=axis) if check_aggregation(rule) == "max" else p.mean(axis=axis)


def json_clean(obj: Any) -> Any:
    """A JSON-ready copy: NaN/inf -> None, numpy scalars and arrays -> Python, tuples -> lists, paths -> str.

    ``json.dumps(..., allow_nan=False)`` (what :func:`spinedx.fsutil.atomic_write_json` uses) accepts the
    result; NaN is not JSON.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    mod = type(obj).__module__
    if mod == "numpy":
        if hasattr(obj, "tolist"):
            return json_clean(obj.tolist())
        return json_clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_p(p: Any, *, space: bool = True) -> str:
    """A p-value as the paper prints it: three decimals, ``< 0.001`` below that; ``n/a`` when missing."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(value):
        return "n/a"
    if value < 0.001:
        return "< 0.001" if space else "<0.001"
    return f"{value:.3f}"


#: The banner every summary and report shows for a synthetic cohort (none for a real one).
SYNTHETIC_BANNER = "synthetic cohort, simulated readers: no real patient"
#: What reader-vs-model comparisons are on a synthetic cohort (shown next to McNemar tests and reader rows).
SYNTHETIC_ILLUSTRATION = ("illustration of the method only: the readers are simulated (their calls are drawn from "
                          "the simulation's variables, not read from the images), so reader-vs-model tests measure "
                          "the simulation's settings, not radiologists")


def format_metric(metrics: dict[str, Any], name: str) -> str:
    """``"auc 0.812 [0.701, 0.905]"`` from a metrics dict with ``<name>``, ``<name>_low`` and ``<name>_high``
    (the interval left out when absent, ``"auc n/a"`` when the value is)."""
    v, lo, hi = metrics.get(name), metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    if v is None:
        return f"{name} n/a"
    return f"{name} {v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{name} {v:.3f}"


def redact_url(url: str) -> str:
    """``url`` as it may be shown, logged or written: without the user-info (``user:password@``) of its authority.

    ``http://alice:s3cret@pacs:8042/dicom-web`` -> ``http://pacs:8042/dicom-web``; a URL without user-info comes back
    unchanged. The user-info is everything before the authority's last ``@`` (RFC 3986, section 3.2.1). A password
    written with an unencoded ``/``, ``?`` or ``#`` ends the authority early (``http://alice:pa/ss@pacs/``: such a URL
    cannot work: its "port" is not a number) is removed too, up to the URL's last ``@``, so even a mistyped URL
    never shows its secret.
    """
    import re

    scheme = re.match(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//", url)
    if scheme is None:
        return url
    head, rest = url[:scheme.end()], url[scheme.end():]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    at = authority.rfind("@")
    if at >= 0:
        return head + rest[at + 1:]
    # an authority that is no valid host[:port] (a port that is not a number) is the start of a broken user-info
    if re.fullmatch(r"(?:\[[^\]]*\]|[^:\[\]]*)(?::\d*)?", authority) is None:
        at = rest.rfind("@")
        if at >= 0:
            return head + rest[at + 1:]
    return url
