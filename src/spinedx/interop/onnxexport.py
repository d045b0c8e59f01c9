"""The fold-model ensemble as one ONNX graph, and its inference with ONNX Runtime.

The graph maps patches ``(N, 6, P, P)`` (float32, channel order of :data:`spinedx.common.CHANNEL_NAMES`) to the
probabilities of every fold model ``(n_models, N)``: each model's logit through the paper's sigmoid output,
stacked in fold order. A run with test-time augmentation (:class:`spinedx.models.tta.TTAViews`) has its views in
the graph, as constant sampling grids (``GridSample``; ONNX's ``AffineGrid`` needs opset 20): each fold's
probability is already the mean over the patch and its views, as in every other engine. Aggregation over slices
and models stays in Python (as for the torch models), so both engines share everything after the forward pass.
Exported with the TorchScript-based exporter at a fixed opset (the dynamo exporter needs onnxscript, which spinedx
does not depend on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spinedx.errors import SpinedxError

#: ONNX opset of exported graphs (ONNX Runtime >= 1.14 runs it).
OPSET = 17
INPUT = "patches"
OUTPUT = "probability"


def export_ensemble(models: Sequence[Any], path: str | Path, patch_size: int, n_channels: int = 6,
                    views: Any = None) -> Path:
    """Write the ensemble of ``models`` (torch modules returning one logit per patch) as ONNX at ``path``.

    ``views`` (:class:`spinedx.models.tta.TTAViews`, default none): test-time views each probability is averaged
    over inside the graph.
    """
    import torch

    from spinedx.models.tta import TTAViews, expand_views

    views = views or TTAViews("none")

    class _Ensemble(torch.nn.Module):
        def __init__(self, members: Sequence[Any]) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(members)
            self.grids = views.grids(n_channels, patch_size)  # constants of the graph
            self.n_views = views.n_views

        def forward(self, x: Any) -> Any:
            n = x.shape[0]
            xa = expand_views(x, self.grids)  # the patches, then each view (as TTAViews.expand)
            p = torch.stack([torch.sigmoid(m(xa).reshape(-1)) for m in self.members])
            return p.reshape(p.shape[0], self.n_views, n).mean(dim=1)

    net = _Ensemble(list(models)).eval()
    dummy = torch.zeros(2, n_channels, patch_size, patch_size)
    path = Path(path)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (see module docstring)
        torch.onnx.export(net, (dummy,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "n"}, OUTPUT: {1: "n"}}, opset_version=OPSET, dynamo=False)
    return path


class OnnxEnsemble:
    """An exported ensemble loaded in ONNX Runtime (CPU).

    Args:
        path: the ``.onnx`` file (named in messages).
        threads: intra-op threads (None: ONNX Runtime's default).
        data: the file's bytes, already read and checked; None reads ``path``.
    """

    def __init__(self, path: str | Path, threads: int | None = None, data: bytes | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SpinedxError("ONNX Runtime is not installed; reinstall spinedx (pip install -e .), which installs "
                               "onnxruntime", where=str(path)) from None
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(data if data is not None else str(path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- ONNX Runtime raises its own exception types
            raise SpinedxError(f"not a loadable ONNX model ({type(exc).__name__}: {exc})", where=str(path)) from None
        self.path = Path(path)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities ``(n_models, N)`` of patches ``x`` ``(N, C, P, P)``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts = [self.session.run([OUTPUT], {INPUT: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
