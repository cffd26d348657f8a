"""SPOS search with inherited weights: uniform sampling and evolution, under a MACs limit.

Every evaluated path gets BN recalibration on fixed training batches, then val top-1 and loss.
Evaluations are cached by path, so repeated or overlapping searches reuse them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from netaug.augment import AugmentedModel, SubnetConfig, recalibrate_bn
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


Score = tuple[float, float]  # (val top-1, val loss)


@dataclass
class LocalScorer:
    """Scores paths in this process: BN recalibration on fixed batches, then `evaluate` on the active path."""

    supernet: AugmentedModel
    calibration: list[torch.Tensor]
    evaluate: Callable[[AugmentedModel], Score]  # -> (top1, loss) of the active network
    recalibrations: int = 0

    def __call__(self, paths: Sequence[SubnetConfig]) -> list[Score]:
        scores = []
        for path in paths:
            self.supernet.set_active(path)
            recalibrate_bn(self.supernet, self.calibration)
            self.recalibrations += 1
            scores.append(self.evaluate(self.supernet))
        self.supernet.set_active("min")
        return scores


@dataclass
class PathEvaluator:
    """Measures paths of a supernet: MACs/params here, accuracy through `score` (local or Ray workers), cached."""

    supernet: AugmentedModel
    input_shape: tuple[int, int, int]
    score: Callable[[Sequence[SubnetConfig]], list[Score]]
    cache: dict[SubnetConfig, Score] = field(default_factory=dict)
    costs: dict[SubnetConfig, tuple[int, int]] = field(default_factory=dict)

    def cost(self, path: SubnetConfig) -> tuple[int, int]:
        """(MACs, params) of the path's static network (cached)."""
        if path not in self.costs:
            self.supernet.set_active(path)
            self.costs[path] = profile_macs(self.supernet, self.input_shape)
            self.supernet.set_active("min")
        return self.costs[path]

    def candidates(self, paths: Sequence[SubnetConfig], generation: int = 0) -> list[Candidate]:
        """Evaluate the uncached paths in one batch (parallel when `score` is), then build the rows."""
        todo = list(dict.fromkeys(p for p in paths if p not in self.cache))
        if todo:
            self.cache.update(zip(todo, self.score(todo)))
        return [Candidate(p, *self.cost(p), *self.cache[p], generation) for p in paths]


def _best(candidates: list[Candidate]) -> Candidate:
    return max(candidates, key=lambda c: (c.val_top1, -c.val_loss, -c.macs))


def uniform_search(evaluator: PathEvaluator, space: PathSpace, num_paths: int, macs_limit: float,
                   generator: torch.Generator, max_tries: int = 100) -> tuple[Candidate, list[Candidate]]:
    """Sample `num_paths` distinct paths under `macs_limit` uniformly; evaluate each; return the best and all."""
    paths: dict[SubnetConfig, None] = {}
    tries = 0
    while len(paths) < num_paths and tries < max_tries * num_paths:
        tries += 1
        path = space.sample(generator)
        if path not in paths and evaluator.cost(path)[0] <= macs_limit:
            paths[path] = None
    if not paths:
        raise ValueError(f"no path of the space fits the MACs limit {macs_limit:.0f}")
    table = evaluator.candidates(list(paths))
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

    table: dict[SubnetConfig, Candidate] = {}  # first evaluation of each path, in order

    def evaluate(paths: list[SubnetConfig], gen: int) -> list[Candidate]:
        out = evaluator.candidates(paths, gen)
        for c in out:
            table.setdefault(c.path, c)
        return out

    first = [draw(lambda: space.sample(generator)) for _ in range(population)]
    current = evaluate([p for p in first if p is not None], 0)
    if not current:
        raise ValueError(f"no path of the space fits the MACs limit {macs_limit:.0f}")
    for gen in range(1, generations):
        top = sorted(current, key=lambda c: (c.val_top1, -c.val_loss), reverse=True)[:parents]
        children: list[SubnetConfig] = []
        for i in range(population - len(top)):
            if i % 2 == 0:
                parent = top[int(torch.randint(len(top), (1,), generator=generator))]
                path = draw(lambda p=parent: space.mutate(p.path, mutation_prob, generator))
            else:
                a, b = (top[int(torch.randint(len(top), (1,), generator=generator))] for _ in range(2))
                path = draw(lambda a=a, b=b: space.crossover(a.path, b.path, generator))
            if path is not None:
                children.append(path)
        current = top + evaluate(children, gen)
    rows = list(table.values())
    return _best(rows), rows
