"""The computation both engines run: fold models and test-time views -> per-fold probabilities, and its ONNX graph.

:class:`EnsembleNet` maps patches ``(N, C, P, P)`` (float32, channel order of :data:`spinedx.common.CHANNEL_NAMES`)
to the probability of every fold model ``(n_models, N)``: the patches and each of the run's fixed test-time views
(:class:`spinedx.models.tta.TTAViews`, as constant sampling grids), each model's logit through the paper's sigmoid
output, the mean over the views. The torch engine runs this module; :func:`export_onnx` writes the same module as
an ONNX graph (``torch.onnx.export``, any backbone), which the ONNX Runtime engine runs and ``spinedx export
--format onnx`` puts in a bundle as ``model.onnx``. Aggregation over slices and models stays in Python, after the
engine, so every engine shares everything after the forward pass.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from spinedx.models.tta import TTAViews, expand_views

#: ONNX opset of every graph spinedx writes (ONNX Runtime >= 1.14 runs it; GridSample needs 16, AffineGrid 20, so the
#: views are constant grids).
OPSET = 17
#: Input and output names of the graph.
INPUT = "patches"
OUTPUT = "probability"


class EnsembleNet(nn.Module):
    """Fold models and the test-time views of one patch size, as one module returning ``(n_models, N)``.

    Args:
        members: the fold models (each ``(N, C, P, P)`` -> ``(N, 1)`` logits), in output order; not copied.
        views: the test-time views each probability is averaged over.
        n_channels: patch channels.
        size: patch side (the views' sampling grids are made for it).
        channels_last: run the members on channels-last input (the torch engine; no effect on an exported graph).
    """

    grids: torch.Tensor

    def __init__(self, members: Sequence[nn.Module], views: TTAViews, n_channels: int, size: int,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("grids", views.grids(n_channels, size), persistent=False)
        self.n_views = views.n_views
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        xa = expand_views(x, self.grids)  # the patches, then each view (view-major)
        if self.channels_last:
            xa = xa.contiguous(memory_format=torch.channels_last)
        p = torch.stack([torch.sigmoid(m(xa).reshape(-1)) for m in self.members])  # (M, V * N)
        return p.reshape(p.shape[0], self.n_views, n).mean(dim=1)


def export_onnx(models: Sequence[nn.Module], patch_size: int, n_channels: int = 6,
                views: TTAViews | None = None) -> bytes:
    """The ONNX graph of ``models`` with ``views`` (:class:`EnsembleNet`), as bytes: input ``patches`` (N, C, P, P),
    output ``probability`` (n_models, N); N is dynamic.

    Exported with the TorchScript-based exporter at :data:`OPSET` (the dynamo exporter needs onnxscript, which
    spinedx does not depend on). The models are traced as they are (eval mode during the export); a caller whose
    models may be in use elsewhere at the same time (hooks of an explanation) passes copies.
    """
    net = EnsembleNet(list(models), views or TTAViews("none"), n_channels, patch_size).eval()
    dummy = torch.zeros(2, n_channels, patch_size, patch_size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (see above)
        # the TorchScript exporter writes to a file object too (its annotation names paths only)
        torch.onnx.export(net, (dummy,), buf, input_names=[INPUT], output_names=[OUTPUT],  # type: ignore[arg-type]
                          dynamic_axes={INPUT: {0: "n"}, OUTPUT: {1: "n"}}, opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options of the engine: every graph optimisation, no spinning threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Spinning worker threads burn the other cores between operations; on a shared machine (or a workstation that
    # also serves pages) that slows everything else, and under contention a spinning session ran slower itself.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so
