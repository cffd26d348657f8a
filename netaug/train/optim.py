"""SGD with Nesterov momentum (no weight decay on biases or BatchNorm) and a warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from netaug.config import TrainingConfig


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.SGD:
    """Weight decay on conv and linear weights only; biases and BatchNorm parameters (1-D) get none.

    Frozen parameters are included (SGD skips those without a gradient), so that weights released
    later (share-then-unshare) train with the same optimizer.
    """
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach: one multi-tensor update instead of a Python loop over parameters; bitwise the same
    # result (tests/test_train.py), 3-5 ms less per step on CPU (docs/results/step-cost.md, bench/step_overhead.py)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           foreach=True)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0,
              warmup_start: float | None = None) -> float:
    """The learning rate of `step` over the peak: a linear warm-up over `warmup_steps`, then cosine decay
    to `min_ratio`. The warm-up starts at `warmup_start` (the official CosineLRwithWarmup: one worker's
    rate over the peak, 1 / workers) and rises by equal steps; None: (step + 1) / warmup_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        if warmup_start is None:
            return (step + 1) / warmup_steps
        return warmup_start + (1 - warmup_start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, steps_per_epoch: int, workers: int = 1
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule over `cfg.epochs` epochs; `cfg.lr` is the peak (already x `workers`)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    start = 1 / workers if cfg.warmup == "official" else None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.min_lr_ratio, start))
