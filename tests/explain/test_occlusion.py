"""Occlusion sensitivity against a direct, one-window-at-a-time re-computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toynets import TinyResNetLike

from spinedx.explain.occlusion import occlusion, window_starts


def test_window_starts_cover_the_edges() -> None:
    assert window_starts(64, 16, 4) == list(range(0, 49, 4))
    assert window_starts(10, 4, 4) == [0, 4, 6]  # the last window touches the edge
    assert window_starts(8, 8, 3) == [0]
    with pytest.raises(ValueError, match="window"):
        window_starts(8, 9, 1)
    with pytest.raises(ValueError, match="stride"):
        window_starts(8, 4, 0)


def _direct(model: torch.nn.Module, x: np.ndarray, window: int, stride: int, value: float) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for patch in x:
            base = float(model(torch.from_numpy(patch[None])).reshape(-1)[0])
            h, w = patch.shape[1:]
            total, count = np.zeros((h, w)), np.zeros((h, w))
            for r in window_starts(h, window, stride):
                for c in window_starts(w, window, stride):
                    occluded = patch.copy()
                    occluded[:, r:r + window, c:c + window] = value
                    drop = base - float(model(torch.from_numpy(occluded[None])).reshape(-1)[0])
                    total[r:r + window, c:c + window] += drop
                    count[r:r + window, c:c + window] += 1
            m = np.maximum(total / count, 0)
            out.append((m - m.min()) / (m.max() - m.min() + 1e-7))
    return np.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize(("window", "stride", "value"), [(8, 4, 0.0), (12, 8, -1.0)])
def test_occlusion_matches_direct_computation(window: int, stride: int, value: float) -> None:
    model = TinyResNetLike(seed=11)
    x = np.random.default_rng(12).normal(size=(2, 6, 32, 32)).astype(np.float32)
    fast = occlusion(model, x, window=window, stride=stride, value=value, batch_size=20)  # chunks across patches
    assert fast.shape == (2, 32, 32) and fast.dtype == np.float32
    assert fast.min() >= 0 and fast.max() <= 1
    np.testing.assert_allclose(fast, _direct(model, x, window, stride, value), atol=1e-4)
