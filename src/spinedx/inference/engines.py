"""The two inference engines: the fold models in torch, and their ONNX graph in ONNX Runtime.

Both compute :class:`spinedx.inference.graph.EnsembleNet` in fp32: patches ``(N, C, P, P)`` -> per-fold
probabilities ``(n_models, N)``, each the mean over the run's test-time views. They agree to float rounding (tested
to 1e-5 against each other, the bundle and the run's out-of-fold probabilities). Every probability spinedx reports
comes from one of them: the out-of-fold predictions of ``spinedx cv`` (torch), ``spinedx predict`` (torch, or
``--engine onnx``), the workstation (ONNX Runtime on the CPU) and a bundle's ``model.onnx`` (ONNX Runtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from spinedx.errors import SpinedxError
from spinedx.inference.graph import INPUT, OUTPUT, EnsembleNet, export_onnx, session_options
from spinedx.models.run import INFERENCE_PRECISION
from spinedx.models.tta import TTAViews

#: Images (patches x views) per forward pass: bounds the memory of a large batch (an out-of-fold fold, a
#: ResNet50 at 9 views) without changing any probability beyond float rounding.
IMAGES_PER_PASS = 256


@runtime_checkable
class Engine(Protocol):
    """What every engine offers.

    Attributes:
        name: ``torch`` or ``onnxruntime``.
        precision: ``fp32``.
        folds: fold number of each output row.
        views: the test-time views each probability is averaged over.
    """

    name: str
    precision: str
    folds: list[int]
    views: TTAViews

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(len(folds), N)`` (float32) of patches ``x`` ``(N, C, P, P)``."""
        ...

    def record(self) -> dict[str, Any]:
        """``{engine, precision, views}`` for records (``done.json``, ``prediction.json``)."""
        ...


def _check_patches(x: Any, n_channels: int | None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"patches must be (N, C, H, W), got shape {x.shape}")
    if n_channels is not None and x.shape[1] != n_channels:
        raise ValueError(f"patches have {x.shape[1]} channels; the models take {n_channels}")
    return x


def _chunk(views: TTAViews) -> int:
    return max(1, IMAGES_PER_PASS // views.n_views)


class _Base:
    name = ""
    precision = INFERENCE_PRECISION

    def __init__(self, folds: Sequence[int], views: TTAViews | None) -> None:
        self.folds = [int(k) for k in folds]
        self.views = views or TTAViews("none")

    def record(self) -> dict[str, Any]:
        """``{engine, precision, views}``: what computed a probability (``done.json`` ``inference``,
        ``prediction.json``)."""
        return {"engine": self.name, "precision": self.precision, "views": self.views.n_views}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.folds)} fold models, {self.precision}, "
                f"tta={self.views.name})")


class TorchEngine(_Base):
    """The fold models in torch: fp32, eval mode, :func:`torch.inference_mode`, channels-last, on their device.

    The models are used in place (not copied): each is put in eval mode for a prediction and given back in the mode
    it had, and converted to channels-last once (outside inference mode, so an explanation can still take
    gradients through them afterwards).

    Args:
        models: networks returning one logit per patch (e.g. :class:`~spinedx.models.net.SpineNet`), on one device
            (CPU or CUDA).
        folds: fold number of each (default 0..M-1).
        views: test-time views (default: the patch alone; a run's are :attr:`spinedx.models.RunModels.tta`).
    """

    name = "torch"

    def __init__(self, models: Sequence[nn.Module], *, folds: Sequence[int] | None = None,
                 views: TTAViews | None = None) -> None:
        self.models = list(models)
        if not self.models:
            raise ValueError("an engine needs at least one model")
        super().__init__(range(len(self.models)) if folds is None else folds, views)
        if len(self.folds) != len(self.models):
            raise ValueError(f"{len(self.folds)} fold numbers for {len(self.models)} models")
        first = next(self.models[0].parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        for m in self.models:
            m.to(memory_format=torch.channels_last)
        self._nets: dict[tuple[int, int], EnsembleNet] = {}

    def _net(self, n_channels: int, size: int) -> EnsembleNet:
        key = (n_channels, size)
        if key not in self._nets:  # the views' grids depend on the patch size
            self._nets[key] = EnsembleNet(self.models, self.views, n_channels, size, channels_last=True).to(self.device)
        return self._nets[key]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(n_models, N)`` (float32) of patches ``x`` ``(N, C, P, P)``."""
        x = _check_patches(x, None)
        out = np.empty((len(self.models), x.shape[0]), dtype=np.float32)
        if not len(x):
            return out
        net = self._net(x.shape[1], x.shape[-1])
        modes = [m.training for m in self.models]
        step = _chunk(self.views)
        try:
            for m in self.models:
                m.eval()
            # fp32 whatever the caller's autocast: every engine, and every reported probability, is fp32
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                for i in range(0, x.shape[0], step):
                    xt = torch.from_numpy(x[i:i + step]).to(self.device)
                    out[:, i:i + step] = net(xt).float().cpu().numpy()
        finally:
            for m, mode in zip(self.models, modes, strict=True):
                m.train(mode)
        return out


class OnnxRuntimeEngine(_Base):
    """An ensemble's ONNX graph (:func:`spinedx.inference.graph.export_onnx`) in ONNX Runtime on the CPU, fp32.

    ONNX Runtime folds each eval-mode BatchNorm into its convolution, fuses the activations and runs its own CPU
    kernels (MLAS) when the session is created, so one call runs every fold model.

    Args:
        graph: the graph's bytes (a bundle's ``model.onnx``, checked, or :func:`export_onnx`'s output).
        folds: fold number of each output row of the graph.
        views: the test-time views the graph holds (for records; they are inside the graph).
        threads: intra-op threads (default: torch's thread count).
        where: what to name in messages (the file).
    """

    name = "onnxruntime"

    def __init__(self, graph: bytes, *, folds: Sequence[int], views: TTAViews | None = None,
                 threads: int | None = None, where: str = "model.onnx") -> None:
        super().__init__(folds, views)
        try:
            import onnxruntime as ort
        except ImportError:
            raise SpinedxError("ONNX Runtime is not installed; reinstall spinedx (pip install -e .), which installs "
                               "onnxruntime, or use the torch engine", where=where) from None
        try:
            self.session = ort.InferenceSession(graph, sess_options=session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- ONNX Runtime raises its own exception types
            raise SpinedxError(f"not a loadable ONNX model ({type(exc).__name__}: {exc})", where=where) from None
        outputs = self.session.get_outputs()
        rows = outputs[0].shape[0] if outputs and len(outputs[0].shape) == 2 else None
        if [o.name for o in outputs] != [OUTPUT] or [i.name for i in self.session.get_inputs()] != [INPUT] \
                or rows != len(self.folds):
            raise SpinedxError(f"not a spinedx ensemble graph of {len(self.folds)} fold models (inputs "
                               f"{[i.name for i in self.session.get_inputs()]}, outputs "
                               f"{[(o.name, o.shape) for o in outputs]})", where=where)
        self.where = where

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], *, patch_size: int, folds: Sequence[int] | None = None,
                    views: TTAViews | None = None, n_channels: int = 6,
                    threads: int | None = None) -> OnnxRuntimeEngine:
        """Export ``models`` with ``views`` (:func:`export_onnx`, the graph ``spinedx export`` writes) and load it."""
        folds = list(range(len(models))) if folds is None else list(folds)
        graph = export_onnx(models, patch_size, n_channels, views)
        return cls(graph, folds=folds, views=views, threads=threads, where="the exported graph")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(n_models, N)`` (float32) of patches ``x`` ``(N, C, P, P)``."""
        x = _check_patches(x, None)
        step = _chunk(self.views)
        parts = [self.session.run([OUTPUT], {INPUT: x[i:i + step]})[0] for i in range(0, len(x), step)]
        if not parts:
            return np.zeros((len(self.folds), 0), np.float32)
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)
