"""The one trainer every stage reuses: training modes, evaluation, export, checkpoints.

Forward (F) and backward (B) passes per step, then one optimizer step:

| mode | passes |
| --- | --- |
| baseline | base F+B |
| netaug | base F+B, then per sampled augmented model F+B of alpha * L(aug) |
| kd | teacher (largest augmented model) F+B of its CE; base F+B of CE + lambda * KD |
| netaug_kd | teacher F+B; base F+B of CE + lambda * KD; per sample F+B of alpha * L(aug) |
| netaug_rkd | teacher F+B; base F+B of CE + lambda * (w_d RKD-D + w_a RKD-A); per sample F+B |
| ...[max_fwd] | `rkd.teacher: max_fwd`: the teacher pass is forward-only (no teacher CE, no backward) |
| ...[sampled] | `rkd.teacher: sampled`: no teacher pass; the first sampled augmented model's outputs teach |
| supernet | SPOS: base F+B (if supernet.train_base), then one uniformly sampled path F+B of its CE |

Gradients of every pass accumulate in the shared weights, so the step follows the gradient of
L = L(base) + alpha * sum_i L(aug_i) + lambda * distill + L(teacher). The teacher's outputs enter
the distillation term detached: it learns from its own CE only.

Data-parallel (a torch.distributed process group is initialised, e.g. by a Ray Train worker): each
of the N workers takes `training.batch_size` images of every global batch of N x batch_size, the
learning rate is N x `training.lr` (linear scaling, as the official NetAug), and the passes above
run locally; their accumulated gradients are averaged with one all-reduce per optimizer step (the
official code's `no_sync()` on the earlier passes, without DDP's per-forward hooks). Sub-networks
are drawn from a generator seeded by the step, so every worker trains the same ones. Losses stay on
the device and are read once per epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from netaug.augment import AugmentedModel, AugmentedModule, ModuleNet, augment, netaug_grids, recalibrate_bn
from netaug.augment.configs import ConfigLike, SubnetConfig
from netaug.augment.generic import share_blocks
from netaug.config import PLAIN_MODES, TEACHER_MODES, SpaceConfig
from netaug.data import DataSplits, ImageSet, make_batcher
from netaug.errors import UserError
from netaug.models import InvertedResidualNet, build_from_spec_file, build_model
from netaug.models.weight_sharing import is_shared, materialize, plain_state_dict, release, share_weights
from netaug.records import epoch_metrics
from netaug.reparam import RepModule
from netaug.train.cost import FlopCounter
from netaug.train.evaluate import EvalResult, evaluate
from netaug.train.optim import build_optimizer, build_scheduler
from netaug.train.recipe import AUG_MODES, SUPERNET, Recipe, min_w_start  # noqa: F401 (min_w_start: re-exported)
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
    train_s: float = 0.0  # cumulative seconds of training steps (all epochs so far; no evaluation)
    train_flops: float = 0.0  # cumulative training FLOPs of every pass (netaug/train/cost.py), all workers


LOSS_KEYS = ("loss", "base_loss", "aug_loss", "teacher_loss", "distill_loss")
VAL = (("val", "val", "min"),)  # the base on val: what every stage evaluates after an epoch


@dataclass
class EpochResult:
    """One epoch of `Trainer.run_epochs`: what training did, the evaluations by metric prefix, the epoch's
    metrics under their one name (netaug.records.epoch_metrics), and the seconds it kept the worker busy
    (training steps and evaluation)."""

    record: EpochRecord
    evals: dict[str, EvalResult]
    metrics: dict[str, float]
    busy_s: float


def data_parallel_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_base(cfg: SpaceConfig, data: DataSplits) -> nn.Module:
    """The base model of `cfg.model`: a built-in network, a spec file's, or the user's own module
    (wrapped as a `ModuleNet`)."""
    m = cfg.model
    if m.module is not None:
        from netaug.models.user import build_user_model

        module, kwargs = build_user_model(m.module, m.kwargs, data.num_classes, data.in_channels, data.resolution)
        return ModuleNet(module, (data.in_channels, data.resolution, data.resolution),
                         {"factory": m.module, "kwargs": kwargs})
    if cfg.model.spec is not None:
        return build_from_spec_file(cfg.model.spec, data.num_classes, data.in_channels, cfg.model.dropout)
    kw = {} if cfg.model.name == "mobilenetv2_tiny" else {"width_mult": cfg.model.width_mult}
    return build_model(cfg.model.name, data.num_classes, data.in_channels, resolution=data.resolution,
                       small_input=cfg.model.small_input, dropout=cfg.model.dropout, **kw)


@dataclass(frozen=True)
class DataShape:
    """What building a model needs to know of the data (the attributes of `DataSplits` it reads)."""

    num_classes: int
    in_channels: int
    resolution: int


def check_model(cfg: SpaceConfig, num_classes: int, in_channels: int) -> None:
    """Build the base and its augmented twin once on the CPU, so that a model that cannot be built or augmented
    fails with its one-line UserError before any work starts (the pipeline's driver calls this before Ray)."""
    shape = DataShape(num_classes, in_channels, cfg.data.resolution)
    base = build_base(cfg, shape)
    widths, expands = netaug_grids(cfg.netaug)
    augment(base, widths, expands, cfg.netaug.mid_width, cfg.netaug.init, cfg.model.freeze or ())
    if "reparam" in (cfg.training.mode, *(cfg.sweep.mode or ()), *cfg.final.arms):
        from netaug.reparam import reparameterize

        reparameterize(base, cfg.reparam.k, cfg.reparam.conv1x1, cfg.reparam.identity)


def min_w_epochs(cfg, epochs: int) -> int:
    """How many of `epochs` epochs would run in min_w if `cfg` trained for that many (0 without NetAug)."""
    t = dataclasses.replace(cfg.training, epochs=epochs, warmup_epochs=min(cfg.training.warmup_epochs, epochs))
    start = min_w_start(dataclasses.replace(cfg, training=t))
    return sum(1 for e in range(epochs) if e >= start)


class Trainer:
    """Trains a base model in one of the modes above on in-memory splits."""

    AUG_MODES = AUG_MODES
    SUPERNET = SUPERNET

    def __init__(self, cfg: SpaceConfig, data: DataSplits, mode: str | None = None,
                 arch_log: Callable[[dict], None] | None = None, base: InvertedResidualNet | None = None,
                 largest: ConfigLike | None = None, micro_batches: int = 1, local: bool = False) -> None:
        """`base` trains a given network (e.g. an SPOS path exported as a static model) instead of
        cfg.model; `largest` (e.g. a searched a*) replaces "every layer at r" as the largest augmented
        model: the teacher, and the ceiling of every sampled augmented model. `micro_batches` splits
        each step's batch into that many chunks and averages their gradients: what N data-parallel
        workers compute on one global batch (BatchNorm statistics per chunk included), in the same
        floating-point order as their all-reduce. `local` trains in this process alone, even inside a
        data-parallel group (rank 0's quantization-aware fine-tuning)."""
        self.mode = mode or cfg.training.mode
        self.rank, self.world = (0, 1) if local else data_parallel_world()
        if self.world > 1:  # linear scaling rule: the global batch is world x batch_size
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, lr=cfg.training.lr * self.world))
        self.micro_batches = micro_batches
        if self.mode not in (*PLAIN_MODES, self.SUPERNET, *self.AUG_MODES, *TEACHER_MODES):
            raise ValueError(f"unknown training mode {self.mode!r}")
        if self.mode == self.SUPERNET:  # the supernet has its own epoch budget; the rest of training applies
            epochs = cfg.supernet.epochs
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(
                cfg.training, epochs=epochs, warmup_epochs=min(cfg.training.warmup_epochs, epochs)))
        self.cfg = cfg
        self.data = data
        t = cfg.training
        seed_everything(t.seed)
        self.device = resolve_device(t.device, local_rank=self.rank if self.world > 1 else None)
        self.autocast_dtype = torch.bfloat16 if t.bf16 and self.device.type == "cuda" else None
        base = base if base is not None else build_base(cfg, data)
        if self.mode == self.SUPERNET:
            from netaug.augment.supernet import build_supernet

            model: nn.Module = build_supernet(cfg, base)
        elif self.mode == "reparam":
            from netaug.reparam import reparameterize

            r = cfg.reparam
            model = reparameterize(base, r.k, r.conv1x1, r.identity)
            if self.rank == 0:
                print(model.describe(), flush=True)  # the run's log: what was branched, what was left as it is
        elif self.mode != "baseline":
            widths, expands = netaug_grids(cfg.netaug)
            model = augment(base, widths, expands, cfg.netaug.mid_width, cfg.netaug.init, cfg.model.freeze or ())
        else:
            model = base
        if self.mode in TEACHER_MODES and cfg.rkd.teacher != "max":
            if self.mode not in self.AUG_MODES:
                raise ValueError(f"rkd.teacher {cfg.rkd.teacher} needs a NetAug mode, not {self.mode}")
            if cfg.rkd.teacher == "sampled" and cfg.netaug.aug_loss_weight == 0:
                raise ValueError("rkd.teacher sampled needs sampled augmented models (netaug.aug_loss_weight > 0)")
        if largest is not None:
            if not isinstance(model, AugmentedModel):
                raise ValueError(f"mode {self.mode} has no augmented model to bound by `largest`")
            model.set_ceiling(largest)
        memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        if self.device.type == "cuda" and cfg.data.loader == "memory":  # decode once, augment on the device
            data = dataclasses.replace(data, train=data.train.to(self.device), val=data.val.to(self.device),
                                       test=data.test.to(self.device))
            self.data = data
        self.batcher = make_batcher(data, cfg.data, self.device, channels_last=t.channels_last)
        self.global_batch = t.batch_size * self.world
        self.steps_per_epoch = max(1, len(data.train) // self.global_batch)
        self.release_step: int | None = None
        if cfg.sharing.enabled and self.mode != self.SUPERNET:  # the supernet trains unshared
            if isinstance(self.model, AugmentedModule) and isinstance(self.model.base.net, InvertedResidualNet):
                share_weights(self.model.base.net)  # a built-in: its identical blocks' expand, depthwise, project
            elif isinstance(self.model, AugmentedModule):  # a user's model: its identical consecutive blocks
                if not share_blocks(self.model.base.net, self.model.graph):
                    raise UserError("sharing.enabled: the model.module has no identical consecutive blocks to share "
                                    "(children of a Sequential or ModuleList with the same layers and channels)")
            elif isinstance(self.model, (ModuleNet, RepModule)):
                raise UserError(f"sharing.enabled: share-then-unshare needs a NetAug mode, not {self.mode} (its blocks "
                                "are found on the augmented twin)")
            else:
                share_weights(self.model)
            self.release_step = int(round(cfg.sharing.share_fraction * t.epochs * self.steps_per_epoch))
        self.shared = self.release_step is not None  # released at the first step >= release_step
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.steps_per_epoch, self.world)
        self.recipe = Recipe(self.model, self.mode, cfg, self.device, self.autocast_dtype, arch_log)
        self.criterion = self.recipe.criterion
        self.batch_generator = torch.Generator().manual_seed(t.seed)
        self.epoch = 0
        self.global_step = 0
        self.batch_hook: Callable[[torch.Tensor, torch.Tensor], None] | None = None  # sees every training batch
        self._calibration: list[torch.Tensor] | None = None
        self._calibrated: tuple | None = None  # (step, config) whose BatchNorm statistics are recalibrated
        self.flop_counter = FlopCounter(self.model, (data.in_channels, data.resolution, data.resolution))
        self.train_seconds = 0.0  # cumulative, training steps only
        self.train_flops = 0.0  # cumulative, every worker's passes

    # ------------------------------------------------------------------ training
    @property
    def augmented(self) -> AugmentedModel | None:
        return self.model if isinstance(self.model, AugmentedModel) else None

    @property
    def arch_log(self) -> Callable[[dict], None] | None:
        """Called with every sampled augmented sub-network (the recipe's log)."""
        return self.recipe.arch_log

    @arch_log.setter
    def arch_log(self, log: Callable[[dict], None] | None) -> None:
        self.recipe.arch_log = log

    @property
    def pass_log(self) -> list[tuple[object, int, bool]]:
        """(sub-network, images, backward?) of each pass run since it was last emptied (the FLOPs count)."""
        return self.recipe.pass_log

    @pass_log.setter
    def pass_log(self, log: list) -> None:
        self.recipe.pass_log = log

    def aug_kind(self) -> str:
        """"random" sub-networks, or "min_w" (base widths, random expands) in NetAug's final epochs."""
        return self.recipe.aug_kind(self.epoch)

    def step_generator(self, step: int) -> torch.Generator:
        """The generator the sub-networks of `step` are drawn from (the recipe's, seeded by seed and step)."""
        return self.recipe.step_generator(step)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on this worker's batch. Returns the step's losses (unweighted, plus the
        weighted total) as 0-d tensors on the device: reading them is the caller's host sync."""
        if self.shared and self.global_step >= self.release_step:
            release(self.model)
            self.shared = False
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        configs = self.recipe.sample(self.global_step, self.epoch)
        chunks = list(zip(x.chunk(self.micro_batches), y.chunk(self.micro_batches)))
        totals: dict[str, torch.Tensor] = {}
        summed: list[torch.Tensor | None] = []
        for i, (xc, yc) in enumerate(chunks):
            losses = self.recipe.passes(xc, yc, configs)
            totals = {k: totals[k] + v for k, v in losses.items()} if totals else losses
            if len(chunks) > 1:  # sum each chunk's gradients, then average: what the all-reduce computes
                grads = [p.grad for p in self.model.parameters()]
                summed = grads if i == 0 else [a if b is None else b if a is None else a.add_(b)
                                               for a, b in zip(summed, grads)]
                self.optimizer.zero_grad(set_to_none=True)
        if len(chunks) > 1:
            for param, grad in zip(self.model.parameters(), summed):
                param.grad = None if grad is None else grad.div_(len(chunks))
        self._all_reduce_gradients()
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        if len(chunks) > 1:
            totals = {k: v / len(chunks) for k, v in totals.items()}
        return totals

    def _all_reduce_gradients(self) -> None:
        """Average the accumulated gradients over the data-parallel workers: one all-reduce of one
        flat buffer per optimizer step (every worker ran the same passes, so the same parameters
        hold gradients)."""
        if self.world == 1:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(self.world)
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    def train_epoch(self, progress: Callable[[dict[str, torch.Tensor]], None] | None = None) -> EpochRecord:
        """One pass over the training split (shuffled, augmented, last partial batch dropped); with N
        workers, this worker's share of every global batch. `progress` gets each step's device-side
        losses (reading one is a host sync)."""
        start = time.perf_counter()
        self.recipe.on_epoch_start(self.epoch, self.optimizer)  # channel sorting in width-augmented epochs
        self._calibrated = None
        self.pass_log = []
        sums = torch.zeros(len(LOSS_KEYS), device=self.device)
        steps = 0
        for x, y in self.batcher.batches(self.data.train, self.global_batch, shuffle=True,
                                         augment=self.cfg.data.augment, generator=self.batch_generator,
                                         drop_last=True, shard=(self.rank, self.world)):
            if self.batch_hook is not None:
                self.batch_hook(x, y)
            losses = self.step(x, y)
            sums += torch.stack([losses[key] for key in LOSS_KEYS])
            steps += 1
            if progress is not None:
                progress(losses)
        means = dict(zip(LOSS_KEYS, (sums / max(1, steps)).tolist()))  # the epoch's one read of the losses
        elapsed = time.perf_counter() - start
        self.train_seconds += elapsed
        self.train_flops += self.epoch_flops()  # counted after the clock stopped: not part of the step time
        record = EpochRecord(self.epoch, means["loss"], means["base_loss"], means["aug_loss"], means["teacher_loss"],
                             means["distill_loss"], self.optimizer.param_groups[0]["lr"], elapsed,
                             elapsed / max(1, steps), train_s=self.train_seconds, train_flops=self.train_flops)
        self.epoch += 1
        return record

    def epoch_flops(self) -> float:
        """Training FLOPs of the passes logged since the last call, on every data-parallel worker."""
        flops = self.flop_counter.passes_flops(self.pass_log) * self.world
        self.pass_log = []
        return float(flops)

    def run_epochs(self, on_epoch: Callable[[EpochResult], None] | None = None,
                   evals: Sequence[tuple[str, str | ImageSet, ConfigLike]] = VAL,
                   before_epoch: Callable[[Trainer], None] | None = None,
                   progress: Callable[[dict[str, torch.Tensor]], None] | None = None,
                   eval_every: int = 1) -> list[EpochResult]:
        """The one epoch loop every stage and the study use: train the remaining epochs; after each, evaluate
        `evals` ((metric prefix, split, sub-network) in order: `("train", subset, "min")` gives train_top1) and
        call `on_epoch` (the stage's reporting and checkpointing) with the epoch's result. `before_epoch` runs
        before each epoch's training (e.g. to set `batch_hook`). `eval_every`: evaluate after every this many
        epochs and after the last one only (the others' results have no evaluations)."""
        results = []
        epochs = self.cfg.training.epochs
        while self.epoch < epochs:
            if before_epoch is not None:
                before_epoch(self)
            record = self.train_epoch(progress)
            t0 = time.perf_counter()
            due = self.epoch % eval_every == 0 or self.epoch == epochs
            evaluated = {prefix: self.evaluate(split, [("base", config)])["base"]
                         for prefix, split, config in (evals if due else ())}
            record.val = evaluated["val"].summary() if "val" in evaluated else {}
            result = EpochResult(record, evaluated, epoch_metrics(record, evaluated),
                                 record.epoch_s + time.perf_counter() - t0)
            results.append(result)
            if on_epoch is not None:
                on_epoch(result)
        return results

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None,
            progress: Callable[[dict[str, torch.Tensor]], None] | None = None) -> list[EpochRecord]:
        """Train the remaining epochs, evaluating the base on val after each one."""
        return [r.record for r in self.run_epochs(None if on_epoch is None else lambda r: on_epoch(r.record),
                                                  progress=progress)]

    # ------------------------------------------------------------------ evaluation
    def calibration_batches(self) -> list[torch.Tensor]:
        """A fixed set of training batches for BatchNorm recalibration, drawn once with the training
        augmentation (the official code's pre-fetched `sub_train` loader)."""
        if self._calibration is None:
            gen = torch.Generator().manual_seed(self.cfg.training.seed + 2)
            batches = self.batcher.batches(self.data.train, self.cfg.training.batch_size, shuffle=True,
                                           augment=self.cfg.data.augment, generator=gen)
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
                self.recalibrate(config)
            results[name] = evaluate(self.model, data, self.batcher, self.cfg.training.eval_batch_size,
                                     self.cfg.training.topk, self.autocast_dtype)
        if aug is not None:
            aug.set_active("min")
        return results

    def export_base(self) -> InvertedResidualNet:
        """The trained base as a plain network of its own class (BatchNorm recalibrated for NetAug)."""
        aug = self.augmented
        if isinstance(self.model, RepModule):  # mode reparam: the branches folded into the base's own layers
            return self.model.export().eval()
        if aug is None:  # a user's module is never reparametrised (no share-then-unshare): a copy is plain
            return (copy.deepcopy(self.model) if isinstance(self.model, ModuleNet) else materialize(self.model)).eval()
        self.recalibrate("min")
        return aug.export("min").eval()

    def base_layers(self) -> nn.Module:
        """The base's own layers as they are now, without a NetAug model's wider channels or reparam's extra
        branches (no recalibration, no fold): what the init digests of paired arms compare."""
        if self.augmented is not None:
            return self.augmented.export("min")
        return self.model.own_layers() if isinstance(self.model, RepModule) else self.model

    def recalibrate(self, config: ConfigLike) -> None:
        """Activate sub-network `config` and recalibrate its BatchNorm statistics, unless they were
        already recalibrated for these weights (evaluating val and a train subset after one epoch
        recalibrates once)."""
        aug = self.augmented
        resolved = aug.set_active(config)
        key = (self.global_step, resolved)
        if self._calibrated != key:
            recalibrate_bn(aug, self.calibration_batches())
            self._calibrated = key

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
            "train_seconds": self.train_seconds, "train_flops": self.train_flops,
            "batch_generator": self.batch_generator.get_state(),
            "arch_generator": self.recipe.arch_generator.get_state()})

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model_raw"] if state.get("model_raw") is not None else state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.train_seconds, self.train_flops = state.get("train_seconds", 0.0), state.get("train_flops", 0.0)
        self.batch_generator.set_state(state["batch_generator"])
        self.recipe.arch_generator.set_state(state["arch_generator"])
        self.shared = is_shared(self.model)
        self._calibrated = None

