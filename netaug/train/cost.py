"""What training costs, in the units that equal-compute comparisons use.

FLOPs: every pass a step runs (the base, each sampled augmented model, a teacher) is logged by the
trainer as (sub-network, images, backward?). Its forward FLOPs come from `torch.utils.flop_counter`
on one image of that sub-network (convolutions and matrix products, 2 FLOPs per MAC), cached per
sub-network, times the images. A forward + backward pass counts 3 forward passes (the backward
computes the input's and the weights' gradients, each as costly as the forward: the usual
convention), a forward-only pass (a `max_fwd` teacher) 1.

Seconds: the trainer's own clock around its training steps (evaluation excluded).

Plans: a recipe's epoch costs `ratio` plain epochs in its width-augmented phase and another in
its min_w phase (NetAug's last epochs); `affordable_epochs` is the longest schedule whose cost
fits a budget given in plain epochs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

BACKWARD_FACTOR = 3  # forward + backward = 3 forwards (input and weight gradients each cost one)


class FlopCounter:
    """Forward FLOPs per image of sub-networks of one model (a plain one, or an augmented one whose
    `set_active(config)` picks the sub-network), cached by config."""

    def __init__(self, model: torch.nn.Module, input_shape: tuple[int, int, int]) -> None:
        self.model = model
        self.shape = input_shape
        self.cache: dict[str, int] = {}

    def forward_flops(self, config=None) -> int:
        """FLOPs of one forward pass of one image through sub-network `config` (None: the model as it is)."""
        key = json.dumps(config)
        if key not in self.cache:
            self.cache[key] = self._count(config)
        return self.cache[key]

    def _count(self, config) -> int:
        model = self.model
        was_training, previous = model.training, getattr(model, "active", None)
        if config is not None:
            model.set_active(config)
        param = next(model.parameters())
        x = torch.zeros(1, *self.shape, device=param.device, dtype=param.dtype)
        model.eval()  # no BatchNorm statistics move; convolutions and products cost the same as in training
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
        finally:
            model.train(was_training)
            if config is not None and previous is not None:
                model.set_active(previous)
        return int(counter.get_total_flops())

    def passes_flops(self, passes: list[tuple[object, int, bool]]) -> int:
        """Training FLOPs of logged passes: (config, images, backward?) each."""
        return sum(self.forward_flops(config) * images * (BACKWARD_FACTOR if backward else 1)
                   for config, images, backward in passes)


@dataclass(frozen=True)
class PhaseCost:
    """One recipe's cost per epoch, in plain (baseline) epochs, in each phase of its schedule."""

    width: float  # width-augmented epochs (and every epoch of a recipe without phases)
    min_w: float  # NetAug's min_w epochs (base widths, random expands)

    def schedule(self, epochs: int, min_w_epochs: int) -> float:
        """Plain epochs that `epochs` epochs of this recipe cost, `min_w_epochs` of them in min_w."""
        return (epochs - min_w_epochs) * self.width + min_w_epochs * self.min_w


def affordable_epochs(budget: float, cost: PhaseCost, min_w_count: Callable[[int], int], limit: int = 100000) -> int:
    """The most epochs (at least 1) whose schedule costs at most `budget` plain epochs; `min_w_count(E)`
    is how many of E epochs run in min_w (it depends on E: the phase is a fraction of the schedule)."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    cheapest = min(cost.width, cost.min_w)
    upper = min(limit, max(1, math.floor(budget / cheapest + 1e-9)))  # no schedule past this fits
    best = 1
    for epochs in range(1, upper + 1):
        if cost.schedule(epochs, min_w_count(epochs)) <= budget * (1 + 1e-9):
            best = epochs
    return best
