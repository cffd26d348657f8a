"""Inverted-residual classifiers built from a `NetSpec`: MobileNetV2 (and -Tiny), ProxylessNAS-Mobile."""

from __future__ import annotations

import torch
import torch.nn as nn

from netaug.models.layers import STATIC_OPS, ConvBN, InvertedBlock, Ops
from netaug.models.spec import NetSpec


class InvertedResidualNet(nn.Module):
    """stem -> inverted blocks -> 1x1 feature conv -> pool -> dropout -> linear."""

    def __init__(self, spec: NetSpec, ops: Ops = STATIC_OPS) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBN(ops.conv(spec.in_channels, spec.stem_ch, 3, spec.stem_stride), ops.bn(spec.stem_ch), True)
        self.blocks = nn.ModuleList(InvertedBlock(b, ops) for b in spec.blocks)
        last = spec.blocks[-1].out_ch
        self.feature_mix = ConvBN(ops.conv(last, spec.feature_ch, 1, 1), ops.bn(spec.feature_ch), True)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.classifier = ops.linear(spec.feature_ch, spec.num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding: globally pooled output of the feature conv, (N, feature_ch)."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.feature_mix(x).mean(dim=(2, 3))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate embedding, logits) from one forward pass."""
        features = self.forward_features(x)
        return features, self.classifier(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]


class MobileNetV2(InvertedResidualNet):
    """MobileNetV2 (Sandler et al. 2018); `mobilenetv2_tiny` is this class at width 0.35, head 448."""


class ProxylessNASMobile(InvertedResidualNet):
    """ProxylessNAS-Mobile (Cai et al. 2019) with its searched kernel sizes and expand ratios."""


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan-out), BN gamma 1 / beta 0, small normal linear weights."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
