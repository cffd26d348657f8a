"""MLPerf Tiny's keyword-spotting reference model, DS-CNN (small), as plain user code.

A (10, 4) strided conv to 64 channels, four depthwise-separable blocks (3x3 depthwise, 1x1 pointwise,
BatchNorm and ReLU after each), dropout, global pooling and one linear layer. The reference takes
49x10 MFCC maps; any (C, H, W) input works.
    python -m netaug.train --set model.module=spaces/models/dscnn.py:dscnn
"""

import torch.nn as nn


def separable(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())


class DSCNN(nn.Module):
    def __init__(self, num_classes: int = 12, in_channels: int = 1, channels: int = 64, dropout: float = 0.4) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, channels, (10, 4), (2, 2), (5, 1), bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*(separable(channels) for _ in range(4)))
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.pool(self.dropout(self.blocks(self.conv(x))))
        return self.classifier(x.view(x.size(0), -1))


def dscnn(num_classes: int = 12, in_channels: int = 1, channels: int = 64, dropout: float = 0.4) -> DSCNN:
    return DSCNN(num_classes, in_channels, channels, dropout)
