"""Keeping the T1 pane on the T2 pane's anatomy: T2 index -> physical (LPS mm) -> T1 index.

The same composition as the patches (``spinedx.preprocess.patches.raw_sample``): ``inv(T1 affine) @ T2->T1
transform @ T2 affine``, with the transform the identity (header geometry) or the bounded rigid registration
of :func:`spinedx.preprocess.register_rigid` when it is on and accepted. Box corners come from
:func:`spinedx.preprocess.mapping.box_corners`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def t2_to_t1_index_map(t1: Any, t2: Any, transform: np.ndarray | None = None) -> np.ndarray:
    """4x4 map from T2 index (x, y, z, 1) to T1 index."""
    tr = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    return np.linalg.inv(t1.affine) @ tr @ t2.affine


def t1_slices_for_t2(t1: Any, t2: Any, transform: np.ndarray | None = None,
                     point: tuple[float, float] | None = None) -> list[int]:
    """For every T2 slice, the T1 slice nearest to it at ``point`` (T2 column, row; default the image centre)."""
    m = t2_to_t1_index_map(t1, t2, transform)
    nz, ny, nx = t2.shape
    x, y = point if point is not None else ((nx - 1) / 2.0, (ny - 1) / 2.0)
    idx = np.stack([np.full(nz, x), np.full(nz, y), np.arange(nz, dtype=np.float64), np.ones(nz)], axis=1)
    z = (idx @ m.T)[:, 2]
    return [int(v) for v in np.clip(np.rint(z), 0, t1.shape[0] - 1)]


def map_box(t1: Any, t2: Any, box: tuple[int, int, int, int], k: int,
            transform: np.ndarray | None = None) -> dict[str, Any]:
    """The T2 box on slice ``k`` as seen on T1: its four corners (T1 column, row), their bounding box and T1 slice."""
    from spinedx.preprocess.mapping import box_corners

    tr = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    pts = box_corners(t2, box, float(k))
    pts_h = np.concatenate([pts, np.ones((4, 1))], axis=1) @ tr.T
    ijk = t1.physical_to_index(pts_h[:, :3])
    # box_corners gives outer pixel edges (index - 0.5); back to the half-open pixel-box convention.
    xy = ijk[:, :2] + 0.5
    z = float(np.mean(ijk[:, 2]))
    return {"t1_slice": int(np.clip(np.rint(z), 0, t1.shape[0] - 1)), "t1_slice_continuous": round(z, 3),
            "corners": [[round(float(a), 2), round(float(b), 2)] for a, b in xy],
            "box": [round(float(xy[:, 0].min()), 2), round(float(xy[:, 1].min()), 2),
                    round(float(xy[:, 0].max()), 2), round(float(xy[:, 1].max()), 2)]}
