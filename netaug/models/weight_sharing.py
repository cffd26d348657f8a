"""Share-then-unshare: structurally identical consecutive blocks start from one shared weight.

For each group of L identical consecutive residual blocks (same input, output, middle and SE width,
kernel, stride and activation: e.g. blocks 2..n of an MBV2 stage) every conv weight is reparametrised as

    w_i = w0 / sqrt(L) + w~_i

with `torch.nn.utils.parametrize`: the conv's own weight tensor becomes w~_i, and w0 is one
Parameter shared by the group. While shared, the w~_i stay 0 and frozen, so only w0 trains (its
gradient is (1/sqrt(L)) * sum_i g_i); `release` lets the w~_i train too. Dynamic layers slice the
materialised weight, so this composes with augmented models. BatchNorms and SE layers stay per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from netaug.models.network import InvertedResidualNet
from netaug.models.spec import NetSpec

SHARED_CONVS = ("expand", "depthwise", "project")


class SharedWeight(nn.Module):
    """Parametrization w = w0 * scale + delta, where delta is the module's own (original) weight."""

    def __init__(self, w0: nn.Parameter, scale: float) -> None:
        super().__init__()
        self.w0 = w0
        self.scale = scale

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        return self.w0 * self.scale + delta


def identical_block_groups(spec: NetSpec) -> list[list[int]]:
    """Runs of >= 2 consecutive residual blocks with the same structure."""
    groups: list[list[int]] = []
    for i, b in enumerate(spec.blocks):
        prev = spec.blocks[i - 1] if i else None
        same = prev is not None and b.residual and prev.residual and b == prev
        if same:
            groups[-1].append(i)
        elif b.residual:
            groups.append([i])
    return [g for g in groups if len(g) >= 2]


def share_weights(model: InvertedResidualNet) -> list[list[nn.Module]]:
    """Reparametrise the convs of identical block groups; returns the groups of member convs.

    w0 starts at sqrt(L) times the first member's weight, so every w_i starts as that weight.
    """
    conv_groups = []
    for group in identical_block_groups(model.spec):
        for name in SHARED_CONVS:
            members = [getattr(model.blocks[i], name) for i in group]
            if any(m is None for m in members):
                continue
            conv_groups.append(share_layers([m.conv for m in members]))
    return conv_groups


def share_layers(layers: list[nn.Module]) -> list[nn.Module]:
    """Reparametrise the weights of `layers` (same shape) as w_i = w0 / sqrt(L) + w~_i, w~_i = 0 and frozen,
    w0 = sqrt(L) x the first layer's weight (so every w_i starts as it)."""
    scale = 1.0 / math.sqrt(len(layers))
    w0 = nn.Parameter(layers[0].weight.detach().clone() / scale)
    for layer in layers:
        with torch.no_grad():
            layer.weight.zero_()
        layer.weight.requires_grad_(False)
        parametrize.register_parametrization(layer, "weight", SharedWeight(w0, scale))
    return layers


def deltas(model: nn.Module) -> list[nn.Parameter]:
    """The per-block w~_i of every shared conv."""
    return [m.parametrizations.weight.original for m in model.modules()
            if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0], SharedWeight)]


def release(model: nn.Module) -> None:
    """End the shared phase: the w~_i train from now on."""
    for delta in deltas(model):
        delta.requires_grad_(True)


def is_shared(model: nn.Module) -> bool:
    """True while some w~_i are frozen (the shared phase)."""
    return any(not d.requires_grad for d in deltas(model))


def materialize(model: InvertedResidualNet) -> InvertedResidualNet:
    """A plain copy of `model` (same class and spec, no parametrizations) holding its materialised weights."""
    plain = type(model)(model.spec).to(next(model.parameters()).device)
    plain.load_state_dict(plain_state_dict(model))
    return plain.train(model.training)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of the same network without parametrizations: materialised w_i under plain keys."""
    out = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        parametrized = parametrize.is_parametrized(module)
        for name, param in module.named_parameters(recurse=False):
            out[dot + name] = param.detach()
        if parametrized:
            for name in module.parametrizations:
                out[dot + name] = getattr(module, name).detach()
        for name, buf in module.named_buffers(recurse=False):
            out[dot + name] = buf
    return {k: v for k, v in out.items() if ".parametrizations." not in k}
