"""Building blocks of inverted-residual networks, parametrised by an `Ops` set.

Static networks use `STATIC_OPS` (plain torch layers); augmented networks pass dynamic layers of
the same constructor signatures, so both share one module tree, one forward and one set of
state_dict keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn

from netaug.models.spec import BlockSpec


class Ops(NamedTuple):
    """Layer constructors: conv(in, out, k, stride), dwconv(ch, k, stride), bn(ch), linear(in, out)."""

    conv: Callable[[int, int, int, int], nn.Module]
    dwconv: Callable[[int, int, int], nn.Module]
    bn: Callable[[int], nn.Module]
    linear: Callable[[int, int], nn.Module]


STATIC_OPS = Ops(
    conv=lambda i, o, k, s: nn.Conv2d(i, o, k, s, k // 2, bias=False),
    dwconv=lambda c, k, s: nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False),
    bn=nn.BatchNorm2d,
    linear=nn.Linear,
)


class ConvBN(nn.Module):
    """conv -> BatchNorm -> optional ReLU6."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: bool) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedBlock(nn.Module):
    """[1x1 expand] -> kxk depthwise -> 1x1 project (linear), with an identity shortcut if residual."""

    def __init__(self, spec: BlockSpec, ops: Ops) -> None:
        super().__init__()
        mid = spec.mid_ch if spec.mid_ch is not None else spec.in_ch
        self.residual = spec.residual
        self.expand = ConvBN(ops.conv(spec.in_ch, mid, 1, 1), ops.bn(mid), True) if spec.mid_ch else None
        self.depthwise = ConvBN(ops.dwconv(mid, spec.kernel, spec.stride), ops.bn(mid), True)
        self.project = ConvBN(ops.conv(mid, spec.out_ch, 1, 1), ops.bn(spec.out_ch), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y
