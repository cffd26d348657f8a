"""SPOS search with inherited weights: uniform sampling and evolution, under a MACs limit.

Every evaluated path gets BN recalibration on fixed training batches, then val top-1 and loss.
Evaluations are cached by path, so repeated or overlapping searches reuse them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from netaug.augment import AugmentedNet, SubnetConfig, recalibrate_bn
from netaug.models import profile_macs
from netaug.spos.space import PathSpace


@dataclass
class Candidate:
    """One evaluated path (a row of archs.parquet)."""

    path: SubnetConfig
    macs: int
    params: int
    val_top1: float
    val_loss: float
    generation: int = 0

    def row(self) -> dict:
        return {"arch": json.dumps(self.path), "macs": self.macs, "params": self.params,
                "val_top1": self.val_top1, "val_loss": self.val_loss, "generation": self.generation}


@dataclass
class PathEvaluator:
    """Measures paths of a supernet: MACs/params always, accuracy after BN recalibration (cached)."""

    supernet: AugmentedNet
    input_shape: tuple[int, int, int]
    calibration: list[torch.Tensor]
    evaluate: Callable[[AugmentedNet], tuple[float, float]]  # -> (top1, loss) of the active network
    cache: dict[SubnetConfig, tuple[float, float]] = field(default_factory=dict)
    costs: dict[SubnetConfig, tuple[int, int]] = field(default_factory=dict)
    recalibrations: int = 0

    def cost(self, path: SubnetConfig) -> tuple[int, int]:
        """(MACs, params) of the path's static network (cached)."""
        if path not in self.costs:
            self.supernet.set_active(path)
            self.costs[path] = profile_macs(self.supernet, self.input_shape)
        return self.costs[path]

    def accuracy(self, path: SubnetConfig) -> tuple[float, float]:
        if path not in self.cache:
            self.supernet.set_active(path)
            recalibrate_bn(self.supernet, self.calibration)
            self.recalibrations += 1
            self.cache[path] = self.evaluate(self.supernet)
        return self.cache[path]

    def candidate(self, path: SubnetConfig, generation: int = 0) -> Candidate:
        macs, params = self.cost(path)
        top1, loss = self.accuracy(path)
        return Candidate(path, macs, params, top1, loss, generation)


def _best(candidates: list[Candidate]) -> Candidate:
    return max(candidates, key=lambda c: (c.val_top1, -c.val_loss, -c.macs))


def uniform_search(evaluator: PathEvaluator, space: PathSpace, num_paths: int, macs_limit: float,
                   generator: torch.Generator, max_tries: int = 100) -> tuple[Candidate, list[Candidate]]:
    """Sample `num_paths` distinct paths under `macs_limit` uniformly; evaluate each; return the best and all."""
    seen: dict[SubnetConfig, Candidate] = {}
    tries = 0
    while len(seen) < num_paths and tries < max_tries * num_paths:
        tries += 1
        path = space.sample(generator)
        if path in seen or evaluator.cost(path)[0] > macs_limit:
            continue
        seen[path] = evaluator.candidate(path)
    if not seen:
        raise ValueError(f"no path of the space fits the MACs limit {macs_limit:.0f}")
    table = list(seen.values())
    return _best(table), table


def evolution_search(evaluator: PathEvaluator, space: PathSpace, macs_limit: float, generator: torch.Generator,
                     population: int = 16, generations: int = 4, parents: int = 4, mutation_prob: float = 0.1,
                     max_tries: int = 100) -> tuple[Candidate, list[Candidate]]:
    """SPOS evolution: keep the top `parents`, refill with half mutations and half crossovers, all under the limit."""
    def valid(path: SubnetConfig) -> bool:
        return evaluator.cost(path)[0] <= macs_limit

    def draw(make: Callable[[], SubnetConfig]) -> SubnetConfig | None:
        for _ in range(max_tries):
            path = make()
            if valid(path):
                return path
        return None

    table: list[Candidate] = []
    current: list[Candidate] = []
    for _ in range(population):
        path = draw(lambda: space.sample(generator))
        if path is not None:
            current.append(evaluator.candidate(path, 0))
    if not current:
        raise ValueError(f"no path of the space fits the MACs limit {macs_limit:.0f}")
    table += current
    for gen in range(1, generations):
        top = sorted(current, key=lambda c: (c.val_top1, -c.val_loss), reverse=True)[:parents]
        children: list[Candidate] = []
        for i in range(population - len(top)):
            if i % 2 == 0:
                parent = top[int(torch.randint(len(top), (1,), generator=generator))]
                path = draw(lambda p=parent: space.mutate(p.path, mutation_prob, generator))
            else:
                a, b = (top[int(torch.randint(len(top), (1,), generator=generator))] for _ in range(2))
                path = draw(lambda a=a, b=b: space.crossover(a.path, b.path, generator))
            if path is not None:
                children.append(evaluator.candidate(path, gen))
        table += children
        current = top + children
    return _best(table), table
