"""explain(): every method's shape and range, localisation where the answer is known, agreement with
pytorch-grad-cam, stage lookup on torchvision backbones, the ensemble mean, and an untouched model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from toynets import RegionNet, TinyResNetLike

from spinedx.explain import DEFAULT_METHOD, METHODS, explain, explain_many, gradcam, method_info
from spinedx.explain.layers import STAGE_STRIDES, stage_layer

REGION = (2, 26, 38, 62)  # rows, columns: top right, off centre so a centre prior would miss it


def _positive_batch(n: int = 2, seed: int = 0) -> np.ndarray:
    return (1.0 + 0.1 * np.random.default_rng(seed).random((n, 6, 64, 64))).astype(np.float32)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_points_into_the_only_region_the_logit_sees(method: str) -> None:
    heat = explain(RegionNet(REGION), _positive_batch(), method)
    assert heat.shape == (2, 64, 64) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    r0, r1, c0, c1 = REGION
    for h in heat:
        assert h.max() == pytest.approx(1.0, abs=1e-5)
        at_max = np.argwhere(h == h.max())
        inside = ((at_max[:, 0] >= r0) & (at_max[:, 0] < r1) & (at_max[:, 1] >= c0) & (at_max[:, 1] < c1)).mean()
        assert inside >= 0.5, (method, at_max[:3], inside)
        # the far (bottom-left) quarter of the patch holds (almost) nothing
        assert h[40:, :16].max() < 0.2, (method, h[40:, :16].max())


def test_unknown_method_and_bad_input_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown explanation method 'gradcam-layer9'; methods are gradcam-layer4"):
        explain(RegionNet(REGION), _positive_batch(), "gradcam-layer9")
    with pytest.raises(ValueError, match="N, C, H, W"):
        explain(RegionNet(REGION), np.zeros((6, 64, 64), np.float32))
    bad = _positive_batch()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        explain(RegionNet(REGION), bad)
    with pytest.raises(ValueError, match="no model"):
        explain([], _positive_batch())
    assert DEFAULT_METHOD in METHODS and method_info(DEFAULT_METHOD).name == DEFAULT_METHOD


def test_ensemble_is_the_mean_of_the_models_maps() -> None:
    x = np.random.default_rng(3).normal(size=(3, 6, 64, 64)).astype(np.float32)
    a, b = TinyResNetLike(seed=1), TinyResNetLike(seed=2)
    for method in ("gradcam-layer3", "layercam-layer2"):
        both = explain([a, b], x, method)
        np.testing.assert_allclose(both, (explain(a, x, method) + explain(b, x, method)) / 2, atol=1e-6)
    many = explain_many([a, b], x, ["gradcam-layer4", "layercam-layer3"])
    np.testing.assert_allclose(many["layercam-layer3"], explain([a, b], x, "layercam-layer3"), atol=1e-6)


def _pgc(model: nn.Module, layer_name: str, x: np.ndarray, kind: str) -> np.ndarray:
    """The same map from pytorch-grad-cam, on a copy with out-of-place ReLUs (its hooks need them)."""
    from pytorch_grad_cam import GradCAM, LayerCAM

    from spinedx.explain import MalignantLogitTarget

    clone = copy.deepcopy(model).eval()
    for m in clone.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    layer = dict(clone.named_modules())[layer_name]
    cam = (GradCAM if kind == "gradcam" else LayerCAM)(model=clone, target_layers=[layer])
    try:
        return cam(input_tensor=torch.from_numpy(x).requires_grad_(True), targets=[MalignantLogitTarget()] * len(x))
    finally:
        cam.activations_and_grads.release()


@pytest.mark.parametrize(("method", "layer_name"), [("gradcam-layer4", "layer4.2"), ("gradcam-layer3", "layer3.2"),
                                                    ("gradcam-layer2", "layer2.2"), ("layercam-layer3", "layer3.2"),
                                                    ("layercam-layer2", "layer2.2")])
def test_cams_match_pytorch_grad_cam(method: str, layer_name: str) -> None:
    model = TinyResNetLike(seed=4)
    x = np.random.default_rng(5).normal(size=(3, 6, 64, 64)).astype(np.float32)
    ours = explain(model, x, method, batch_size=2)  # two batches
    theirs = _pgc(model, layer_name, x, method_info(method).kind)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_model_left_as_it_was() -> None:
    model = TinyResNetLike(seed=6).train()
    for p in model.layer1.parameters():
        p.requires_grad_(False)  # a frozen stem must not stop the gradient
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heat = explain_many(model, np.random.default_rng(7).normal(size=(2, 6, 64, 64)).astype(np.float32),
                        list(METHODS))
    assert all(h.shape == (2, 64, 64) for h in heat.values())
    assert any(h.max() > 0 for h in heat.values())
    assert model.training  # mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # running stats untouched
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())


def test_stage_lookup_and_refusals() -> None:
    net = RegionNet(REGION)
    assert stage_layer(net, "layer3") is net.layer3[-1]
    with pytest.raises(ValueError, match="unknown stage"):
        stage_layer(net, "layer5")
    with pytest.raises(ValueError, match="neither layer4"):
        stage_layer(nn.Sequential(nn.Conv2d(6, 1, 3)), "layer4")
    with pytest.raises(ValueError, match="runs once|ran 2 times"):
        shared = nn.ReLU()
        twice = nn.Sequential(nn.Conv2d(6, 2, 3), shared, nn.Conv2d(2, 2, 3), shared, nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(2, 1))
        gradcam(twice, _positive_batch(), target_layer=shared)
    with pytest.raises(ValueError, match="not a module of the model"):
        gradcam(net, _positive_batch(), target_layer=nn.Conv2d(1, 1, 1))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "mobilenet_v3_small"])
def test_torchvision_backbones(backbone: str) -> None:
    import warnings

    from spinedx.models.net import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(backbone, pretrained="none")
    model.eval()
    x = torch.from_numpy(np.random.default_rng(8).normal(size=(1, 6, 64, 64)).astype(np.float32))
    sizes: dict[str, tuple[int, ...]] = {}
    for stage in ("layer2", "layer3", "layer4"):
        layer = stage_layer(model, stage, x)
        handle = layer.register_forward_hook(lambda _m, _i, o, s=stage: sizes.__setitem__(s, tuple(o.shape[-2:])))
        with torch.no_grad():
            model(x)
        handle.remove()
        side = 64 // STAGE_STRIDES[stage]
        assert sizes[stage] == (side, side), (backbone, stage, sizes[stage])
    if backbone.startswith("resnet"):
        assert stage_layer(model, "layer4") is model.backbone.layer4[-1]
        assert stage_layer(model, "layer3") is model.backbone.layer3[-1]
        np.testing.assert_array_equal(explain(model, x, "gradcam-layer4"), gradcam(model, x))
    heat = explain_many(model, x, list(METHODS))
    for method, h in heat.items():
        assert h.shape == (1, 64, 64) and 0.0 <= h.min() and h.max() <= 1.0, method


def test_explain_after_the_torch_engine() -> None:
    """The torch engine runs first in spinedx predict and the workstation; the models must stay explainable."""
    import warnings

    from spinedx.inference import TorchEngine
    from spinedx.models import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model("resnet18", pretrained="none")
    model.eval()
    x = np.random.default_rng(9).normal(size=(2, 6, 64, 64)).astype(np.float32)
    before = gradcam(model, x)
    TorchEngine([model]).predict(x)
    assert not any(p.is_inference() for p in model.parameters())
    np.testing.assert_allclose(explain(model, x, "gradcam-layer4"), before, atol=1e-5)
    with torch.inference_mode():  # parameters made in inference mode: explained on a copy, same maps
        model.to(memory_format=torch.contiguous_format)
    assert any(p.is_inference() for p in model.parameters())
    np.testing.assert_allclose(explain(model, x, "gradcam-layer4"), before, atol=1e-5)


def test_explanation_record_names_method_and_reference() -> None:
    from spinedx.explain import DEFAULT_METHOD, METHODS, explanation_record, method_caption

    rec = explanation_record(DEFAULT_METHOD, 3)
    info = METHODS[DEFAULT_METHOD]
    assert rec["method"] == DEFAULT_METHOD and rec["default"] is True and rec["n_models"] == 3
    assert rec["caption"] == method_caption(DEFAULT_METHOD) == f"{info.label} ({info.reference})"
    assert explanation_record("occlusion")["default"] is (DEFAULT_METHOD == "occlusion")
    with pytest.raises(ValueError, match="unknown explanation method"):
        explanation_record("saliency")


def test_ensemble_maps_side_by_side_equal_one_after_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold models' maps computed two at a time (one torch thread each) are the maps computed one model after the
    other, summed in the models' order; torch's thread count is restored afterwards, also when a model fails."""
    x = np.random.default_rng(5).normal(size=(2, 6, 64, 64)).astype(np.float32)
    models = [TinyResNetLike(seed=s) for s in (1, 2, 3)]
    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two threads whatever this machine has
    seen: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    side_by_side = explain(models, x, "layercam-layer3")
    assert seen == [1, 2]  # one torch thread per model while the maps are made, then as before
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one thread: one model after the other
    one_by_one = explain(models, x, "layercam-layer3")
    np.testing.assert_allclose(side_by_side, one_by_one, atol=1e-6)
    np.testing.assert_allclose(one_by_one, sum(explain(m, x, "layercam-layer3") for m in models) / 3, atol=1e-6)

    class Broken(TinyResNetLike):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("broken model")

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    seen.clear()
    with pytest.raises(RuntimeError, match="broken model"):
        explain([models[0], Broken(seed=4)], x, "layercam-layer3")
    assert seen == [1, 2]
    real(before)
