"""All fold models of a run as one batched, load-once predictor.

Yeh et al. 2022 evaluate one network per fold of the tenfold cross-validation; ``spinedx
predict`` scores a new case with every fold model (the ensemble) and reports each fold's
probability and their aggregate. Running the ten ResNet50s one after the other costs 10 x 3
small forward passes per case, each paying every layer's dispatch and BatchNorm.
:class:`Ensemble` prepares the models once per process and then runs the whole ensemble as
one call:

* ``onnxruntime`` backend (CPU default: ``onnxruntime`` is a spinedx dependency; for a
  ResNet-family backbone): the models are written as one
  ONNX graph (:func:`ensemble_onnx`: the shared input feeds every model, the outputs are
  concatenated) whose weights stay in the models' own memory. When the session is created,
  onnxruntime folds each eval-mode BatchNorm (a fixed affine map per channel) into its
  convolution, fuses Conv+Add+ReLU and moves the convolutions to its blocked NCHWc layout, so
  its CPU kernels (MLAS) run the ensemble in one call. fp32 only.
* ``torch`` backend (CUDA, and CPUs without onnxruntime): BatchNorm is folded into the
  convolutions (:func:`fold_batchnorm`), the folded models' weights are stacked, and the
  ensemble runs as ``torch.vmap`` over ``torch.func.functional_call`` (one grouped call per
  layer), fp32 or bf16.

Precision: ``fp32`` (default) agrees with the per-model loop
(:func:`spinedx.models.run.predict_patches` with ``bf16=False``) to float rounding (tested to
1e-4; measured ~2e-7). ``bf16`` (torch backend, weights and activations in bfloat16) is for
devices with fast bf16 (CUDA, CPUs with AVX512-BF16/AMX); its probabilities differ from fp32 by
up to ~1e-2, so it is opt-in and recorded in :attr:`Ensemble.precision`.
"""

from __future__ import annotations

import copy
import logging
import operator
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from spinedx.models.tta import TTAViews

if TYPE_CHECKING:
    from spinedx.models.run import RunModels

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch")
PRECISIONS = ("fp32", "bf16")
ONNX_OPSET = 17


class UnsupportedGraph(Exception):
    """The network uses an operation the ONNX ensemble writer does not translate."""


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution folded into it.

    In eval mode BatchNorm is ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, an affine map
    per channel, so ``bn(conv(x))`` equals one convolution with rescaled weights and a bias
    (:func:`torch.fx.experimental.optimization.fuse`, which follows the data flow of the traced
    graph). Networks that cannot be traced are returned as an unfolded eval copy (same results).
    """
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            return fuse(model, inplace=True).eval()
    except Exception as exc:  # noqa: BLE001 - untraceable control flow: unfolded copy, same numbers
        log.info("BatchNorm folding skipped (%s: %s)", type(exc).__name__, exc)
        return model


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


class _OnnxWriter:
    """Translates traced networks (``torch.fx`` graphs) into the nodes of one ONNX ensemble graph.

    Only the operations of ResNet-family backbones are known (Conv, BatchNorm, ReLU, MaxPool,
    global average pooling, flatten, add, Linear); anything else raises :class:`UnsupportedGraph`
    and the caller uses the torch backend.
    """

    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.arrays: dict[str, np.ndarray] = {}
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}/v{self._n}"

    def _init(self, name: str, t: torch.Tensor) -> str:
        # The weights stay where they are (numpy views of the tensors when possible): the graph
        # only declares them as external data, and the session receives them as OrtValues.
        from onnx import TensorProto

        arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
        proto = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(arr.shape),
                            data_location=TensorProto.EXTERNAL)
        for key, value in (("location", "spinedx-memory"), ("offset", "0"), ("length", str(arr.nbytes))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(proto)
        self.arrays[name] = arr
        return name

    def _node(self, op: str, inputs: list[str], prefix: str, **attrs: Any) -> str:
        out = self._name(prefix)
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out

    def add_model(self, gm: torch.fx.GraphModule, x: str, prefix: str) -> str:
        """Emit the nodes of one traced model reading ``x``; return the name of its (N, 1) logits."""
        env: dict[torch.fx.Node, str] = {}

        def arg(a: Any) -> str:
            if not isinstance(a, torch.fx.Node):
                raise UnsupportedGraph(f"non-tensor argument {a!r}")
            return env[a]

        out: str | None = None
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                if env:
                    raise UnsupportedGraph("more than one input")
                env[node] = x
            elif node.op == "call_module":
                env[node] = self._module(gm.get_submodule(node.target), arg(node.args[0]), f"{prefix}/{node.target}")
            elif node.op == "call_function":
                env[node] = self._function(node, arg, prefix)
            elif node.op == "call_method":
                if node.target == "flatten" and tuple(node.args[1:]) in ((1,), (1, -1)) and not node.kwargs:
                    env[node] = self._node("Flatten", [arg(node.args[0])], prefix, axis=1)
                else:
                    raise UnsupportedGraph(f"method {node.target}")
            elif node.op == "output":
                out = arg(node.args[0])
            else:
                raise UnsupportedGraph(f"node {node.op}")
        if out is None:
            raise UnsupportedGraph("no output")
        return out

    def _function(self, node: torch.fx.Node, arg: Callable[[Any], str], prefix: str) -> str:
        f, args, kwargs = node.target, node.args, node.kwargs
        if f in (operator.add, torch.add) and len(args) == 2 and not kwargs:
            return self._node("Add", [arg(args[0]), arg(args[1])], prefix)
        if f is torch.flatten and tuple(args[1:]) in ((1,), (1, -1)) and not kwargs:
            return self._node("Flatten", [arg(args[0])], prefix, axis=1)
        if f in (torch.relu, nn.functional.relu) and len(args) == 1:
            return self._node("Relu", [arg(args[0])], prefix)
        raise UnsupportedGraph(f"function {getattr(f, '__name__', f)}")

    def _module(self, m: nn.Module, x: str, name: str) -> str:
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(m, nn.ReLU):
            return self._node("Relu", [x], name)
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise UnsupportedGraph(f"Conv2d padding {m.padding!r} / {m.padding_mode}")
            ph, pw = _pair(m.padding)
            inputs = [x, self._init(f"{name}.weight", m.weight)]
            if m.bias is not None:
                inputs.append(self._init(f"{name}.bias", m.bias))
            return self._node("Conv", inputs, name, kernel_shape=_pair(m.kernel_size), strides=_pair(m.stride),
                              pads=[ph, pw, ph, pw], dilations=_pair(m.dilation), group=int(m.groups))
        if isinstance(m, nn.BatchNorm2d):
            if m.running_mean is None or m.running_var is None:
                raise UnsupportedGraph("BatchNorm2d without running statistics")
            c = m.num_features
            scale = m.weight if m.weight is not None else torch.ones(c)
            bias = m.bias if m.bias is not None else torch.zeros(c)
            inputs = [x, self._init(f"{name}.weight", scale), self._init(f"{name}.bias", bias),
                      self._init(f"{name}.running_mean", m.running_mean),
                      self._init(f"{name}.running_var", m.running_var)]
            return self._node("BatchNormalization", inputs, name, epsilon=float(m.eps))
        if isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise UnsupportedGraph("MaxPool2d with indices")
            ph, pw = _pair(m.padding)
            return self._node("MaxPool", [x], name, kernel_shape=_pair(m.kernel_size),
                              strides=_pair(m.stride if m.stride is not None else m.kernel_size),
                              pads=[ph, pw, ph, pw], dilations=_pair(m.dilation), ceil_mode=int(m.ceil_mode))
        if isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == [1, 1]:
            return self._node("GlobalAveragePool", [x], name)
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            return self._node("Flatten", [x], name, axis=1)
        if isinstance(m, nn.Linear):
            inputs = [x, self._init(f"{name}.weight", m.weight)]
            if m.bias is not None:
                inputs.append(self._init(f"{name}.bias", m.bias))
            return self._node("Gemm", inputs, name, transB=1)
        raise UnsupportedGraph(f"module {type(m).__name__}")


def ensemble_onnx(models: Sequence[nn.Module]) -> tuple[Any, dict[str, np.ndarray]]:
    """One ONNX graph running every network on a shared input, and its weights.

    Input ``x`` (N, C, H, W) float32; output ``probability`` (n_models, N): the sigmoid of each
    model's single logit. The weights are not copied into the graph: its initializers are
    declared as external data and returned separately (numpy views of the models' tensors), to
    be handed to ``onnxruntime`` with ``SessionOptions.add_external_initializers``. BatchNorm
    nodes are kept; onnxruntime folds them into the convolutions when the session is created.

    Returns:
        The ``onnx.ModelProto`` and ``{initializer name: array}``.

    Raises:
        UnsupportedGraph: A network is not traceable or uses an operation not translated here.
    """
    from onnx import TensorProto, helper

    writer = _OnnxWriter()
    probs = []
    for k, model in enumerate(models):
        gm = model if isinstance(model, torch.fx.GraphModule) else _trace(model)
        logit = writer.add_model(gm, "x", f"m{k}")
        probs.append(writer._node("Sigmoid", [logit], f"m{k}"))  # (N, 1)
    both = writer._node("Concat", probs, "ensemble", axis=1)  # (N, M)
    writer.nodes.append(helper.make_node("Transpose", [both], ["probability"], perm=[1, 0]))
    graph = helper.make_graph(
        writer.nodes, "spinedx_ensemble",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [len(probs), "N"])],
        writer.initializers,
    )
    # IR version 8 (opset 17's) rather than the onnx package's newest, which an older onnxruntime refuses
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="spinedx",
                              ir_version=8)
    return model, writer.arrays


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow and the like
        raise UnsupportedGraph(f"not traceable ({type(exc).__name__}: {exc})") from exc


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` (and ``onnx``) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _bf16_fast(device: torch.device) -> bool:
    from spinedx.training.engine import bf16_supported

    return bf16_supported(device)


class Ensemble:
    """The fold models of a run, prepared once, predicted as one batched call.

    Build it with :meth:`from_models` or :meth:`load` and keep it (the workstation keeps one
    warm per run); :meth:`predict` is then one call per case.

    Attributes:
        backend: ``onnxruntime`` or ``torch`` (the resolved backend).
        precision: ``fp32`` or ``bf16``.
        device: Where the torch backend runs (``cpu`` for onnxruntime).
        folds: Fold number of each model, in output order.
        run: The :class:`~spinedx.models.run.RunModels` it was loaded from (threshold,
            aggregation, the eval-mode torch models for Grad-CAM), or None.
        notes: Why a requested backend was not used, if so.
        views: The test-time views every probability is averaged over (:class:`~spinedx.models.tta.TTAViews`;
            :meth:`load` takes the run's own).
    """

    def __init__(self, *, backend: str, precision: str, device: torch.device, folds: list[int],
                 channel_names: tuple[str, ...], runner: Callable[[np.ndarray], np.ndarray], notes: list[str],
                 threads: int | None, views: TTAViews | None = None) -> None:
        self.backend = backend
        self.precision = precision
        self.device = device
        self.folds = folds
        self.channel_names = channel_names
        self.notes = notes
        self.threads = threads
        self.run: RunModels | None = None
        self.views = views or TTAViews("none")
        self._runner = runner

    @property
    def n_models(self) -> int:
        """Number of fold models."""
        return len(self.folds)

    def __repr__(self) -> str:
        return (f"Ensemble({self.n_models} models, backend={self.backend}, precision={self.precision}, "
                f"device={self.device}, tta={self.views.name})")

    @classmethod
    def from_models(
        cls,
        models: Sequence[nn.Module],
        *,
        folds: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        backend: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        views: TTAViews | None = None,
    ) -> Ensemble:
        """Prepare networks of one architecture for batched prediction (the models are not modified).

        Args:
            models: Networks taking (N, C, H, W) and returning (N, 1) logits (e.g.
                :class:`~spinedx.models.net.SpineNet`); all of one architecture.
            folds: Fold number of each model (default 0..M-1).
            device: Device of the torch backend (default: the models' device).
            backend: ``auto`` (onnxruntime on CPU when installed and the network translates,
                else torch), ``onnxruntime`` or ``torch``.
            precision: ``fp32`` (agrees with the per-model loop to float rounding) or ``bf16``
                (torch backend only; faster on devices with bf16 units, ~1e-2 off).
            threads: CPU threads of the onnxruntime session (default: torch's thread count).
                torch's own thread count is left alone.
            views: Test-time views to average over (default: the patch alone; a run's are
                :attr:`spinedx.models.RunModels.tta`).

        Raises:
            ValueError: No models, an unknown backend or precision, or a combination that
                cannot run (onnxruntime asked for on CUDA or in bf16, or not installed).
        """
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        folds = list(range(len(models))) if folds is None else [int(f) for f in folds]
        if len(folds) != len(models):
            raise ValueError(f"{len(folds)} fold numbers for {len(models)} models")
        first_param = next(models[0].parameters(), None)
        dev = torch.device(device) if device is not None else (first_param.device if first_param is not None
                                                               else torch.device("cpu"))
        names = tuple(getattr(models[0], "channel_names", ()))
        notes: list[str] = []
        if backend == "onnxruntime":
            if dev.type != "cpu" or precision != "fp32":
                raise ValueError("the onnxruntime backend runs fp32 on the CPU; use backend='torch' for "
                                 f"{dev.type} / {precision}")
            if not onnxruntime_available():
                raise ValueError("onnxruntime is not installed (a spinedx dependency: pip install -e .); "
                                 "use backend='torch'")
        if backend in ("auto", "onnxruntime") and dev.type == "cpu" and precision == "fp32":
            if onnxruntime_available():
                try:
                    runner = _onnx_runner(models, threads)
                    return cls(backend="onnxruntime", precision="fp32", device=torch.device("cpu"), folds=folds,
                               channel_names=names, runner=runner, notes=notes, threads=threads, views=views)
                except UnsupportedGraph as exc:
                    if backend == "onnxruntime":
                        raise ValueError(f"this network cannot run on the onnxruntime backend ({exc})") from exc
                    notes.append(f"onnxruntime backend not used ({exc}); torch backend instead")
            else:
                notes.append("onnxruntime not installed; torch backend")
        for n in notes:
            log.info(n)
        runner = _torch_runner([fold_batchnorm(m) for m in models], dev, precision)
        return cls(backend="torch", precision=precision, device=dev, folds=folds, channel_names=names,
                   runner=runner, notes=notes, threads=threads, views=views)

    @classmethod
    def load(cls, run_dir: str | Path, **kwargs: Any) -> Ensemble:
        """Load a ``spinedx cv`` run folder's fold models and prepare them (see :meth:`from_models`).

        The returned ensemble's :attr:`run` holds the run (threshold, aggregation, config, and the
        eval-mode torch models, e.g. for Grad-CAM); its :attr:`views` are the run's test-time views.

        Raises:
            WeightsError: Not a run folder, or no finished fold model.
        """
        from spinedx.models.run import load_run

        device = kwargs.get("device") or "cpu"
        run = load_run(run_dir, device=device)
        ens = cls.from_models(run.models, folds=run.folds, **{"views": run.tta, **kwargs})
        ens.run = run
        return ens

    def predict(self, x: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Probabilities of every model for every patch (each the mean over :attr:`views`).

        Args:
            x: Patches (N, C, H, W), channel order :attr:`channel_names`.
            batch_size: Patches per call (bounds memory for large N; each is run with its views).

        Returns:
            Array (n_models, N) of malignancy probabilities, float32, rows in :attr:`folds` order.
        """
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"patches must be (N, C, H, W), got shape {x.shape}")
        if self.channel_names and x.shape[1] != len(self.channel_names):
            raise ValueError(f"patches have {x.shape[1]} channels; the models take {len(self.channel_names)} "
                             f"({', '.join(self.channel_names)})")
        out = np.empty((self.n_models, x.shape[0]), dtype=np.float32)
        for i in range(0, x.shape[0], batch_size):
            chunk = x[i:i + batch_size]
            out[:, i:i + batch_size] = self.views.reduce(self._runner(self.views.expand(chunk)))
        return out


def onnx_session_options(threads: int | None = None) -> Any:
    """onnxruntime session options of the ensemble: all graph optimisations, no spinning threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Spinning worker threads burn the other cores between operations; on a shared machine (or a
    # workstation that also serves pages) that slows everything else, and under contention a
    # spinning session ran slower itself.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _onnx_runner(models: list[nn.Module], threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    proto, weights = ensemble_onnx(models)
    so = onnx_session_options(threads)
    names = list(weights)
    # the session reads the arrays in place; they must outlive it (the closure keeps them)
    values = [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in names]
    so.add_external_initializers(names, values)
    session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        _ = values
        return session.run(["probability"], {"x": x})[0]

    return run


def _torch_runner(folded: list[nn.Module], device: torch.device, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    from torch.func import functional_call

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    template = folded[0]
    states = [{**dict(m.named_parameters()), **dict(m.named_buffers())} for m in folded]
    keys = list(states[0])
    if any(list(s) != keys for s in states[1:]):
        raise ValueError("the ensemble's models differ in architecture")
    stacked = {k: torch.stack([s[k].detach() for s in states]).to(device) for k in keys}
    stacked = {k: v.to(dtype) if v.is_floating_point() else v for k, v in stacked.items()}
    template = copy.deepcopy(template).to("meta")  # structure only: the weights come from `stacked`

    def one(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, state, (x,))

    batched = torch.vmap(one, in_dims=(0, None))
    del states

    def run(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(x).to(device=device, dtype=dtype)
        with torch.inference_mode(), warnings.catch_warnings():
            # adaptive_avg_pool2d has no vmap batching rule: torch loops over the models for that
            # one cheap operation and warns about it on every call
            warnings.filterwarnings("ignore", message="There is a performance drop")
            logits = batched(stacked, xt)  # (M, N, 1)
            return torch.sigmoid(logits.float().reshape(logits.shape[0], -1)).cpu().numpy()

    return run
