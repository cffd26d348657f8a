"""SPOS path space over a supernet: per-width-group width multipliers and per-block expand multipliers.

A path is the augmented model's sub-network config (`SubnetConfig`): hashable, JSON-serialisable,
and with every multiplier >= 1 it always contains the base model as its prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from netaug.augment import AugmentedModel, SubnetConfig, netaug_grids
from netaug.config import NetAugConfig


@dataclass(frozen=True)
class PathSpace:
    """The grid of paths of one (r, s): width choices per width group, expand choices per block."""

    width_choices: tuple[tuple[float, ...], ...]
    expand_choices: tuple[tuple[float, ...], ...]

    @staticmethod
    def from_grids(supernet: AugmentedModel, widths: Sequence[float], expands: Sequence[float]) -> PathSpace:
        """Width choices `widths` for every width group and expand choices `expands` for every block
        (those at or below the supernet's largest; 1 for blocks without a middle width)."""
        widths, expands = tuple(widths), tuple(expands)
        if widths[-1] > supernet.width_mults[-1]:
            raise ValueError(f"r={widths[-1]} exceeds the supernet's largest width multiplier "
                             f"{supernet.width_mults[-1]}")
        per_block = tuple(tuple(m for m in expands if m <= supernet.expand_choices(i)[-1]) or (1.0,)
                          for i in range(supernet.num_expand_groups))
        return PathSpace((widths,) * supernet.num_width_groups, per_block)

    @staticmethod
    def from_netaug(supernet: AugmentedModel, netaug: NetAugConfig, r: float | None = None,
                    s: int | None = None) -> PathSpace:
        """The path space of NetAug's grids (`netaug_grids`), at (r, s) if given instead of netaug.r/s."""
        cfg = dataclasses.replace(netaug, r=netaug.r if r is None else r, s=netaug.s if s is None else s)
        return PathSpace.from_grids(supernet, *netaug_grids(cfg))

    @property
    def size(self) -> int:
        n = 1
        for choices in self.width_choices + self.expand_choices:
            n *= len(choices)
        return n

    def sample(self, generator: torch.Generator) -> SubnetConfig:
        """A path drawn uniformly: each width group and each block independently."""
        def pick(choices: tuple[float, ...]) -> float:
            return choices[int(torch.randint(len(choices), (1,), generator=generator))]

        return tuple(pick(c) for c in self.width_choices), tuple(pick(c) for c in self.expand_choices)

    def mutate(self, path: SubnetConfig, prob: float, generator: torch.Generator) -> SubnetConfig:
        """Resample each choice with probability `prob`."""
        def maybe(value: float, choices: tuple[float, ...]) -> float:
            if float(torch.rand((), generator=generator)) < prob:
                return choices[int(torch.randint(len(choices), (1,), generator=generator))]
            return value

        widths, expands = path
        return (tuple(maybe(v, c) for v, c in zip(widths, self.width_choices)),
                tuple(maybe(v, c) for v, c in zip(expands, self.expand_choices)))

    @staticmethod
    def crossover(a: SubnetConfig, b: SubnetConfig, generator: torch.Generator) -> SubnetConfig:
        """Each choice taken from `a` or `b` with equal probability."""
        def mix(x: tuple[float, ...], y: tuple[float, ...]) -> tuple[float, ...]:
            coins = torch.rand(len(x), generator=generator) < 0.5
            return tuple(u if bool(c) else v for u, v, c in zip(x, y, coins))

        return mix(a[0], b[0]), mix(a[1], b[1])


def path_id(path: SubnetConfig) -> str:
    """A short stable id of a path (the same path gets the same id in every search and run)."""
    return hashlib.sha1(json.dumps(path).encode()).hexdigest()[:10]
