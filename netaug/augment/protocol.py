"""What every augmented model offers: the interface the trainer, the SPOS search and a user's loop rely on."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from netaug.augment.configs import ConfigLike, SubnetConfig


@runtime_checkable
class AugmentedModel(Protocol):
    """The largest augmented model of a base: one weight-sharing network whose "min" sub-network is the base.

    A sub-network config is ((width multiplier per width group, ...), (expand multiplier per middle group, ...));
    `named` gives it as {group name: multiplier}, and every method taking a config takes that mapping too."""

    width_mults: tuple[float, ...]
    expand_mults: tuple[float, ...]
    num_width_groups: int
    num_expand_groups: int
    active: SubnetConfig
    ceiling: SubnetConfig | None

    def config(self, kind: str, generator: torch.Generator | None = None) -> SubnetConfig:
        """"min" (the base), "max", "random" or "min_w" (base widths, random expands)."""

    def set_active(self, config: ConfigLike = "min", generator: torch.Generator | None = None) -> SubnetConfig:
        """Make `config` the sub-network that forward computes; returns it resolved."""

    def set_ceiling(self, config: ConfigLike | None) -> SubnetConfig | None:
        """Make `config` (a searched a*) the largest sub-network; None lifts it."""

    def named(self, config: ConfigLike = "min") -> dict[str, float]:
        """`config` as {group name: multiplier}."""

    def expand_choices(self, group: int) -> tuple[float, ...]:
        """The expand multipliers middle group `group` may take."""

    def export(self, config: ConfigLike = "min") -> nn.Module:
        """A plain static model computing what `config` computes ("min": the base, of the base's class)."""

    def sort_channels(self, optimizer: torch.optim.Optimizer | None = None, scope: str = "all",
                      momentum: str = "follow") -> None:
        """Reorder middle channels by importance, the function of the largest model unchanged."""

    def describe(self) -> str:
        """The channel groups, who writes and who reads each."""
