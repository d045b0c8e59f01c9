"""The two engines of the one inference path: the torch fold models and their ONNX graph in ONNX Runtime, both fp32,
any backbone, with the run's test-time views; made for a run folder or a bundle by make_engine."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from runhelpers import tiny_config, write_run_from
from torch import nn

from spinedx.errors import SpinedxError
from spinedx.inference import OnnxRuntimeEngine, TorchEngine, export_onnx, load_model, make_engine
from spinedx.models import build_model
from spinedx.models.tta import TTAViews
from spinedx.training.augment import apply_affine
from spinedx.training.config import CVConfig


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the other model tests: on a loaded machine two spin-waiting threads are far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_like(seed: int, backbone: str = "resnet18") -> nn.Module:
    """A network whose BatchNorm statistics are far from the identity, as after training."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(backbone, pretrained="none")[0]
    g = torch.Generator().manual_seed(seed + 100)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            mod.running_var.copy_(0.3 + 2 * torch.rand(c, generator=g))
            mod.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            mod.bias.data.copy_(0.2 * torch.randn(c, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def models() -> list[nn.Module]:
    return [_trained_like(k) for k in range(2)]


def _patches(n: int = 4, size: int = 32) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n, 6, size, size)).astype(np.float32)
    x[:, :, size // 4:size // 2, size // 3:2 * size // 3] += 2.0  # off-centre: the views change what a model sees
    return x


def _by_hand(models: list[nn.Module], x: np.ndarray, views: TTAViews) -> np.ndarray:
    """Each model's fp32 sigmoid, averaged over the patch and each view (apply_affine, as training augments)."""
    xs = [torch.from_numpy(x)] + [apply_affine(torch.from_numpy(x), p.expand(len(x), 4)) for p in views.param_tensor()]
    with torch.no_grad():
        return np.stack([np.mean([torch.sigmoid(m(v)).reshape(-1).numpy() for v in xs], axis=0) for m in models])


@pytest.mark.parametrize("tta", ["none", "affine8"])
def test_torch_engine_is_each_model_in_fp32_over_the_views(models: list[nn.Module], tta: str) -> None:
    views = TTAViews.make(tta)
    x = _patches()
    eng = TorchEngine(models, folds=[3, 5], views=views)
    got = eng.predict(x)
    assert got.shape == (2, 4) and got.dtype == np.float32 and eng.folds == [3, 5]
    np.testing.assert_allclose(got, _by_hand(models, x, views), atol=1e-6, rtol=0)
    assert eng.record() == {"engine": "torch", "precision": "fp32", "views": views.n_views}
    # fp32 whatever the caller's autocast (cv's training runs under bf16 autocast on CUDA)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_array_equal(eng.predict(x), got)
    # many patches go in several passes: the same numbers as one patch at a time
    many = np.concatenate([x] * 20)
    np.testing.assert_allclose(eng.predict(many), np.tile(got, 20), atol=1e-6, rtol=0)
    assert eng.predict(x[:0]).shape == (2, 0)


def test_torch_engine_gives_models_back_in_their_mode(models: list[nn.Module]) -> None:
    model = _trained_like(9).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    TorchEngine([model]).predict(_patches(2))
    assert model.training  # a fold model used by the trainer right after its out-of-fold prediction
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no BatchNorm update
    with pytest.raises(ValueError, match="at least one model"):
        TorchEngine([])
    with pytest.raises(ValueError, match="1 fold numbers for 2 models"):
        TorchEngine(models, folds=[0])
    with pytest.raises(ValueError, match="shape"):
        TorchEngine(models).predict(np.zeros((6, 32, 32), np.float32))


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "resnet18"])
def test_onnx_runtime_runs_the_exported_graph_of_any_backbone(backbone: str) -> None:
    """Issue 19: the workstation's ONNX writer knew ResNet operations only, so the default MobileNetV3-Small fell
    back to torch; the graph is now torch.onnx.export's, whatever the backbone."""
    if backbone == "mobilenet_v3_small":
        assert CVConfig.from_profile("cpu").backbone == backbone  # the main job's backbone
    nets = [_trained_like(k, backbone) for k in range(2)]
    views = TTAViews.make("affine8")
    x = _patches(3, 64)
    ref = TorchEngine(nets, views=views).predict(x)
    eng = OnnxRuntimeEngine.from_models(nets, patch_size=64, views=views, threads=1)
    assert eng.name == "onnxruntime" and eng.record()["precision"] == "fp32"
    got = eng.predict(x)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(eng.predict(x[:1]), ref[:, :1], atol=1e-5, rtol=0)  # a batch of one


class _Gelu(nn.Module):
    """Not a torchvision backbone at all (GELU, a mean): the exporter takes it too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3)
        self.act = nn.GELU()
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_any_network_exports_and_bad_graphs_are_refused() -> None:
    torch.manual_seed(0)
    nets = [_Gelu().eval(), _Gelu().eval()]
    x = _patches(4, 16)
    graph = export_onnx(nets, 16, 6)
    np.testing.assert_allclose(OnnxRuntimeEngine(graph, folds=[0, 1]).predict(x), TorchEngine(nets).predict(x),
                               atol=1e-5, rtol=0)
    with pytest.raises(SpinedxError, match="not a spinedx ensemble graph of 3 fold models"):
        OnnxRuntimeEngine(graph, folds=[0, 1, 2])
    with pytest.raises(SpinedxError, match="model.onnx: not a loadable ONNX model"):
        OnnxRuntimeEngine(b"not a graph", folds=[0])


def _mobilenet_run(root: Path) -> Path:
    """A run folder (two untrained MobileNetV3-Small fold models, affine8), as spinedx cv writes it."""
    pids = [f"P{i:03d}" for i in range(8)]
    y = np.arange(8) % 2
    return write_run_from(root, pids, y, np.where(y == 1, 0.7, 0.3), np.arange(8) % 2,
                          config=tiny_config(folds=2, backbone="mobilenet_v3_small", tta="affine8"))


@pytest.mark.slow
def test_engines_of_a_run_agree_and_the_workstation_runs_onnx_for_mobilenet(tmp_path: Path) -> None:
    """make_engine gives both engines for a run; the workstation's warm engine is ONNX Runtime for the default
    backbone (before: a silent torch fallback)."""
    from spinedx.serve.predictor import Predictor

    run_dir = _mobilenet_run(tmp_path)
    run = load_model(run_dir)
    x = _patches(3, 64)
    a = make_engine(run, "torch").predict(x)
    b = make_engine(run, "onnx", threads=1).predict(x)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    with pytest.raises(SpinedxError, match="engine must be torch or onnx"):
        make_engine(run, "tensorrt")
    one = make_engine(load_model(run_dir, folds=[1]), "onnx", threads=1)
    assert one.folds == [1]
    np.testing.assert_allclose(one.predict(x), a[1:], atol=1e-5, rtol=0)
    p = Predictor(run_dir)
    assert p.wait_ready(600)
    assert p.describe()["engine"] == "onnxruntime (fp32)" and p.engine_note is None
    np.testing.assert_allclose(p.engine.predict(x), a, atol=1e-5, rtol=0)
