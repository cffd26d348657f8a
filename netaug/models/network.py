"""Inverted-residual classifiers built from a `NetSpec`: MobileNetV2 (and -Tiny), MobileNetV3,
ProxylessNAS-Mobile, MCUNet, and a user's own spec file."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn

from netaug.models.layers import STATIC_OPS, ConvBN, InvertedBlock, Ops, activation
from netaug.models.spec import NetSpec


class InvertedResidualNet(nn.Module):
    """stem -> inverted blocks -> 1x1 feature conv -> pool -> [linear + act] -> dropout -> linear."""

    def __init__(self, spec: NetSpec, ops: Ops = STATIC_OPS) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBN(ops.conv(spec.in_channels, spec.stem_ch, 3, spec.stem_stride), ops.bn(spec.stem_ch),
                           spec.stem_act)
        self.blocks = nn.ModuleList(InvertedBlock(b, ops) for b in spec.blocks)
        last = spec.blocks[-1].out_ch
        self.feature_mix = (ConvBN(ops.conv(last, spec.feature_ch, 1, 1), ops.bn(spec.feature_ch), spec.head_act)
                            if spec.feature_ch else None)
        self.head = (nn.Sequential(ops.linear(spec.feature_ch or last, spec.head_ch), activation(spec.head_act))
                     if spec.head_ch else None)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.classifier = ops.linear(spec.embedding_ch, spec.num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding: globally pooled output of the feature conv (or of the last block
        when there is none), (N, embedding_ch)."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        if self.feature_mix is not None:
            x = self.feature_mix(x)
        x = x.mean(dim=(2, 3))
        return self.head(x) if self.head is not None else x

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate embedding, logits) from one forward pass."""
        features = self.forward_features(x)
        return features, self.classifier(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def spec_from_layers(self) -> NetSpec:
        """This network's spec as its layers now are (after an augmented model's export put wider layers in)."""
        s = self.spec
        blocks, in_ch = [], self.stem.conv.out_channels
        for block, b in zip(self.blocks, s.blocks):
            out = block.project.conv.out_channels
            mid = block.expand.conv.out_channels if block.expand is not None else None
            se = block.se.reduce.out_channels if block.se is not None else None
            blocks.append(dataclasses.replace(b, in_ch=in_ch, out_ch=out, mid_ch=mid, se_ch=se))
            in_ch = out
        return dataclasses.replace(
            s, stem_ch=self.stem.conv.out_channels, blocks=tuple(blocks),
            feature_ch=self.feature_mix.conv.out_channels if self.feature_mix is not None else 0,
            head_ch=self.head[0].out_features if self.head is not None else 0)


class MobileNetV2(InvertedResidualNet):
    """MobileNetV2 (Sandler et al. 2018); `mobilenetv2_tiny` is this class at width 0.35, head 448."""


class MobileNetV3(InvertedResidualNet):
    """MobileNetV3-Large (Howard et al. 2019) as the official NetAug code defines it: h-swish, SE
    blocks, a residual depthwise-separable first block and a post-pool 1280-wide head layer."""


class ProxylessNASMobile(InvertedResidualNet):
    """ProxylessNAS-Mobile (Cai et al. 2019) with its searched kernel sizes and expand ratios."""


class MCUNet(InvertedResidualNet):
    """MCUNet's ImageNet model as trained in the NetAug paper (Lin et al. 2020): searched kernels and
    expands, a 7x7 inverted block as head and no 1x1 feature conv."""


def init_weights(model: nn.Module, scheme: str = "fan_out") -> None:
    """Initialise convs (bias 0), BatchNorms (gamma 1, beta 0) and linear layers (bias 0).

    Linear weights are truncated-normal(0.02), as in the official code. Convs: "fan_out" (plain
    training, the official "he_fout") Kaiming-normal over fan-out; "uniform" (the official NetAug's
    init of the augmented model) PyTorch's default Kaiming-uniform (a = sqrt(5)). The post-pool
    head layer (`model.head[0]`, MobileNetV3's) is a linear layer here and a 1x1 conv in the
    official code, and is initialised as that conv (a linear weight's fans are a 1x1 conv's).
    """
    if scheme not in ("fan_out", "uniform"):
        raise ValueError(f"init scheme must be 'fan_out' or 'uniform', got {scheme!r}")
    conv_like = head_layers(model)
    for m in model.modules():
        init_module(m, scheme, as_conv=m in conv_like)


def head_layers(model: nn.Module) -> list[nn.Module]:
    """The linear layers that the official code builds as 1x1 convs: the post-pool head layer."""
    head = getattr(model, "head", None)
    return [head[0]] if isinstance(head, nn.Sequential) and len(head) and isinstance(head[0], nn.Linear) else []


def init_module(m: nn.Module, scheme: str, as_conv: bool = False) -> None:
    """`init_weights` for one module (its own parameters only); `as_conv`: a linear layer initialised as
    the 1x1 conv it stands for."""
    if isinstance(m, nn.Conv2d) or (as_conv and isinstance(m, nn.Linear)):
        if scheme == "fan_out":
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        else:
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
