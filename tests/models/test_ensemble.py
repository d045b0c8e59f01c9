"""The batched ensemble: same probabilities as the per-model loop, BatchNorm folded, backends, errors."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from spinedx.errors import SpinedxError
from spinedx.models import Ensemble, build_model, load_run, predict_patches
from spinedx.models.ensemble import ensemble_onnx, fold_batchnorm, onnx_session_options


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


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the other model tests: on a loaded machine two spin-waiting threads are far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> list[nn.Module]:
    return [_trained_like(k) for k in range(3)]


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 6, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_fp32_agrees_with_the_loop(models: list[nn.Module], patches: np.ndarray, backend: str) -> None:
    reference = predict_patches(models, patches, bf16=False)
    ens = Ensemble.from_models(models, backend=backend, threads=1)
    assert ens.backend == backend and ens.precision == "fp32" and ens.n_models == 3 and ens.folds == [0, 1, 2]
    prob = ens.predict(patches)
    assert prob.shape == (3, 4) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, reference, atol=1e-4, rtol=0)
    assert not np.allclose(prob[0], prob[1], atol=1e-3)  # rows are different models, in order
    # a batch split across calls gives the same rows as one call; a torch tensor input works too
    np.testing.assert_allclose(ens.predict(torch.from_numpy(patches), batch_size=2), prob, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_bf16_is_close_and_labelled(models: list[nn.Module], patches: np.ndarray) -> None:
    reference = predict_patches(models, patches, bf16=False)
    ens = Ensemble.from_models(models, precision="bf16")
    assert ens.backend == "torch" and ens.precision == "bf16"
    diff = np.abs(ens.predict(patches) - reference).max()
    assert 0 < diff < 0.05  # bf16 keeps 8 bits of mantissa: close, not to 1e-4


def test_auto_picks_onnxruntime_on_cpu(models: list[nn.Module]) -> None:
    ens = Ensemble.from_models(models)
    assert ens.backend == "onnxruntime" and ens.device.type == "cpu" and not ens.notes


def test_models_are_left_untouched(patches: np.ndarray) -> None:
    model = _trained_like(7).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Ensemble.from_models([model], backend="torch")
    Ensemble.from_models([model], backend="onnxruntime")
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fold_batchnorm_removes_batchnorm_and_keeps_outputs(models: list[nn.Module], patches: np.ndarray) -> None:
    folded = fold_batchnorm(models[0])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in models[0].modules())
    x = torch.from_numpy(patches)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), models[0](x), atol=1e-4, rtol=1e-4)


def test_onnxruntime_folds_batchnorm_into_the_convolutions(models: list[nn.Module], tmp_path: Path) -> None:
    proto, weights = ensemble_onnx(models[:2])
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["Conv"] == 2 * 21 and ops["BatchNormalization"] == 2 * 20  # resnet18: 20 conv+bn pairs, the 1x1 mix
    # the weights are not copied into the graph: declared external, handed over as arrays
    assert all(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert set(weights) == {init.name for init in proto.graph.initializer}
    so = onnx_session_options(1)
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.data")
    values = [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in weights]
    so.add_external_initializers(list(weights), values)
    ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in optimized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Relu"] == 0 and ops["Add"] == 0  # folded, fused into Conv
    assert ops["Conv"] == 2 * 21


class _Gelu(nn.Module):
    channel_names = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.act = nn.GELU()
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_untranslatable_network_falls_back_to_torch() -> None:
    torch.manual_seed(0)
    nets = [_Gelu().eval(), _Gelu().eval()]
    x = np.random.default_rng(1).normal(size=(4, 2, 8, 8)).astype(np.float32)
    ens = Ensemble.from_models(nets)
    assert ens.backend == "torch" and "onnxruntime backend not used" in ens.notes[0]
    with torch.no_grad():
        ref = np.stack([torch.sigmoid(n(torch.from_numpy(x))).numpy().ravel() for n in nets])
    np.testing.assert_allclose(ens.predict(x), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cannot run on the onnxruntime backend"):
        Ensemble.from_models(nets, backend="onnxruntime")


def test_argument_errors(models: list[nn.Module]) -> None:
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble.from_models([])
    with pytest.raises(ValueError, match="backend must be"):
        Ensemble.from_models(models, backend="tensorrt")
    with pytest.raises(ValueError, match="precision must be"):
        Ensemble.from_models(models, precision="fp16")
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        Ensemble.from_models(models, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="2 fold numbers for 3 models"):
        Ensemble.from_models(models, folds=[0, 1])
    ens = Ensemble.from_models(models[:1])
    with pytest.raises(ValueError, match="6"):
        ens.predict(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="shape"):
        ens.predict(np.zeros((6, 64, 64), np.float32))


@pytest.mark.slow
def test_load_run_folder(tmp_path: Path, patches: np.ndarray) -> None:
    from runhelpers import write_run

    run = write_run(tmp_path, n_patients=12, n_folds=2, threshold=0.4)  # a run folder as spinedx cv writes it
    ens = Ensemble.load(run)
    assert ens.folds == [0, 1] and ens.run is not None and ens.run.threshold == 0.4
    assert ens.channel_names == ens.run.channel_names and len(ens.channel_names) == 6
    np.testing.assert_allclose(ens.predict(patches), predict_patches(load_run(run), patches, bf16=False),
                               atol=1e-4, rtol=0)
    with pytest.raises(SpinedxError, match="run folder not found"):
        Ensemble.load(tmp_path / "nothing")
