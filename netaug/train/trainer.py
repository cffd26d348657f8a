"""The one trainer every stage reuses: baseline or NetAug training, evaluation, export, checkpoints.

Per step, `baseline` runs one forward and one backward of the base model. `netaug` runs the base
forward/backward, then for each of `aug_samples` sampled augmented sub-networks one forward and a
backward of alpha x its loss (gradients accumulate into the shared weights), then one optimizer
step: the gradient is that of L = L(base) + alpha * sum_i L(aug_i).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from netaug.augment import AugmentedNet, augment, recalibrate_bn, width_multipliers
from netaug.augment.network import ConfigLike, SubnetConfig
from netaug.config import SpaceConfig
from netaug.data import DataSplits, make_batcher
from netaug.models import InvertedResidualNet, build_model
from netaug.train.evaluate import EvalResult, evaluate
from netaug.train.optim import build_optimizer, build_scheduler
from netaug.train.runtime import resolve_device, seed_everything


@dataclass
class EpochRecord:
    """What one epoch did: mean losses over its steps, the last learning rate, seconds."""

    epoch: int
    train_loss: float
    base_loss: float
    aug_loss: float
    lr: float
    epoch_s: float
    step_s: float
    val: dict[str, float] = field(default_factory=dict)


def build_base(cfg: SpaceConfig, data: DataSplits) -> InvertedResidualNet:
    kw = {} if cfg.model.name == "mobilenetv2_tiny" else {"width_mult": cfg.model.width_mult}
    return build_model(cfg.model.name, data.num_classes, data.in_channels, resolution=data.resolution,
                       small_input=cfg.model.small_input, dropout=cfg.model.dropout, **kw)


class Trainer:
    """Trains a base model in `baseline` or `netaug` mode on in-memory splits."""

    def __init__(self, cfg: SpaceConfig, data: DataSplits, mode: str | None = None,
                 arch_log: Callable[[dict], None] | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.mode = mode or cfg.training.mode
        if self.mode not in ("baseline", "netaug"):
            raise ValueError(f"unknown training mode {self.mode!r}")
        t = cfg.training
        seed_everything(t.seed)
        self.device = resolve_device(t.device)
        self.autocast_dtype = torch.bfloat16 if t.bf16 and self.device.type == "cuda" else None
        base = build_base(cfg, data)
        if self.mode == "netaug":
            widths = width_multipliers(cfg.netaug.r, cfg.netaug.s)
            model: nn.Module = augment(base, widths, widths if cfg.netaug.augment_expand else [1.0])
        else:
            model = base
        memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.batcher = make_batcher(data, cfg.data, self.device, channels_last=t.channels_last)
        self.steps_per_epoch = max(1, len(data.train) // t.batch_size)
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.steps_per_epoch)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        self.batch_generator = torch.Generator().manual_seed(t.seed)
        self.arch_generator = torch.Generator().manual_seed(t.seed + 1)
        self.epoch = 0
        self.global_step = 0
        self.arch_log = arch_log
        self._calibration: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ training
    @property
    def augmented(self) -> AugmentedNet | None:
        return self.model if isinstance(self.model, AugmentedNet) else None

    def aug_kind(self) -> str:
        """"random" sub-networks, or "min_w" (base widths, random expands) in the final epochs."""
        start_min_w = self.cfg.training.epochs * (1 - self.cfg.netaug.min_w_fraction)
        return "min_w" if self.epoch >= start_min_w else "random"

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            return self.criterion(self.model(x).float(), y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One optimizer step; returns the step's losses."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        aug = self.augmented
        if aug is not None:
            aug.set_active("min")
        base_loss = self._forward_loss(x, y)
        base_loss.backward()
        aug_total = 0.0
        if aug is not None and self.cfg.netaug.aug_loss_weight > 0:
            kind = self.aug_kind()
            for sample in range(self.cfg.netaug.aug_samples):
                config = aug.set_active(kind, self.arch_generator)
                if self.arch_log is not None:
                    self.arch_log({"epoch": self.epoch, "step": self.global_step, "sample": sample,
                                   "kind": kind, "config": config})
                aug_loss = self._forward_loss(x, y)
                (self.cfg.netaug.aug_loss_weight * aug_loss).backward()
                aug_total += aug_loss.item()
            aug.set_active("min")
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        base = base_loss.item()
        return {"loss": base + self.cfg.netaug.aug_loss_weight * aug_total if aug is not None else base,
                "base_loss": base, "aug_loss": aug_total}

    def train_epoch(self, progress: Callable[[dict[str, float]], None] | None = None) -> EpochRecord:
        """One pass over the training split (shuffled, augmented, last partial batch dropped)."""
        if self.augmented is not None and self.cfg.netaug.sort_channels:
            self.augmented.sort_channels(self.optimizer)
        sums = {"loss": 0.0, "base_loss": 0.0, "aug_loss": 0.0}
        steps, start = 0, time.perf_counter()
        for x, y in self.batcher.batches(self.data.train, self.cfg.training.batch_size, shuffle=True,
                                         augment=self.cfg.data.augment, generator=self.batch_generator,
                                         drop_last=True):
            losses = self.step(x, y)
            for key in sums:
                sums[key] += losses[key]
            steps += 1
            if progress is not None:
                progress(losses)
        elapsed = time.perf_counter() - start
        record = EpochRecord(self.epoch, sums["loss"] / steps, sums["base_loss"] / steps, sums["aug_loss"] / steps,
                             self.optimizer.param_groups[0]["lr"], elapsed, elapsed / steps)
        self.epoch += 1
        return record

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None,
            progress: Callable[[dict[str, float]], None] | None = None) -> list[EpochRecord]:
        """Train the remaining epochs, evaluating the base on val after each one."""
        history = []
        while self.epoch < self.cfg.training.epochs:
            record = self.train_epoch(progress)
            record.val = self.evaluate("val")["base"].summary()
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return history

    # ------------------------------------------------------------------ evaluation
    def calibration_batches(self) -> list[torch.Tensor]:
        """A fixed set of un-augmented training batches for BatchNorm recalibration."""
        if self._calibration is None:
            gen = torch.Generator().manual_seed(self.cfg.training.seed + 2)
            batches = self.batcher.batches(self.data.train, self.cfg.training.batch_size, shuffle=True,
                                           generator=gen)
            self._calibration = [x for _, (x, _y) in zip(range(self.cfg.training.bn_calib_batches), batches)]
        return self._calibration

    def evaluate(self, split: str = "val", subnets: Sequence[tuple[str, ConfigLike]] = (("base", "min"),)
                 ) -> dict[str, EvalResult]:
        """Evaluate the base (and any listed sub-networks of the augmented model) on a split.

        Sub-networks share weights and BatchNorm buffers, so each is recalibrated first.
        """
        data = {"train": self.data.train, "val": self.data.val, "test": self.data.test}[split]
        results = {}
        aug = self.augmented
        for name, config in subnets if aug is not None else (("base", "min"),):
            if aug is not None:
                aug.set_active(config)
                recalibrate_bn(aug, self.calibration_batches())
            results[name] = evaluate(self.model, data, self.batcher, self.cfg.training.eval_batch_size,
                                     self.cfg.training.topk, self.autocast_dtype)
        if aug is not None:
            aug.set_active("min")
        return results

    def export_base(self) -> InvertedResidualNet:
        """The trained base as a plain network of its own class (BatchNorm recalibrated for NetAug)."""
        aug = self.augmented
        if aug is None:
            return copy.deepcopy(self.model).eval()
        aug.set_active("min")
        recalibrate_bn(aug, self.calibration_batches())
        return aug.export("min").eval()

    def sub_networks(self) -> list[tuple[str, SubnetConfig]]:
        """The named sub-networks worth reporting: base and the largest augmented model."""
        aug = self.augmented
        return [("base", aug.config("min")), ("aug:max", aug.config("max"))] if aug is not None else []

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """A snapshot (deep copy: torch's optimizer state dicts alias live tensors) for checkpoints."""
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
                "batch_generator": self.batch_generator.get_state(),
                "arch_generator": self.arch_generator.get_state()})

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batch_generator.set_state(state["batch_generator"])
        self.arch_generator.set_state(state["arch_generator"])

