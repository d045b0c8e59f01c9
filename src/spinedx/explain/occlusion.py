"""Occlusion sensitivity of the malignant logit (Zeiler and Fergus, ECCV 2014).

A square window of a neutral value slides over the patch (all channels at once: the T1W and T2W slices
of one position are one piece of anatomy); each pixel's value is the mean, over the windows that cover
it, of how much the malignant logit drops when that window is hidden. The neutral value is 0, the mean
of a z-scored patch (spinedx.preprocess z-scores each channel), so a hidden region reads as average
tissue rather than as a black hole. It needs no gradient and no layer choice, and serves as the
model-agnostic reference for the class activation maps; it costs one forward pass per window position.
"""

from __future__ import annotations

import numpy as np
import torch

from spinedx.explain.cam import as_batch, eval_mode, malignant_logit, minmax, model_device

#: Window side and step in pixels for 64x64 patches (the lesion box spans the patch): 16 px is a quarter
#: of the box, the scale of the lesion's sub-regions; a step of 4 gives 13 x 13 = 169 positions.
OCCLUSION_WINDOW = 16
OCCLUSION_STRIDE = 4


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start positions along one axis: every ``stride`` pixels, plus the last position so the edge is covered."""
    if not 1 <= window <= size:
        raise ValueError(f"occlusion window {window} must be between 1 and the patch side {size}")
    if stride < 1:
        raise ValueError(f"occlusion stride must be >= 1, got {stride}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def occlusion(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    window: int = OCCLUSION_WINDOW,
    stride: int = OCCLUSION_STRIDE,
    value: float = 0.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Occlusion maps of the malignant logit, in [0, 1] like the CAMs.

    Args:
        model: a classifier with one logit per sample (evaluation mode is used during the call).
        x: patches ``(N, C, H, W)``.
        window: side of the square occluder in pixels.
        stride: step between window positions (the last row/column of positions touches the edge).
        value: the occluder's value in every channel (0 = the mean of a z-scored patch).
        batch_size: occluded copies per forward pass.

    Returns:
        ``(N, H, W)`` float32: the positive part of the mean logit drop of the windows covering each
        pixel, scaled to [0, 1] by each map's minimum and maximum (all zeros when no window lowers the logit).
    """
    xt = as_batch(x)
    n, _, h, w = xt.shape
    rows, cols = window_starts(h, window, stride), window_starts(w, window, stride)
    positions = [(r, q) for r in rows for q in cols]
    device = model_device(model)
    coverage = torch.zeros(h, w)
    for r, q in positions:
        coverage[r:r + window, q:q + window] += 1
    heat = torch.zeros(n, h, w)
    with eval_mode(model), torch.no_grad():
        base = torch.cat([malignant_logit(model(xt[s:s + batch_size].to(device)), len(xt[s:s + batch_size])).cpu()
                          for s in range(0, n, batch_size)])
        pairs = [(i, p) for i in range(n) for p in range(len(positions))]
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s:s + batch_size]
            idx = torch.tensor([i for i, _ in chunk])
            batch = xt[idx].clone()
            for k, (_, p) in enumerate(chunk):
                r, q = positions[p]
                batch[k, :, r:r + window, q:q + window] = value
            drop = base[idx] - malignant_logit(model(batch.to(device)), len(chunk)).cpu()
            for k, (i, p) in enumerate(chunk):
                r, q = positions[p]
                heat[i, r:r + window, q:q + window] += drop[k]
    return minmax(torch.relu(heat / coverage)).clamp_(0.0, 1.0).numpy().astype(np.float32)
