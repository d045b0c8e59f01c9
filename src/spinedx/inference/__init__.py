"""The one inference path: load a run folder or a bundle, predict patches with the run's test-time views.

Every probability spinedx reports or deploys is computed here, in fp32: the out-of-fold predictions of ``spinedx
cv`` (so the reported performance is the deployed model's), ``spinedx predict``, the workstation, ``spinedx export``
(the bundle's ONNX graph is checked against the torch engine) and the benchmarks.

* :func:`load_model`: a run folder or a bundle, checked, as :class:`spinedx.models.RunModels` (the fold models in eval
  mode, the run's record, threshold, aggregation, test-time views, how its out-of-fold probabilities were computed).
* :func:`make_engine`: the ``torch`` engine (:class:`TorchEngine`: the fold models, CPU or CUDA) or the
  ``onnxruntime`` engine (:class:`OnnxRuntimeEngine`: the graph ``spinedx export --format onnx`` writes, CPU). Both
  return per-fold probabilities ``(n_models, N)``; the caller aggregates over slices and models.
* :func:`export_bundle`: ``spinedx export``.

Explanations (:mod:`spinedx.explain`) use the torch fold models, :attr:`spinedx.models.RunModels.models`.

Imports: this package sits above :mod:`spinedx.models` and :mod:`spinedx.interop.bundle`; neither imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spinedx.inference.engines import Engine, OnnxRuntimeEngine, TorchEngine
    from spinedx.inference.graph import OPSET, EnsembleNet, export_onnx
    from spinedx.inference.loading import ONNX_TOLERANCE, engine_rows, export_bundle, load_model, make_engine

__all__ = ["ONNX_TOLERANCE", "OPSET", "Engine", "EnsembleNet", "OnnxRuntimeEngine", "TorchEngine", "engine_rows",
           "export_bundle", "export_onnx", "load_model", "make_engine"]

_WHERE = {
    "Engine": "spinedx.inference.engines", "OnnxRuntimeEngine": "spinedx.inference.engines",
    "TorchEngine": "spinedx.inference.engines", "OPSET": "spinedx.inference.graph",
    "EnsembleNet": "spinedx.inference.graph", "export_onnx": "spinedx.inference.graph",
    "ONNX_TOLERANCE": "spinedx.inference.loading", "engine_rows": "spinedx.inference.loading",
    "export_bundle": "spinedx.inference.loading", "load_model": "spinedx.inference.loading",
    "make_engine": "spinedx.inference.loading",
}


def __getattr__(name: str) -> Any:
    # torch is imported on first use, not with the package (the CLI imports commands lazily)
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'spinedx.inference' has no attribute {name!r}")
