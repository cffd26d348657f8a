"""The one trainer every stage reuses: training modes, evaluation, export, checkpoints.

Forward (F) and backward (B) passes per step, then one optimizer step:

| mode | passes |
| --- | --- |
| baseline | base F+B |
| netaug | base F+B, then per sampled augmented model F+B of alpha * L(aug) |
| kd | teacher (largest augmented model) F+B of its CE; base F+B of CE + lambda * KD |
| netaug_kd | teacher F+B; base F+B of CE + lambda * KD; per sample F+B of alpha * L(aug) |
| netaug_rkd | teacher F+B; base F+B of CE + lambda * (w_d RKD-D + w_a RKD-A); per sample F+B |
| supernet | SPOS: base F+B (if supernet.train_base), then one uniformly sampled path F+B of its CE |

Gradients of every pass accumulate in the shared weights, so the step follows the gradient of
L = L(base) + alpha * sum_i L(aug_i) + lambda * distill + L(teacher). The teacher's outputs enter
the distillation term detached: it learns from its own CE only.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from netaug.augment import AugmentedNet, augment, netaug_grids, recalibrate_bn
from netaug.augment.network import ConfigLike, SubnetConfig
from netaug.config import TEACHER_MODES, SpaceConfig
from netaug.data import DataSplits, ImageSet, make_batcher
from netaug.losses import kd_kl, rkd_angle, rkd_distance
from netaug.models import InvertedResidualNet, build_model
from netaug.models.weight_sharing import is_shared, materialize, plain_state_dict, release, share_weights
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
    teacher_loss: float
    distill_loss: float
    lr: float
    epoch_s: float
    step_s: float
    val: dict[str, float] = field(default_factory=dict)


def build_base(cfg: SpaceConfig, data: DataSplits) -> InvertedResidualNet:
    kw = {} if cfg.model.name == "mobilenetv2_tiny" else {"width_mult": cfg.model.width_mult}
    return build_model(cfg.model.name, data.num_classes, data.in_channels, resolution=data.resolution,
                       small_input=cfg.model.small_input, dropout=cfg.model.dropout, **kw)


class Trainer:
    """Trains a base model in one of the modes above on in-memory splits."""

    AUG_MODES = ("netaug", "netaug_kd", "netaug_rkd")
    SUPERNET = "supernet"

    def __init__(self, cfg: SpaceConfig, data: DataSplits, mode: str | None = None,
                 arch_log: Callable[[dict], None] | None = None, base: InvertedResidualNet | None = None,
                 largest: ConfigLike | None = None) -> None:
        """`base` trains a given network (e.g. an SPOS path exported as a static model) instead of
        cfg.model; `largest` (e.g. a searched a*) replaces "every layer at r" as the largest augmented
        model: the teacher, and the ceiling of every sampled augmented model."""
        self.mode = mode or cfg.training.mode
        if self.mode not in ("baseline", self.SUPERNET, *self.AUG_MODES, *TEACHER_MODES):
            raise ValueError(f"unknown training mode {self.mode!r}")
        if self.mode == self.SUPERNET:  # the supernet has its own epoch budget; the rest of training applies
            epochs = cfg.supernet.epochs
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(
                cfg.training, epochs=epochs, warmup_epochs=min(cfg.training.warmup_epochs, epochs)))
        self.cfg = cfg
        self.data = data
        t = cfg.training
        seed_everything(t.seed)
        self.device = resolve_device(t.device)
        self.autocast_dtype = torch.bfloat16 if t.bf16 and self.device.type == "cuda" else None
        base = base if base is not None else build_base(cfg, data)
        if self.mode == self.SUPERNET:
            from netaug.spos.supernet import build_supernet

            model: nn.Module = build_supernet(cfg, base)
        elif self.mode != "baseline":
            widths, expands = netaug_grids(cfg.netaug)
            model = augment(base, widths, expands, cfg.netaug.mid_width, cfg.netaug.init)
        else:
            model = base
        if largest is not None:
            if not isinstance(model, AugmentedNet):
                raise ValueError(f"mode {self.mode} has no augmented model to bound by `largest`")
            model.set_ceiling(largest)
        memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.batcher = make_batcher(data, cfg.data, self.device, channels_last=t.channels_last)
        self.steps_per_epoch = max(1, len(data.train) // t.batch_size)
        self.release_step: int | None = None
        if cfg.sharing.enabled and self.mode != self.SUPERNET:  # the supernet trains unshared
            share_weights(self.model)
            self.release_step = int(round(cfg.sharing.share_fraction * t.epochs * self.steps_per_epoch))
        self.shared = self.release_step is not None  # released at the first step >= release_step
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.steps_per_epoch)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        self.batch_generator = torch.Generator().manual_seed(t.seed)
        self.arch_generator = torch.Generator().manual_seed(t.seed + 1)
        self.epoch = 0
        self.global_step = 0
        self.arch_log = arch_log
        self.batch_hook: Callable[[torch.Tensor, torch.Tensor], None] | None = None  # sees every training batch
        self._calibration: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ training
    @property
    def augmented(self) -> AugmentedNet | None:
        return self.model if isinstance(self.model, AugmentedNet) else None

    def aug_kind(self) -> str:
        """"random" sub-networks, or "min_w" (base widths, random expands) in NetAug's final epochs."""
        if self.mode == self.SUPERNET:
            return "random"
        start_min_w = self.cfg.training.epochs * (1 - self.cfg.netaug.min_w_fraction)
        return "min_w" if self.epoch >= start_min_w else "random"

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, float32 logits) of the active network."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            features, logits = self.model.forward_with_features(x)
        return features.float(), logits.float()

    def distill_loss(self, features: torch.Tensor, logits: torch.Tensor,
                     teacher: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Hinton KD (kd, netaug_kd) or w_d RKD-D + w_a RKD-A (netaug_rkd) against the detached teacher."""
        t_features, t_logits = teacher
        r = self.cfg.rkd
        if self.mode != "netaug_rkd":
            return kd_kl(logits, t_logits, r.temperature)
        s_emb, t_emb = (features, t_features) if r.embedding == "features" else (logits, t_logits)
        return r.distance_weight * rkd_distance(s_emb, t_emb) + r.angle_weight * rkd_angle(s_emb, t_emb)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One optimizer step; returns the step's losses (unweighted, plus the weighted total)."""
        if self.shared and self.global_step >= self.release_step:
            release(self.model)
            self.shared = False
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        aug = self.augmented
        alpha, lam = self.cfg.netaug.aug_loss_weight, self.cfg.rkd.lambda_kd
        teacher_loss = distill = 0.0
        teacher = None
        if self.mode in TEACHER_MODES:
            aug.set_active("max")
            t_features, t_logits = self._forward(x)
            t_loss = self.criterion(t_logits, y)
            t_loss.backward()
            teacher, teacher_loss = (t_features.detach(), t_logits.detach()), t_loss.item()
        if aug is not None:
            aug.set_active("min")
        base = 0.0
        if self.mode != self.SUPERNET or self.cfg.supernet.train_base:
            features, logits = self._forward(x)
            base_loss = self.criterion(logits, y)
            total = base_loss
            if teacher is not None:
                distill_loss = self.distill_loss(features, logits, teacher)
                total = total + lam * distill_loss
                distill = distill_loss.item()
            total.backward()
            base = base_loss.item()
        aug_total = 0.0
        if self.mode == self.SUPERNET:
            alpha, samples = 1.0, 1  # SPOS: one uniformly sampled single path per step, at full weight
        else:
            samples = self.cfg.netaug.aug_samples if self.mode in self.AUG_MODES else 0
        if samples and alpha > 0:
            kind = self.aug_kind()
            for sample in range(samples):
                config = aug.set_active(kind, self.arch_generator)
                if self.arch_log is not None:
                    self.arch_log({"epoch": self.epoch, "step": self.global_step, "sample": sample,
                                   "kind": kind, "config": config})
                aug_loss = self.criterion(self._forward(x)[1], y)
                (alpha * aug_loss).backward()
                aug_total += aug_loss.item()
        if aug is not None:
            aug.set_active("min")
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return {"loss": base + alpha * aug_total + lam * distill + teacher_loss, "base_loss": base,
                "aug_loss": aug_total, "teacher_loss": teacher_loss, "distill_loss": distill}

    def train_epoch(self, progress: Callable[[dict[str, float]], None] | None = None) -> EpochRecord:
        """One pass over the training split (shuffled, augmented, last partial batch dropped)."""
        if self.augmented is not None and self.cfg.netaug.sort_channels and self.aug_kind() == "random":
            self.augmented.sort_channels(self.optimizer)  # as the official code: only in width-augmented epochs
        sums = dict.fromkeys(("loss", "base_loss", "aug_loss", "teacher_loss", "distill_loss"), 0.0)
        steps, start = 0, time.perf_counter()
        for x, y in self.batcher.batches(self.data.train, self.cfg.training.batch_size, shuffle=True,
                                         augment=self.cfg.data.augment, generator=self.batch_generator,
                                         drop_last=True):
            if self.batch_hook is not None:
                self.batch_hook(x, y)
            losses = self.step(x, y)
            for key in sums:
                sums[key] += losses[key]
            steps += 1
            if progress is not None:
                progress(losses)
        elapsed = time.perf_counter() - start
        means = {key: value / steps for key, value in sums.items()}
        record = EpochRecord(self.epoch, means["loss"], means["base_loss"], means["aug_loss"], means["teacher_loss"],
                             means["distill_loss"], self.optimizer.param_groups[0]["lr"], elapsed, elapsed / steps)
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

    def evaluate(self, split: str | ImageSet = "val", subnets: Sequence[tuple[str, ConfigLike]] = (("base", "min"),)
                 ) -> dict[str, EvalResult]:
        """Evaluate the base (and any listed sub-networks of the augmented model) on a split (a name, or
        any ImageSet or StreamSet such as a fixed subset of train), un-augmented and in order.

        Sub-networks share weights and BatchNorm buffers, so each is recalibrated first.
        """
        if not isinstance(split, str):
            data = split
        else:
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
            return materialize(self.model).eval()
        aug.set_active("min")
        recalibrate_bn(aug, self.calibration_batches())
        return aug.export("min").eval()

    def sub_networks(self) -> list[tuple[str, SubnetConfig]]:
        """The named sub-networks worth reporting: base and the largest augmented model."""
        aug = self.augmented
        return [("base", aug.config("min")), ("aug:max", aug.config("max"))] if aug is not None else []

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """A snapshot (deep copy: torch's optimizer state dicts alias live tensors) for checkpoints.

        "model" holds plain materialised weights (also with share-then-unshare); "model_raw" adds
        the shared parametrisation (w0 and the w~_i) when there is one, for an exact resume.
        """
        raw = self.model.state_dict() if self.release_step is not None else None
        return copy.deepcopy({
            "model": plain_state_dict(self.model), "model_raw": raw, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
            "batch_generator": self.batch_generator.get_state(), "arch_generator": self.arch_generator.get_state()})

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model_raw"] if state.get("model_raw") is not None else state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batch_generator.set_state(state["batch_generator"])
        self.arch_generator.set_state(state["arch_generator"])
        self.shared = is_shared(self.model)

