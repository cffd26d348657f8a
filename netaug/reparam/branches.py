"""A convolution followed by BatchNorm, trained with parallel branches that fold back into it exactly.

`RepConv` keeps the model's own conv and BN as its main branch and adds, beside them:
- `k` extra conv + BN branches of the conv's own kernel (MobileOne's over-parameterization factor);
- a 1x1 conv + BN branch beside a k x k conv (k > 1; RepVGG, Diverse Branch Block);
- an identity BN where the conv keeps the channel count at stride 1 (RepVGG, MobileOne).

Each branch's BN normalises its own output with its own statistics while training. In eval mode every
branch is linear, so their sum is one conv with a bias: `fused()` gives that kernel and bias (each BN
folded into its conv, the 1x1 kernel padded to the centre of k x k, the identity as a centred delta).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv (weight, bias) followed by `bn` in eval mode, in float64."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / std
    conv_bias = bias.double() if bias is not None else torch.zeros_like(scale)
    kernel = weight.double() * scale.reshape(-1, 1, 1, 1)
    return kernel, bn.bias.double() + (conv_bias - bn.running_mean.double()) * scale


def identity_kernel(channels: int, in_per_group: int, kernel_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """The kernel of a conv (same in and out channels) that passes its input through: a centred delta from each
    output channel to the same channel of its group."""
    kernel = torch.zeros(channels, in_per_group, *kernel_size, dtype=torch.float64, device=like.device)
    index = torch.arange(channels)
    kernel[index, index % in_per_group, kernel_size[0] // 2, kernel_size[1] // 2] = 1.0
    return kernel


def centred(kernel: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """A smaller (odd) kernel zero-padded to `kernel_size`, its centre on the centre."""
    dh, dw = kernel_size[0] - kernel.shape[2], kernel_size[1] - kernel.shape[3]
    return nn.functional.pad(kernel, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def centre_aligned(conv: nn.Conv2d) -> bool:
    """Whether a 1x1 or identity branch sees what the conv's kernel centre sees: odd kernel, padding k // 2,
    no dilation, zero padding."""
    kh, kw = conv.kernel_size
    return (kh % 2 == 1 and kw % 2 == 1 and tuple(conv.padding) == (kh // 2, kw // 2)
            and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros")


class RepConv(nn.Module):
    """conv -> BN of a model, with extra parallel branches while training (see the module's docstring)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, k: int, conv1x1: bool, identity: bool) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn  # the model's own modules: the main branch, and where the fold goes
        c = conv

        def branch(kernel_size, padding) -> nn.Sequential:
            layer = nn.Conv2d(c.in_channels, c.out_channels, kernel_size, c.stride, padding, c.dilation, c.groups,
                              bias=False, padding_mode=c.padding_mode)
            norm = nn.BatchNorm2d(c.out_channels, bn.eps, bn.momentum)
            return nn.Sequential(layer, norm).to(device=c.weight.device, dtype=c.weight.dtype)

        self.extra = nn.ModuleList(branch(c.kernel_size, c.padding) for _ in range(k))
        aligned = centre_aligned(c)
        wide = tuple(c.kernel_size) != (1, 1)
        self.scale = branch(1, 0) if conv1x1 and wide and aligned else None
        keeps = c.in_channels == c.out_channels and tuple(c.stride) == (1, 1) and aligned
        self.identity = (nn.BatchNorm2d(c.out_channels, bn.eps, bn.momentum).to(c.weight.device, c.weight.dtype)
                         if identity and keeps else None)

    def branch_names(self) -> list[str]:
        """The branches beside the main one: 'kxk' per extra conv, '1x1', 'identity'."""
        return (["kxk"] * len(self.extra) + (["1x1"] if self.scale is not None else [])
                + (["identity"] if self.identity is not None else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        for b in self.extra:
            out = out + b(x)
        if self.scale is not None:
            out = out + self.scale(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return out

    @torch.no_grad()
    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel, bias) of the one conv every branch sums to in eval mode, in float64."""
        size = tuple(self.conv.kernel_size)
        kernel, bias = fold_bn(self.conv.weight, self.conv.bias, self.bn)
        for conv, bn in self.extra:
            kb = fold_bn(conv.weight, None, bn)
            kernel, bias = kernel + kb[0], bias + kb[1]
        if self.scale is not None:
            k1, b1 = fold_bn(self.scale[0].weight, None, self.scale[1])
            kernel, bias = kernel + centred(k1, size), bias + b1
        if self.identity is not None:
            delta = identity_kernel(self.conv.out_channels, self.conv.in_channels // self.conv.groups, size,
                                    self.conv.weight)
            ki, bi = fold_bn(delta, None, self.identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def folded(self) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
        """Copies of the model's own conv and BN that compute, in eval mode, what every branch sums to: the fused
        kernel in the conv (its bias, if any, zero) and a BN that adds the fused bias and otherwise passes its
        input through (weight 1, running mean 0, running var 1 - eps)."""
        kernel, bias = self.fused()
        conv, bn = copy.deepcopy(self.conv), copy.deepcopy(self.bn)
        conv.weight.copy_(kernel.to(conv.weight.dtype))
        if conv.bias is not None:
            conv.bias.zero_()
        bn.weight.fill_(1.0)
        bn.bias.copy_(bias.to(bn.bias.dtype))
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        return conv, bn
