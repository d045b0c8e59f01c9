"""The paper's network: shapes, six input channels, ImageNet weights from a local file only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import WeightsError
from spinedx.models import CHANNEL_NAMES, SpineNet, build_model
from spinedx.provenance import sha256_file


@pytest.fixture()
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so no real weights file can be found."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_resnet18_shapes_and_six_channels(empty_hub: Path) -> None:
    model, info = build_model("resnet18", pretrained="none")
    assert isinstance(model, SpineNet)
    assert info.source == "none" and info.sha256 is None
    assert model.mix.in_channels == 6 and model.mix.out_channels == 3 and model.mix.kernel_size == (1, 1)
    assert model.backbone.fc.out_features == 1 and model.backbone.fc.in_features == 512
    assert model.channel_names == CHANNEL_NAMES == ("T1 s-1", "T1 s", "T1 s+1", "T2 s-1", "T2 s", "T2 s+1")
    out = model.eval()(torch.randn(3, 6, 64, 64))
    assert out.shape == (3, 1)
    with pytest.raises(RuntimeError):  # three-channel input is refused: the 1x1 conv expects six
        model(torch.randn(1, 3, 64, 64))
    assert model.gradcam_target_layer() is model.backbone.layer4[-1]


def test_resnet50_forward(empty_hub: Path) -> None:
    model, _ = build_model("resnet50", pretrained="none")
    assert model.backbone.fc.in_features == 2048
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 6, 64, 64))
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    assert model.gradcam_target_layer() is model.backbone.layer4[2]


def test_imagenet_weights_from_local_file(tmp_path: Path, empty_hub: Path) -> None:
    torch.manual_seed(123)
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(0)
    scratch, _ = build_model("resnet50", pretrained="none")
    torch.manual_seed(0)
    model, info = build_model("resnet50", pretrained="imagenet", weights=path)
    assert info.source == "imagenet-file" and info.pretrained
    assert info.sha256 == sha256_file(path) and info.path == str(path.resolve())
    ref_w = reference.state_dict()["layer3.0.conv1.weight"]
    assert torch.equal(model.backbone.layer3[0].conv1.weight, ref_w)
    assert not torch.equal(scratch.backbone.layer3[0].conv1.weight, ref_w)
    assert model.backbone.fc.out_features == 1  # the 1000-class head is replaced after loading


def test_auto_uses_hub_cache_file(tmp_path: Path, empty_hub: Path) -> None:
    ckpt = empty_hub / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(7)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), ckpt / "resnet18-f37072fd.pth")
    model, info = build_model("resnet18", pretrained="auto")
    assert info.source == "imagenet-cache"
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)


def test_auto_without_file_falls_back_loudly(empty_hub: Path) -> None:
    with pytest.warns(UserWarning, match="from scratch"):
        _, info = build_model("resnet18", pretrained="auto")
    assert info.source == "fallback-none" and "resnet18-f37072fd.pth" in info.message


def test_missing_weights_error_names_the_path(tmp_path: Path, empty_hub: Path) -> None:
    with pytest.raises(WeightsError) as exc:
        build_model("resnet50", pretrained="imagenet")
    expected = str(empty_hub / "checkpoints" / "resnet50-11ad3fa6.pth")
    assert expected in str(exc.value) and "--pretrained none" in str(exc.value)
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        build_model("resnet50", pretrained="imagenet", weights=missing)


def test_wrong_state_dict_is_refused(tmp_path: Path, empty_hub: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="not a torchvision resnet50"):
        build_model("resnet50", pretrained="imagenet", weights=path)


def test_unknown_backbone() -> None:
    with pytest.raises(WeightsError, match="unknown backbone"):
        build_model("resnet5000", pretrained="none")


def test_cli_missing_weights_exits_2(tmp_path: Path, empty_hub: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "patches.npz", x=np.zeros((2, 6, 32, 32), np.float32), patient_id=np.array(["a", "b"]),
             slice_index=np.array([0, 0]), label=np.array([0, 1]))
    res = CliRunner().invoke(app, ["cv", str(tmp_path), "--out", str(tmp_path / "run"), "--pretrained", "imagenet",
                                   "--backbone", "resnet18", "--quiet"])
    assert res.exit_code == 2
    assert "resnet18-f37072fd.pth" in res.output and "Traceback" not in res.output
    assert "error:" in res.output


def test_dropout_before_the_final_layer_keeps_the_saved_keys_and_inference() -> None:
    """The paper's dropout (rate our assumption): in training only, and fold models keep their state-dict keys."""
    torch.manual_seed(0)
    plain, _ = build_model("resnet18", pretrained="none", dropout=0.0)
    torch.manual_seed(0)
    drop, _ = build_model("resnet18", pretrained="none", dropout=0.5)
    assert type(drop.backbone.fc) is torch.nn.Linear and drop.head_dropout == 0.5  # a plain Linear: traced as one
    assert list(plain.state_dict()) == list(drop.state_dict())  # same keys: old fold models load
    for a, b in zip(plain.state_dict().values(), drop.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # same initial weights for the same seed
    x = torch.randn(4, 6, 32, 32)
    plain.eval()
    drop.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), drop(x))  # inference unchanged
    # training mode: the head's input is dropped (the features are the same: BatchNorm in train mode both)
    feats = torch.relu(torch.randn(8, 512)) + 0.1
    head = drop.backbone.fc
    head.train()
    torch.manual_seed(1)
    out = head(feats)
    mask_free = torch.nn.functional.linear(feats, head.weight, head.bias)
    assert not torch.allclose(out, mask_free)
    head.eval()
    assert torch.equal(head(feats), mask_free)


def test_dropout_setting_is_recorded_and_checked() -> None:
    from spinedx.errors import SpinedxError
    from spinedx.training.config import CVConfig

    cfg = CVConfig.from_profile("paper")
    assert cfg.dropout == 0.5 and CVConfig.from_profile("quick").dropout == 0.5
    assert CVConfig.from_profile("paper", dropout=0.2).dropout == 0.2
    with pytest.raises(SpinedxError, match=r"dropout must be in \[0, 1\)"):
        CVConfig.from_profile("paper", dropout=1.0)
    old = cfg.to_dict()
    del old["dropout"]  # a run written before the setting existed had no dropout
    assert CVConfig.from_record(old, "config.yaml").dropout == 0.0


def test_mobilenet_batchnorm_tracks_recent_batches(empty_hub: Path) -> None:
    """torchvision's MobileNetV3 BatchNorm momentum (0.01) left the evaluation-mode network describing the first
    epochs' weights after a fold's few hundred steps: every patch got the same probability. build_model sets 0.1."""
    assert torchvision.models.mobilenet_v3_small().features[0][1].momentum == 0.01  # the library's own value
    model, _ = build_model("mobilenet_v3_small", pretrained="none")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns)
    # after 40 training batches the running mean holds 1 - 0.9**40 = 98.5% of the batch mean (0.01 would give 33%)
    model.train()
    x = torch.randn(16, 6, 64, 64) * 3 + 5
    with torch.no_grad():
        for _ in range(40):
            model(x)
        conv_mean = model.backbone.features[0][0](model.mix(x)).mean(dim=(0, 2, 3))
    first = model.backbone.features[0][1]
    assert torch.allclose(first.running_mean, conv_mean * (1 - 0.9 ** 40), rtol=1e-3, atol=1e-4)
    assert build_model("resnet18", pretrained="none")[0].backbone.bn1.momentum == 0.1  # unchanged for ResNets
