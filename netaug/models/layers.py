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
import torch.nn.functional as F

from netaug.models.spec import ACTIVATION_NAMES, BlockSpec


class Ops(NamedTuple):
    """Layer constructors: conv(in, out, k, stride), dwconv(ch, k, stride), bn(ch), linear(in, out) and
    pw_bias(in, out), a 1x1 conv with bias (squeeze-and-excitation)."""

    conv: Callable[[int, int, int, int], nn.Module]
    dwconv: Callable[[int, int, int], nn.Module]
    bn: Callable[[int], nn.Module]
    linear: Callable[[int, int], nn.Module]
    pw_bias: Callable[[int, int], nn.Module]


STATIC_OPS = Ops(
    conv=lambda i, o, k, s: nn.Conv2d(i, o, k, s, k // 2, bias=False),
    dwconv=lambda c, k, s: nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False),
    bn=nn.BatchNorm2d,
    linear=nn.Linear,
    pw_bias=lambda i, o: nn.Conv2d(i, o, 1, bias=True),
)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "h_swish": lambda: nn.Hardswish(inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
}
assert set(_ACTIVATIONS) == set(ACTIVATION_NAMES)


def activation(name: str | None) -> nn.Module:
    """The activation layer called `name` (one of ACTIVATION_NAMES); None is the identity."""
    if name is None:
        return nn.Identity()
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]()


class ConvBN(nn.Module):
    """conv -> BatchNorm -> activation (`act` a name of ACTIVATION_NAMES, or None for none)."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: str | None) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(expand(relu(reduce(mean(x))))), MobileNetV3's SE: 1x1 convs with bias."""

    def __init__(self, channels: int, squeeze: int, ops: Ops) -> None:
        super().__init__()
        self.reduce = ops.pw_bias(channels, squeeze)
        self.act = nn.ReLU(inplace=True)
        self.expand = ops.pw_bias(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * F.hardsigmoid(scale)


class InvertedBlock(nn.Module):
    """[1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (linear), with an identity shortcut if residual."""

    def __init__(self, spec: BlockSpec, ops: Ops) -> None:
        super().__init__()
        mid = spec.mid_ch if spec.mid_ch is not None else spec.in_ch
        self.residual = spec.residual
        self.expand = ConvBN(ops.conv(spec.in_ch, mid, 1, 1), ops.bn(mid), spec.act) if spec.mid_ch else None
        self.depthwise = ConvBN(ops.dwconv(mid, spec.kernel, spec.stride), ops.bn(mid), spec.act)
        self.se = SqueezeExcite(mid, spec.se_ch, ops) if spec.se_ch else None
        self.project = ConvBN(ops.conv(mid, spec.out_ch, 1, 1), ops.bn(spec.out_ch), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y
