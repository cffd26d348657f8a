"""Weights that read a dead channel, found on calibration images and zeroed before int8 quantization.

A channel that is exactly 0 on every image (after its activation) gives the weights that read it no gradient,
and a folded BatchNorm on it (a reparam branch's, say) can scale them up by as much as 1/sqrt(eps). They
multiply 0 in fp32 and do no harm there. Int8 weights are quantized per output channel, though, so one such
weight sets its output channel's scale and that channel's other weights round to 0: an int8 model can lose
most of its accuracy (docs/deploy.md). Zeroing the weights that read a dead channel changes nothing wherever
the channel is dead.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn


@dataclass
class DeadInputs:
    """The dead input channels of one layer and the weights that read them."""

    layer: str
    channels: list[int]
    largest_dead: float  # the largest |weight| that reads a dead channel
    largest_live: float  # the largest |weight| that reads a live one


def input_maxima(model: nn.Module, batches: Iterable[np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """max |x| per input channel of every Conv2d and Linear of `model` (eval mode) over `batches`."""
    maxima: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: tuple, _output, name: str) -> None:
        x = inputs[0].detach()
        per_channel = x.abs().transpose(0, 1).reshape(x.shape[1], -1).amax(1) if x.dim() > 2 else \
            x.abs().amax(0)
        maxima[name] = per_channel if name not in maxima else torch.maximum(maxima[name], per_channel)

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name))
               for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                model(torch.as_tensor(x, dtype=torch.float32))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return maxima


def _reads(weight: torch.Tensor, groups: int, dead: list[int]) -> torch.Tensor:
    """Which entries of a (out, in / groups, ...) weight read one of the `dead` input channels."""
    per_group_in, per_group_out = weight.shape[1], weight.shape[0] // groups
    reads = torch.zeros(weight.shape, dtype=torch.bool)
    for c in dead:
        g = c // per_group_in
        reads[g * per_group_out:(g + 1) * per_group_out, c % per_group_in] = True
    return reads


def zero_dead_inputs(model: nn.Module, batches: Iterable[np.ndarray | torch.Tensor]) -> list[DeadInputs]:
    """Set to 0, in place, every Conv2d and Linear weight of `model` that reads a channel which is 0 on all
    `batches`; return what was found (an empty list: nothing changed)."""
    maxima = input_maxima(model, batches)
    found = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if name not in maxima or not (dead := [int(c) for c in torch.nonzero(maxima[name] == 0).flatten()]):
                continue
            groups = module.groups if isinstance(module, nn.Conv2d) else 1
            reads = _reads(module.weight, groups, dead)
            w = module.weight
            found.append(DeadInputs(name, dead, float(w[reads].abs().max()),
                                    float(w[~reads].abs().max()) if (~reads).any() else 0.0))
            w[reads] = 0.0
    return found


def without_dead_inputs(model: nn.Module, batches: Iterable[np.ndarray | torch.Tensor]
                        ) -> tuple[nn.Module, list[DeadInputs]]:
    """A copy of `model` with the weights that read a dead channel zeroed, and what was zeroed; `model` itself
    (untouched) when no channel is dead."""
    out = copy.deepcopy(model)
    found = zero_dead_inputs(out, batches)
    return (out, found) if found else (model, [])
