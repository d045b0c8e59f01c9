"""Hand-built networks for the explanation tests: the answer to "where is the evidence?" is known."""

from __future__ import annotations

import torch
from torch import nn


def _avg_conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / (9 * cin))
    return conv


class RegionNet(nn.Module):
    """A ResNet-shaped stack (``layer1..4`` at strides 4, 8, 16, 32) whose logit sees one square only.

    The input is multiplied by a fixed 0/1 gate that is 1 on ``region`` (rows r0:r1, columns c0:c1), then
    averaged by positive convolutions (ReLU in place, like torchvision), pooled and summed: the logit is a
    weighted mean brightness of the square and nothing else. For inputs that are positive everywhere,
    every method must put its maximum in the square.
    """

    def __init__(self, region: tuple[int, int, int, int], size: int = 64, channels: int = 6) -> None:
        super().__init__()
        r0, r1, c0, c1 = region
        gate = torch.zeros(1, 1, size, size)
        gate[..., r0:r1, c0:c1] = 1.0
        self.register_buffer("gate", gate)
        self.layer1 = nn.Sequential(_avg_conv(channels, 4, 4), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(_avg_conv(4, 4, 2), nn.ReLU(inplace=True))
        self.layer3 = nn.Sequential(_avg_conv(4, 4, 2), nn.ReLU(inplace=True))
        self.layer4 = nn.Sequential(_avg_conv(4, 4, 2), nn.ReLU(inplace=True))
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer4(self.layer3(self.layer2(self.layer1(x * self.gate))))
        return self.fc(h.mean(dim=(2, 3)))  # (N, 1)


class TinyResNetLike(nn.Module):
    """Random small network with ResNet stage names (BatchNorm, in-place ReLU), returning ``(N,)`` logits."""

    def __init__(self, channels: int = 6, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)

        def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.layer1 = stage(channels, 8, 4)
        self.layer2 = stage(8, 8, 2)
        self.layer3 = stage(8, 12, 2)
        self.layer4 = stage(12, 16, 2)
        self.fc = nn.Linear(16, 1)
        # running statistics that differ from the batch's, so a forgotten eval() would show
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(h.mean(dim=(2, 3))).squeeze(1)
