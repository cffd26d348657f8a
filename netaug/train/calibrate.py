"""Calibration: what one epoch of each recipe costs, in plain-training epochs, measured here.

Every recipe's trainer (and, for NetAug, a second one in its min_w phase) steps round-robin on the
same real training batches, so the machine's noise hits all of them alike; plain training is always
among them as the reference. Per recipe and phase it records the median seconds of a step and the
mean training FLOPs of a step (netaug/train/cost.py). `netaug.aug_every: k` makes k consecutive
steps differ, so times are taken over blocks of k steps. A recipe's phase cost is then its step's
cost over the plain step's, in the chosen unit (`compute.unit`); every recipe has the same steps per
epoch (same data, same batch size), so that is also the epoch ratio.

The same seed draws the same batches and sub-networks, so FLOPs repeat exactly; seconds are what
this machine measured, and a run directory keeps its calibration (`--resume` reuses it).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from netaug.config import SpaceConfig
from netaug.train.cost import PhaseCost
from netaug.train.trainer import Trainer, min_w_start

PLAIN = "baseline"  # the reference recipe every calibration includes


@dataclass(frozen=True)
class StepFigures:
    """One recipe in one phase: median seconds and mean training FLOPs of a step."""

    seconds: float
    flops: float


@dataclass(frozen=True)
class RecipeCost:
    """One recipe's measured steps (width and min_w phase; the same twice without phases) and its epoch's
    cost in plain epochs by the unit."""

    width: StepFigures
    min_w: StepFigures
    cost: PhaseCost

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RecipeCost:
        return cls(StepFigures(**d["width"]), StepFigures(**d["min_w"]), PhaseCost(**d["cost"]))


def phased(cfg: SpaceConfig) -> bool:
    """Whether `cfg`'s recipe has NetAug's two phases (width-augmented epochs, then min_w epochs)."""
    return cfg.training.mode in Trainer.AUG_MODES and cfg.netaug.min_w_fraction > 0


def has_min_w(trainer: Trainer) -> bool:
    return trainer.augmented is not None and phased(trainer.cfg)


def _cycle(trainer: Trainer, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches as the recipe's trainer draws them, epoch after epoch (a fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield from trainer.batcher.batches(trainer.data.train, trainer.global_batch, shuffle=True,
                                           augment=trainer.cfg.data.augment, generator=gen, drop_last=True,
                                           shard=(trainer.rank, trainer.world))


def calibrate(recipes: dict[str, tuple[SpaceConfig, object]], data, unit: str, steps: int = 8, warmup: int = 2
              ) -> dict[str, RecipeCost]:
    """Cost per epoch of each recipe (name -> (its space, its largest augmented model or None)) and of plain
    training (key "baseline"), measured round-robin in this process."""
    if unit not in ("seconds", "flops", "epochs"):
        raise ValueError(f"unknown compute unit {unit!r}")
    any_cfg = next(iter(recipes.values()))[0]
    plain_cfg = _with_mode(any_cfg, PLAIN)
    # local: inside a data-parallel worker (rank 0 calibrates for its trial) these trainers step alone
    trainers: dict[tuple[str, str], Trainer] = {(PLAIN, "width"): Trainer(plain_cfg, data, local=True)}
    for name, (cfg, largest) in recipes.items():
        if name == PLAIN or cfg.training.mode == PLAIN:  # plain training is the reference itself: 1 plain epoch
            continue
        trainers[(name, "width")] = Trainer(cfg, data, largest=largest, local=True)
        if has_min_w(trainers[(name, "width")]):
            late = Trainer(cfg, data, largest=largest, local=True)
            late.epoch = max(late.epoch, math.ceil(min_w_start(cfg)))  # its aug_kind() is min_w from here on
            trainers[(name, "min_w")] = late
    block = math.lcm(*(t.cfg.netaug.aug_every for t in trainers.values()))
    batches = _cycle(trainers[(PLAIN, "width")], any_cfg.training.seed)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in trainers}
    flops: dict[tuple[str, str], list[float]] = {k: [] for k in trainers}
    warm_rounds = math.ceil(warmup / block) * block
    for i in range(warm_rounds + math.ceil(steps / block) * block):
        x, y = next(batches)
        for key, trainer in trainers.items():
            trainer.pass_log = []
            start = time.perf_counter()
            trainer.step(x, y)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            elapsed = time.perf_counter() - start
            if i >= warm_rounds:
                times[key].append(elapsed)
                flops[key].append(trainer.epoch_flops())
    figures = {key: StepFigures(_block_median(times[key], block), statistics.fmean(flops[key])) for key in trainers}
    plain = figures[(PLAIN, "width")]

    def ratio(f: StepFigures) -> float:
        if unit == "epochs":
            return 1.0
        return f.seconds / plain.seconds if unit == "seconds" else f.flops / plain.flops

    out = {}
    for name in [PLAIN, *[n for n in recipes if n != PLAIN]]:
        width = figures.get((name, "width"), plain)
        late = figures.get((name, "min_w"), width)
        out[name] = RecipeCost(width, late, PhaseCost(ratio(width), ratio(late)))
    return out


def _block_median(values: list[float], block: int) -> float:
    """Median over consecutive blocks of `block` steps of the mean step in the block."""
    sums = [sum(values[i:i + block]) / block for i in range(0, len(values) - block + 1, block)]
    return statistics.median(sums)


def _with_mode(cfg: SpaceConfig, mode: str) -> SpaceConfig:
    import dataclasses

    shared = dataclasses.replace(cfg.sharing, enabled=False) if mode == PLAIN else cfg.sharing
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, mode=mode), sharing=shared)


def plan_epochs(cfg: SpaceConfig, cost: PhaseCost, budget: float) -> int:
    """The epochs `cfg`'s recipe trains within `budget` plain epochs at `cost` (at least 1)."""
    from netaug.train.cost import affordable_epochs
    from netaug.train.trainer import min_w_epochs

    return affordable_epochs(budget, cost, (lambda e: min_w_epochs(cfg, e)) if phased(cfg) else (lambda e: 0))


def with_epochs(cfg: SpaceConfig, epochs: int) -> SpaceConfig:
    """`cfg` training for `epochs` epochs (its warm-up capped at that)."""
    import dataclasses

    t = dataclasses.replace(cfg.training, epochs=epochs, warmup_epochs=min(cfg.training.warmup_epochs, epochs))
    return dataclasses.replace(cfg, training=t)


def spent(cfg: SpaceConfig, cost: PhaseCost, epochs_done: int) -> float:
    """Plain epochs that the first `epochs_done` epochs of `cfg`'s schedule cost (its phases as it trains)."""
    from netaug.train.trainer import min_w_start

    start = min_w_start(cfg) if phased(cfg) else math.inf
    late = sum(1 for e in range(epochs_done) if e >= start)
    return cost.schedule(epochs_done, late)
