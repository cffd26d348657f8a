"""A small user CNN with squeeze-and-excitation, spatial attention, a biased conv and a flatten -> linear
head (no global pooling): the couplings a generic NetAug must follow, in plain PyTorch.
    python -m netaug.train --set model.module=spaces/models/se_net.py:se_net
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        gate = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class InvertedSE(nn.Module):
    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
                                       nn.Hardswish())
        self.se = SqueezeExcite(mid, 8)
        self.project = nn.Sequential(nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 12, 3, 2, 1), nn.BatchNorm2d(12), nn.ReLU6())
        self.block1 = InvertedSE(12, 36)
        self.block2 = InvertedSE(12, 48)
        self.attention = nn.Conv2d(12, 1, 3, 1, 1)
        self.down = nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16 * 4 * 4, 32)
        self.bn = nn.BatchNorm1d(32)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        x = x * torch.sigmoid(self.attention(x))
        x = F.adaptive_avg_pool2d(self.down(x), 4)
        x = F.relu(self.bn(self.fc(torch.flatten(x, 1))))
        return self.classifier(x)


def se_net(num_classes: int = 10, in_channels: int = 1) -> SENet:
    return SENet(num_classes, in_channels)
