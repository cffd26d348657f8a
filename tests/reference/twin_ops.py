"""Dynamic layers: each holds a max-size weight and computes with its leading channels.

The input width is read from the tensor; the output width of convs is `active_out`, set by the
network's `set_active`. Constructor signatures match `netaug.models.layers.Ops`, so a dynamic
network is the same module tree as a static one, with the same state_dict keys.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from netaug.augment.layers import DynamicBatchNorm2d  # noqa: F401  (the BatchNorm the reference builds with)


class DynamicConv2d(nn.Conv2d):
    """Dense conv computing with weight[:active_out, :in_width] (and bias[:active_out])."""

    def __init__(self, max_in: int, max_out: int, kernel: int, stride: int, bias: bool = False) -> None:
        super().__init__(max_in, max_out, kernel, stride, kernel // 2, bias=bias)
        self.active_out = max_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if self.active_out != weight.shape[0] or x.shape[1] != weight.shape[1]:
            weight = weight[: self.active_out, : x.shape[1]]
            bias = bias[: self.active_out] if bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding)


def dynamic_pw_bias(max_in: int, max_out: int) -> DynamicConv2d:
    """A dynamic 1x1 conv with bias (squeeze-and-excitation)."""
    return DynamicConv2d(max_in, max_out, 1, 1, bias=True)


class DynamicDepthwiseConv2d(nn.Conv2d):
    """Depthwise conv over the input's channels, using weight[:in_width]."""

    def __init__(self, max_ch: int, kernel: int, stride: int) -> None:
        super().__init__(max_ch, max_ch, kernel, stride, kernel // 2, groups=max_ch, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight = self.weight if c == self.weight.shape[0] else self.weight[:c]
        return F.conv2d(x, weight, None, self.stride, self.padding, groups=c)


class DynamicLinear(nn.Linear):
    """Linear layer over the input's features with weight[:active_out, :in_width]; the classifier keeps
    every output (active_out stays out_features), MobileNetV3's head layer narrows with its sub-network."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__(max_in, out_features)
        self.active_out = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, o = x.shape[1], self.active_out
        if f == self.weight.shape[1] and o == self.weight.shape[0]:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight[:o, :f], self.bias[:o])
