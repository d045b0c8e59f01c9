"""Result content made by hand for the DICOM writer tests (a module of its own: ``conftest`` is not importable
by name when several test folders have one)."""

from __future__ import annotations

import numpy as np

from spinedx.explain import DEFAULT_METHOD
from spinedx.interop.content import ALGORITHM_NAME, AlgorithmInfo, Decision, ResultContent


def make_content(slices: tuple[int, ...], box: tuple[int, int, int, int], *, probability: float = 0.7312345678901234,
                 per_model: tuple[float, ...] = (0.6712345678901234, 0.7912345678901234), seed: int = 0,
                 heat: bool = True, decision: Decision | None = None) -> ResultContent:
    """Result content made by hand (no model): known values to find again in the written objects (the decision:
    the call at 0.5, unless given)."""
    rng = np.random.default_rng(seed)
    if decision is None:
        decision = Decision("malignant" if probability >= 0.5 else "benign", probability, 0.5, synthetic=True)
    return ResultContent(
        probability=decision.probability, decision=decision, threshold=0.5,
        aggregation="max over the lesion slices per fold model, then the mean over the 2 fold models",
        per_model=per_model, box=box, slice_index=slices,
        slice_probability=tuple(float(v) for v in rng.uniform(0, 1, len(slices))),
        heatmaps=rng.uniform(0, 1, (len(slices), 64, 64)).astype(np.float32) if heat else None,
        patch_size=64, margin=0.1, heatmap_method=DEFAULT_METHOD if heat else None,
        algorithm=AlgorithmInfo(ALGORITHM_NAME, "0.1.0", "ab" * 32, "resnet18, ensemble mean of 2 fold models"))
