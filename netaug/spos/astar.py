"""The one a* search: a supernet's scorer -> path evaluator -> NetAug's path space -> search -> MACs.

The sweep (per trial, on its (r, s) grid), the search stage (its candidates scored on Ray actors) and the study
runner all call `find_astar`; they differ only in the scorer they pass and what they do with the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from netaug.augment import AugmentedModel, SubnetConfig
from netaug.config import NetAugConfig
from netaug.models import profile_macs
from netaug.spos.search import Candidate, PathEvaluator, Score, evolution_search, uniform_search
from netaug.spos.space import PathSpace


@dataclass
class Astar:
    """A search's outcome: the chosen path, every path evaluated, and the base's MACs."""

    chosen: Candidate
    table: list[Candidate]
    base_macs: int
    supernet: AugmentedModel

    @property
    def named(self) -> dict[str, float]:
        """a* as {group name: multiplier}."""
        return self.supernet.named(self.chosen.path)


def find_astar(supernet: AugmentedModel, score: Callable[[Sequence[SubnetConfig]], list[Score]],
               input_shape: tuple[int, int, int], netaug: NetAugConfig, num_paths: int, seed: int,
               macs_limit: float | None = None, r: float | None = None, s: int | None = None,
               method: str = "uniform", evolution: dict | None = None,
               known: dict[SubnetConfig, Score] | None = None) -> Astar:
    """Search the path space of NetAug's grids at (r, s) (default netaug.r, netaug.s) of `supernet` for a*.

    `score` gives (val top-1, val loss) of a batch of paths (inherited weights, BN recalibrated); `known`
    evaluations of the same supernet are reused. `macs_limit` is a multiple of the base's MACs (None: no
    limit). `method` "uniform" samples `num_paths` paths (at most the space's size); "evolution" runs
    `evolution_search` with the keyword arguments in `evolution` (population, generations, parents,
    mutation_prob). A limit no path fits raises ValueError."""
    evaluator = PathEvaluator(supernet, input_shape, score)
    evaluator.cache.update(known or {})
    base_macs = profile_macs(supernet.export("min"), input_shape)[0]
    limit = macs_limit * base_macs if macs_limit is not None else math.inf
    space = PathSpace.from_netaug(supernet, netaug, r, s)
    generator = torch.Generator().manual_seed(seed)
    if method == "uniform":
        chosen, table = uniform_search(evaluator, space, min(num_paths, space.size), limit, generator)
    elif method == "evolution":
        chosen, table = evolution_search(evaluator, space, limit, generator, **(evolution or {}))
    else:
        raise ValueError(f"unknown search method {method!r} (uniform, evolution)")
    return Astar(chosen, table, base_macs, supernet)
