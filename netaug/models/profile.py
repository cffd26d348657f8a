"""MACs and parameter counts, from `torch.utils.flop_counter`: the one place the project counts them."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def profile_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(MACs, params) of one forward pass on a single (C, H, W) input, counted by FlopCounterMode.

    Counts multiply-accumulates of convolutions and matrix products (flops / 2); BatchNorm,
    activations and additions are not counted, as in the NetAug and MCUNet papers. For an
    augmented model, both figures are those of its active sub-network.
    """
    if hasattr(model, "export") and hasattr(model, "active"):  # an augmented model: its active sub-network
        model = model.export(model.active)
    elif any(parametrize.is_parametrized(m) for m in model.modules()):  # shared weights: count the plain net
        from netaug.models.weight_sharing import materialize

        model = materialize(model)
    device = next(model.parameters()).device
    probe = copy.deepcopy(model).eval()
    x = torch.zeros(1, *input_shape, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(x)
    return counter.get_total_flops() // 2, count_params(model)
