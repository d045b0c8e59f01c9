"""Grad-CAM: shape, range, localisation on a toy model, and agreement with a hand derivation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from spinedx.explain import channel_index, gradcam, overlay_image, panel_titles, save_overlay


class BrightnessNet(nn.Module):
    """A toy CNN whose single logit grows with local brightness (positive averaging kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU(inplace=True)  # in place on purpose: gradcam must cope
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, stride=2, bias=False)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0 / 54)
            self.conv2.weight.fill_(1.0 / 36)
            self.fc.weight.fill_(1.0)
            self.fc.bias.zero_()

    def gradcam_target_layer(self) -> nn.Module:
        return self.relu2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(h).flatten(1))  # (N, 1)


def _square_batch(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    x = rng.normal(0, 0.05, size=(3, 6, 64, 64)).astype(np.float32)
    corners = [(8, 10), (40, 30), (20, 44)]
    for n, (r, c) in enumerate(corners):
        x[n, :, r:r + 12, c:c + 12] += 3.0
    return x, corners


def test_gradcam_highlights_bright_square() -> None:
    x, corners = _square_batch(np.random.default_rng(0))
    heat = gradcam(BrightnessNet(), x)
    assert heat.shape == (3, 64, 64)
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    for n, (r, c) in enumerate(corners):
        i, j = np.unravel_index(np.argmax(heat[n]), heat[n].shape)
        assert r <= i < r + 12 and c <= j < c + 12, (n, i, j)
        assert heat[n].max() == pytest.approx(1.0, abs=1e-5)
        # the square is much hotter than the background far away from it
        inside = heat[n, r:r + 12, c:c + 12].mean()
        mask = np.ones((64, 64), bool)
        mask[max(r - 8, 0):r + 20, max(c - 8, 0):c + 20] = False
        assert inside > 3 * heat[n][mask].mean()


def _resnet_like() -> nn.Module:
    import torchvision

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.adapt = nn.Conv2d(6, 3, 1)
            self.backbone = torchvision.models.resnet18(weights=None, num_classes=1)

        def gradcam_target_layer(self) -> nn.Module:
            return self.backbone.layer4[-1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(self.adapt(x)).squeeze(1)  # (N,) logits

    torch.manual_seed(0)
    return Net().eval()


def _manual_gradcam(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM by hand (Selvaraju et al. eq. 1-2) with autograd.grad, for comparison."""
    import copy

    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    acts: list[torch.Tensor] = []
    handle = m.gradcam_target_layer().register_forward_hook(lambda _m, _i, o: acts.append(o))
    logit = m(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logit.sum(), acts[0])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * acts[0]).sum(1)).detach().numpy()
    out = []
    for c in cam:
        c = c - c.min()
        c = c / (c.max() + 1e-7)
        out.append(cv2.resize(c.astype(np.float32), (x.shape[-1], x.shape[-2])))
    return np.stack(out)


@pytest.mark.slow
def test_gradcam_matches_hand_derivation_and_leaves_model_untouched() -> None:
    model = _resnet_like()
    x = np.random.default_rng(1).normal(size=(4, 6, 64, 64)).astype(np.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inplace_before = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    heat = gradcam(model, x, batch_size=3)  # two batches
    assert heat.shape == (4, 64, 64)
    assert heat.min() >= 0 and heat.max() <= 1
    np.testing.assert_allclose(heat, _manual_gradcam(model, torch.from_numpy(x)), atol=1e-4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace_before


def test_gradcam_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        gradcam(BrightnessNet(), np.zeros((6, 64, 64), np.float32))


def _panels(img, n: int, scale: int = 3) -> list[np.ndarray]:
    """The ``n`` image panels of an overlay (64 x 64 patch pixels at ``scale``), as overlay_image lays them out."""
    a = np.asarray(img).astype(int)
    side, gap = 64 * scale, 6
    return [a[-gap - side:-gap, gap + i * (side + gap):gap + i * (side + gap) + side] for i in range(n)]


def test_overlay_png(tmp_path) -> None:
    x, _ = _square_batch(np.random.default_rng(2))
    heat = np.zeros((1, 64, 64), np.float32)
    heat[0, 20:40, 24:44] = 1.0  # hot in a square, 0 elsewhere
    assert channel_index("T1 s") == 1 and channel_index("T2 s") == 4
    img = overlay_image(x[0], heat[0], title="P001 slice 7 p=0.93")
    crops = overlay_image(x[0], None)
    assert img.mode == "RGB" and img.width > 1.9 * crops.width and img.height > crops.height  # 4 panels, a title
    p1, p2, p3, p4 = _panels(img, 4)
    for crop in (p1, p2):  # the crops alone: grey
        assert np.array_equal(crop[..., 0], crop[..., 2])
    hot = np.kron(heat[0], np.ones((3, 3))) > 0.5
    for tinted in (p3, p4):  # the heat on top: coloured where the map is hot, the crop's grey where it is 0
        assert np.abs(tinted[..., 0] - tinted[..., 2])[hot].mean() > 40
    cold = np.kron(ndimage.maximum_filter(heat[0], size=3), np.ones((3, 3))) == 0  # no heat within a pixel
    assert cold.any() and np.array_equal(p3[cold], p1[cold]) and np.array_equal(p4[cold], p2[cold])
    path = save_overlay(x[0], heat[0], tmp_path / "sub" / "o.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="heatmap shape"):
        overlay_image(x[0], np.zeros((32, 32)))


def test_overlay_says_no_positive_evidence() -> None:
    x, _ = _square_batch(np.random.default_rng(4))
    img = overlay_image(x[0], np.zeros((64, 64), np.float32))
    for i, panel in enumerate(_panels(img, 4)):
        yellow = (panel[..., 0] > 200) & (panel[..., 1] > 200) & (panel[..., 2] < 80)
        assert yellow.any() == (i >= 2), i  # the note on the heatmap panels only; the crops stay untinted


def test_overlay_names_the_method() -> None:
    assert panel_titles(True, "layercam-layer3") == ["T1W", "T2W", "T1W + LayerCAM layer3", "T2W + LayerCAM layer3"]
    assert panel_titles(True)[2] == "T1W + Grad-CAM"
    assert panel_titles(False, "layercam-layer3") == ["T1W", "T2W"]
    x, _ = _square_batch(np.random.default_rng(3))
    with pytest.raises(ValueError, match="unknown explanation method"):
        overlay_image(x[0], np.zeros((64, 64), np.float32), method="saliency")
