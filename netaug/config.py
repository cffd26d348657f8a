"""The one typed schema of a space file (spaces/*.yaml), with validation and `--set` overrides.

Every section is a dataclass; each field carries its range in `metadata`. Loading checks unknown
keys, types and ranges and raises `UserError` with the dotted key in the message, so a CLI exits 2
with one line before any work starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from netaug.errors import UserError
from netaug.io import read_yaml

# The one list of each: the schema's Literal, netaug.models' registry (asserted there) and docs/spaces.md use them.
DATASETS = ("digits", "idx", "fashion-mnist", "cifar10", "imagefolder", "shards")  # data.name
MODELS = ("mobilenetv2_tiny", "mobilenetv2", "mobilenetv3", "proxylessnas_mobile", "mcunet")  # model.name
MODES = ("baseline", "kd", "netaug", "netaug_kd", "netaug_rkd", "reparam")
PLAIN_MODES = ("baseline", "reparam")  # modes that train the base alone (no augmented model, no teacher)
TEACHER_MODES = ("kd", "netaug_kd", "netaug_rkd")
SWEPT_PARAMS = ("r", "s", "aug_loss_weight", "lambda_kd", "share_fraction", "aug_every", "aug_fraction",
                "macs_limit", "reparam_k", "mode")  # what a sweep may vary
AUG_PARAMS = ("r", "s", "aug_loss_weight", "share_fraction", "aug_every", "aug_fraction", "macs_limit")


def params_of_mode(mode: str) -> tuple[str, ...]:
    """The swept parameters that training in `mode` reads; a sweep samples only these for its trials."""
    if mode == "baseline":
        return ()
    if mode == "reparam":
        return ("reparam_k",)
    return AUG_PARAMS + (("lambda_kd",) if mode in TEACHER_MODES else ())


def read_params(params: dict, mode: str | None) -> dict:
    """`params` (swept name -> value) with the ones that training in `mode` does not read set to None: what the
    trial trained with. A sweep started before the space was conditional on mode drew every parameter for every
    mode (a baseline trial with an r, a NetAug trial with a lambda_kd): trials.parquet, the study and the report
    record only what was read. `mode` None: nothing is known, `params` as they are."""
    if mode is None:
        return dict(params)
    reads = set(params_of_mode(mode)) | {"mode"}
    return {k: (v if k in reads else None) for k, v in params.items()}


COMPUTE_UNITS = ("seconds", "flops", "epochs")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def opt(default: Any, doc: str, **rules: Any) -> Any:
    """A schema field: its default, a one-line doc, and range rules (ge, gt, le, lt)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **rules})
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass
class DataConfig:
    name: Literal[DATASETS] = opt(
        "digits", "dataset: digits (bundled), idx, fashion-mnist, cifar10, imagefolder "
        "(root/{train,val,test}/<class>/*) or shards (root/{train,val,test}/*.tar, webdataset layout)")
    loader: Literal["memory", "stream"] = opt(
        "memory", "memory: decode every split once into uint8 tensors; stream: keep images on disk and decode "
        "each batch in DataLoader workers (imagefolder, shards), for datasets larger than memory")
    workers: int = opt(2, "stream: DataLoader worker processes per training process", ge=0, le=64)
    stats_images: int = opt(1024, "stream: training images sampled to estimate the normalisation", ge=1)
    root: str | None = opt(None, "dataset folder (not used by digits; fashion-mnist has a default)")
    resolution: int = opt(16, "input side in pixels; images are resized to it", ge=8, le=512)
    val_fraction: float = opt(0.1, "fraction of the training data held out for validation", gt=0, lt=1)
    test_fraction: float = opt(0.2, "digits only: fraction held out for test", gt=0, lt=1)
    split_seed: int = opt(0, "seed of the train/val/test split", ge=0)
    subset: int | None = opt(None, "keep at most this many training images, drawn by split_seed", ge=1)
    augment: bool = opt(True, "memory: padded random crop; stream: random-resized crop; plus flip where it "
                        "makes sense, on training batches")
    flip: bool | None = opt(None, "horizontal flip; null picks per dataset (off for digits and IDX)")

    def check(self) -> None:
        if self.val_fraction + (self.test_fraction if self.name == "digits" else 0.0) >= 1.0:
            raise UserError("data.val_fraction: val_fraction + test_fraction must be below 1")
        if self.loader == "stream" and self.name not in ("imagefolder", "shards"):
            raise UserError(f"data.loader: stream reads imagefolder or shards, not '{self.name}'")
        if self.name == "shards" and self.loader != "stream":
            raise UserError("data.loader: shards are read with loader: stream")
        if self.name == "fashion-mnist" and self.root is None:
            self.root = FASHION_MNIST_ROOT
        if self.name != "digits":
            if self.root is None:
                raise UserError(f"data.root: dataset '{self.name}' needs a root folder")
            if not Path(self.root).expanduser().is_dir():
                raise UserError(f"data.root: no such directory: {self.root}")


@dataclass
class ModelConfig:
    name: Literal[MODELS] | None = opt(
        None, f"base model: {', '.join(MODELS[:-1])} or {MODELS[-1]}; null: {MODELS[0]} unless model.spec or "
        "model.module is given")
    width_mult: float = opt(1.0, f"width multiplier ({', '.join(MODELS[1:])})", gt=0, le=4)
    small_input: bool | None = opt(
        None, "keep stem and first stage at stride 1; null means automatic (input <= 64 px)")
    dropout: float = opt(0.0, "dropout before the classifier", ge=0, lt=1)
    spec: str | None = opt(None, "a YAML file describing your own inverted-residual network (docs/spaces.md); "
                           "replaces model.name")
    module: str | None = opt(None, "your own PyTorch model: 'package.module:factory' or 'path/to/file.py:factory' "
                             "returning an nn.Module from (B, C, H, W) to logits; replaces model.name")
    kwargs: dict = opt({}, "model.module: keyword arguments of the factory (num_classes and in_channels are "
                       "passed when the factory takes them)")
    freeze: list[str] | None = opt(None, "model.module: conv or linear layers whose output channels keep their "
                                   "base width (for ops that cannot be widened, e.g. a channel concat)")

    @property
    def label(self) -> str:
        """What the model is called in logs and results: its name, or the spec file's or module's name."""
        if self.module:
            return f"module:{self.module.rpartition('/')[2]}"
        return f"spec:{Path(self.spec).name}" if self.spec else self.name

    def check(self) -> None:
        given = [key for key in ("name", "spec", "module") if getattr(self, key) is not None]
        if len(given) > 1:
            raise UserError(f"model.{given[1]}: give exactly one of model.name, model.spec and model.module "
                            f"(got {' and '.join('model.' + k for k in given)})")
        if not given:
            self.name = "mobilenetv2_tiny"
        if self.module is None and (self.kwargs or self.freeze):
            raise UserError(f"model.{'kwargs' if self.kwargs else 'freeze'}: applies to model.module only")
        if self.name == "mobilenetv2_tiny" and self.width_mult != 1.0:
            raise UserError("model.width_mult: mobilenetv2_tiny has a fixed width (0.35); leave it at 1.0")
        if self.module is not None:
            for key, default in (("width_mult", 1.0), ("small_input", None), ("dropout", 0.0)):
                if getattr(self, key) != default:
                    raise UserError(f"model.{key}: a model.module states its own structure; leave {key} at "
                                    f"{default if default is not None else 'null'}")
            from netaug.models.user import resolve_reference  # noqa: PLC0415  (models import nothing of config)

            self.module = resolve_reference(self.module)
        if self.spec is not None:
            if self.width_mult != 1.0:
                raise UserError("model.width_mult: a model.spec file states its widths; leave width_mult at 1.0")
            if self.small_input is not None:
                raise UserError("model.small_input: a model.spec file states its strides; leave small_input null")
            from netaug.models.spec_file import load_spec_file  # noqa: PLC0415  (models import nothing of config)

            self.spec = str(Path(self.spec).expanduser().resolve())
            load_spec_file(self.spec, 2, 3)  # every malformed field fails here, before any work starts


@dataclass
class TrainingConfig:
    mode: Literal[MODES] = opt(
        "netaug", "baseline, kd (online KD from the largest augmented model), netaug, netaug_kd, netaug_rkd or reparam "
        "(extra conv + BN branches while training, folded into the base at export: the `reparam` section)")
    epochs: int = opt(15, "training epochs", ge=1, le=100000)
    batch_size: int = opt(64, "training batch size", ge=1)
    eval_batch_size: int = opt(512, "evaluation batch size", ge=1)
    lr: float = opt(0.05, "peak learning rate", gt=0, le=10)
    momentum: float = opt(0.9, "SGD momentum (Nesterov)", ge=0, lt=1)
    nesterov: bool = opt(True, "Nesterov momentum")
    weight_decay: float = opt(5e-5, "weight decay (not applied to biases or BatchNorm)", ge=0, lt=1)
    warmup_epochs: float = opt(1.0, "linear warm-up length in epochs, then cosine", ge=0)
    warmup: Literal["official", "linear"] = opt(
        "official", "warm-up shape: official (the official CosineLRwithWarmup: from lr, one worker's rate, "
        "linearly to the peak lr x workers; flat at lr on one worker) or linear (deprecated: peak x (step + 1) / "
        "warm-up steps, from near 0; the schedule before issue 27, kept for the convergence study's cells)")
    min_lr_ratio: float = opt(0.0, "final learning rate as a fraction of lr", ge=0, le=1)
    label_smoothing: float = opt(0.1, "label smoothing of the cross-entropy", ge=0, lt=1)
    seed: int = opt(0, "seed of weights, batches and sampled sub-networks", ge=0)
    topk: int = opt(5, "K of the stored per-sample top-K predictions", ge=1)
    bn_calib_batches: int = opt(8, "training batches used to recalibrate BatchNorm", ge=1)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto uses CUDA when present")
    bf16: bool = opt(False, "bf16 autocast (CUDA only)")
    channels_last: bool = opt(True, "channels_last memory format (faster on CPU and GPU)")

    def check(self) -> None:
        if self.warmup_epochs > self.epochs:
            raise UserError("training.warmup_epochs: must not exceed training.epochs")


@dataclass
class NetAugConfig:
    r: float = opt(3.0, "width augmentation factor: the largest augmented width is r x base", ge=1, le=16)
    s: int = opt(2, "diversity factor: widths are linearly spaced from 1 to r in s + 1 points", ge=1, le=32)
    augment_expand: bool = opt(True, "also augment the expand (middle) width of each block")
    expand_r: float | None = opt(
        None, "largest expand factor of a block's middle width; null: r (the width grid)", ge=1, le=16)
    expand_s: int | None = opt(
        None, "expand factors are linearly spaced from 1 to expand_r in expand_s + 1 points; null: s", ge=1, le=32)
    mid_width: Literal["input", "block"] = opt(
        "input", "a block's middle width: input (official: active input width x expand ratio x expand "
        "factor, so width and expand augmentation multiply) or block (base middle width x expand factor)")
    init: Literal["augmented", "base"] = opt(
        "augmented", "augmented (official): PyTorch's kaiming-uniform init of the whole augmented model, "
        "the base is its slice; base: the base's own fan-out init, extra weights initialised around it")
    aug_loss_weight: float = opt(1.0, "alpha: weight of the augmented models' loss", ge=0)
    aug_samples: int = opt(1, "augmented models sampled per step", ge=1, le=16)
    aug_every: int = opt(1, "the augmented loss on every k-th step only (a cheaper NetAug; 1: every step, official)",
                         ge=1, le=1000)
    aug_fraction: float = opt(1.0, "the augmented forward and backward on this leading fraction of each batch (a "
                              "cheaper NetAug; 1: the whole batch, official)", gt=0, le=1)
    min_w_fraction: float = opt(
        0.5, "final fraction of epochs in min_w mode (base widths, random expands); official: 0.5", ge=0, le=1)
    min_w_of: Literal["cosine", "all"] = opt(
        "cosine", "what min_w_fraction is a fraction of: cosine (the epochs after warm-up, as the official "
        "stop_aug_w_epoch: 75 of 150 + 5) or all (deprecated: every epoch, warm-up included; before issue 27, kept "
        "for the convergence study's cells)")
    sort: Literal["all", "augmented", "off"] = opt(
        "all", "channel sorting at the start of each width-augmented epoch, by the L1 importance of the "
        "projection weights: all (official: every middle channel, so important augmented channels move into the "
        "base), augmented (only the channels past the base's; the base is untouched) or off")
    sort_momentum: Literal["follow", "stay"] = opt(
        "follow", "follow: the optimizer's momentum is permuted with its weights; stay: left in the old channel "
        "order, as the official code does")


@dataclass
class RKDConfig:
    lambda_kd: float = opt(1.0, "lambda_KD: weight of the distillation term (RKD, or Hinton KD in kd modes)", ge=0)
    distance_weight: float = opt(1.0, "w_d: weight of distance-wise RKD", ge=0)
    angle_weight: float = opt(2.0, "w_a: weight of angle-wise RKD", ge=0)
    embedding: Literal["features", "logits"] = opt(
        "features", "what RKD compares: penultimate pooled features or logits")
    temperature: float = opt(4.0, "temperature T of Hinton KD (kd, netaug_kd)", gt=0)
    teacher: Literal["max", "max_fwd", "sampled"] = opt(
        "max", "the online teacher: max (the largest augmented model, trained on its own CE: forward + backward), "
        "max_fwd (the largest model forward-only; it learns only through the sampled sub-networks that share its "
        "weights) or sampled (the step's first sampled augmented model, whose pass NetAug runs anyway)")


@dataclass
class ReparamConfig:
    """Mode reparam: every conv that a BatchNorm2d follows trains with parallel branches, folded into that conv and
    BN at export (netaug/reparam), so the deployed model is the base itself."""

    k: int = opt(1, "extra conv + BN branches of each conv's own kernel size (MobileOne's over-parameterization "
                 "factor); 0: none", ge=0, le=16)
    conv1x1: bool = opt(True, "a 1x1 conv + BN branch beside every k x k conv with k > 1 (RepVGG, DBB)")
    identity: bool = opt(True, "a BN-only branch beside every conv that keeps its channels at stride 1 (RepVGG)")

    def check(self) -> None:
        if self.k == 0 and not self.conv1x1 and not self.identity:
            raise UserError("reparam.k: 0 with conv1x1 and identity false leaves no branch (that is mode baseline)")


@dataclass
class SharingConfig:
    enabled: bool = opt(False, "share-then-unshare the weights of identical consecutive blocks")
    share_fraction: float = opt(0.25, "fraction of all steps during which only the shared weights train",
                                ge=0, le=1)


@dataclass
class ResourcesConfig:
    cpu: float = opt(1.0, "CPUs per trial or worker (fractions allowed, e.g. 0.5)", gt=0, le=1024)
    gpu: float | None = opt(None, "GPUs per trial or worker (fractions allowed); null: 1 when the cluster has GPUs",
                            ge=0, le=64)


def _workers_doc(stage: str) -> str:
    return (f"data-parallel Ray Train workers per {stage} trial (each with `resources`); the global batch is workers x "
            "training.batch_size and the learning rate workers x training.lr")


@dataclass
class TrialPlacement:
    """What every Ray Tune stage of trials (supernet, sweep, final) shares: where a trial runs and how often a
    failing one is retried, each from its last checkpoint."""

    max_failures: int = opt(1, "Ray Tune retries of a failing trial, each from its last checkpoint", ge=0)
    workers: int = opt(1, _workers_doc("stage"), ge=1, le=4096)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class SupernetConfig(TrialPlacement):
    r_max: float | None = opt(
        None, "largest per-stage width multiplier of the SPOS supernet; null: sweep.r.high, the widest r swept",
        ge=1, le=16)
    e_max: float = opt(3.0, "largest per-block expand multiplier of the supernet", ge=1, le=16)
    s: int = opt(4, "supernet grid: multipliers linearly spaced from 1 to r_max (and e_max) in s + 1 points",
                 ge=1, le=32)
    epochs: int = opt(10, "supernet training epochs (batch size, lr and schedule come from training)", ge=1)
    train_base: bool = opt(True, "each step also trains the base path (the prefix every path contains)")
    eval_every: int = opt(
        1, "score the base and the largest path on val (each after BatchNorm recalibration) after every this many "
        "epochs and after the last one; a checkpoint is still written every epoch, and a larger value saves wall "
        "time only (on a large training split, a long evaluation is a large share of each epoch)", ge=1, le=100000)
    max_failures: int = opt(2, "Ray Tune retries of a failed supernet trial, each from its last checkpoint", ge=0)


@dataclass
class SearchConfig:
    method: Literal["uniform", "evolution"] = opt("uniform", "uniform sampling or SPOS evolution")
    r: float | None = opt(None, "search grid width factor; null: netaug.r (must not exceed supernet.r_max)",
                          ge=1, le=16)
    s: int | None = opt(None, "search grid diversity factor; null: netaug.s", ge=1, le=32)
    num_paths: int = opt(16, "uniform: distinct paths evaluated", ge=1)
    macs_limit: float | None = opt(
        None, "reject paths above this multiple of the base model's MACs; null: no limit", ge=1)
    population: int = opt(16, "evolution: population size", ge=2)
    generations: int = opt(4, "evolution: generations (the first is sampled uniformly)", ge=1)
    parents: int = opt(4, "evolution: top-k parents kept each generation", ge=1)
    mutation_prob: float = opt(0.1, "evolution: probability of resampling each choice", ge=0, le=1)
    seed: int = opt(0, "seed of path sampling, mutation and crossover", ge=0)
    workers: int = opt(2, "Ray actors evaluating candidates in parallel", ge=1, le=1024)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def check(self) -> None:
        if self.parents > self.population:
            raise UserError("search.parents: must not exceed search.population")


@dataclass
class FloatRange:
    """An Optuna float range: uniform on [low, high], or log-uniform with `log: true`."""

    low: float = opt(0.0, "lower bound")
    high: float = opt(1.0, "upper bound")
    log: bool = opt(False, "sample on a log scale (needs low > 0)")

    def check_at(self, where: str) -> None:
        if self.low > self.high:
            raise UserError(f"{where}.low: must not exceed {where}.high ({self.low:g} > {self.high:g})")
        if self.log and self.low <= 0:
            raise UserError(f"{where}.low: a log range needs low > 0, got {self.low:g}")


@dataclass
class IntRange:
    """An Optuna integer range [low, high], or a list of choices."""

    low: int | None = opt(1, "lower bound (inclusive)")
    high: int | None = opt(3, "upper bound (inclusive)")
    choices: list[int] | None = opt(None, "explicit choices instead of low/high")

    def check_at(self, where: str) -> None:
        if self.choices is None:
            if self.low is None or self.high is None:
                raise UserError(f"{where}: give low and high, or choices")
            if self.low > self.high:
                raise UserError(f"{where}.low: must not exceed {where}.high ({self.low} > {self.high})")

    def values(self) -> list[int]:
        return list(self.choices) if self.choices is not None else list(range(self.low, self.high + 1))


@dataclass
class SweepConfig(TrialPlacement):
    trials: int = opt(8, "Optuna trials (Tune samples)", ge=1, le=100000)
    concurrency: int = opt(2, "trials running at once (ConcurrencyLimiter)", ge=1, le=1024)
    sampler: Literal["tpe", "random", "gp"] = opt("tpe", "Optuna sampler: tpe, random or gp (seeded by sweep.seed)")
    startup_trials: int | None = opt(None, "tpe, gp: random trials before the sampler models the results; null: a "
                                     "third of sweep.trials, at least 2 and at most 10 (Optuna's own default)", ge=1)
    scheduler: Literal["asha", "none"] = opt("asha", "asha stops weak trials early on the per-epoch metric")
    grace_period: float = opt(1.0, "asha: compute (plain epochs; epochs under compute.unit: epochs) before a trial "
                              "can be stopped", gt=0)
    reduction_factor: float = opt(2.0, "asha: reduction factor", gt=1)
    epochs: int = opt(5, "training epochs of each trial under compute.unit: epochs (the other units train as many "
                      "epochs as sweep.budget buys)", ge=1, le=100000)
    budget: float = opt(12.0, "compute budget of each trial in plain-training epochs (compute.unit seconds or flops): "
                        "a trial trains as many epochs as that buys at its own measured cost, so a cheap configuration "
                        "trains longer than a costly one; ASHA's rungs are on this compute", gt=0, le=1e6)
    metric: Literal["val_top1", "val_loss"] = opt("val_top1", "the base model's val metric that the sweep optimises")
    largest: Literal["searched", "fixed"] = opt(
        "searched", "searched: the SPOS a* of the trial's (r, s) grid is the largest augmented model; "
        "fixed: plain NetAug (every layer at r)")
    num_paths: int = opt(8, "paths each trial's SPOS search evaluates on its (r, s) grid", ge=1)
    seed: int = opt(0, "seed of the Optuna sampler", ge=0)
    r: FloatRange = field(default_factory=lambda: FloatRange(1.5, 3.0, False),
                          metadata={"doc": "range of r, the width augmentation factor (>= 1)"})
    s: IntRange = field(default_factory=lambda: IntRange(1, 3, None),
                        metadata={"doc": "range (or choices) of s, the diversity factor (>= 1)"})
    aug_loss_weight: FloatRange = field(default_factory=lambda: FloatRange(0.25, 2.0, True),
                                        metadata={"doc": "range of alpha"})
    lambda_kd: FloatRange = field(default_factory=lambda: FloatRange(0.25, 4.0, True),
                                  metadata={"doc": "range of lambda_KD"})
    share_fraction: FloatRange | None = opt(None, "optional range of sharing.share_fraction (turns sharing on)")
    aug_every: IntRange | None = opt(None, "optional range (or choices) of netaug.aug_every")
    aug_fraction: FloatRange | None = opt(None, "optional range of netaug.aug_fraction")
    macs_limit: FloatRange | None = opt(None, "optional range of search.macs_limit: each trial's a* is searched under "
                                        "its own MACs limit (a multiple of the base's; a cheaper a* trains more "
                                        "epochs at equal compute)")
    reparam_k: IntRange | None = opt(None, "optional range (or choices) of reparam.k, for the trials of mode reparam")
    mode: list[Literal["baseline", "netaug", "netaug_kd", "netaug_rkd", "reparam"]] | None = opt(
        None, "training modes swept as a choice (baseline included, so the sweep can find that plain training is "
        "best at its budget; reparam, so it can find that re-parameterization is); null: netaug_rkd only")

    def check(self) -> None:
        if self.r.low < 1:
            raise UserError(f"sweep.r.low: r must be >= 1, got {self.r.low:g}")
        if self.r.high > 16:
            raise UserError(f"sweep.r.high: r must be <= 16, got {self.r.high:g}")
        if min(self.s.values()) < 1:
            raise UserError(f"sweep.s: s must be >= 1, got {min(self.s.values())}")
        for name in ("aug_loss_weight", "lambda_kd"):
            if getattr(self, name).low < 0:
                raise UserError(f"sweep.{name}.low: must be >= 0, got {getattr(self, name).low:g}")
        if self.share_fraction is not None and not 0 <= self.share_fraction.low <= self.share_fraction.high <= 1:
            raise UserError("sweep.share_fraction: the range must lie within [0, 1]")
        if self.aug_every is not None and min(self.aug_every.values()) < 1:
            raise UserError(f"sweep.aug_every: must be >= 1, got {min(self.aug_every.values())}")
        if self.reparam_k is not None and min(self.reparam_k.values()) < 0:
            raise UserError(f"sweep.reparam_k: must be >= 0, got {min(self.reparam_k.values())}")
        if self.aug_fraction is not None and not 0 < self.aug_fraction.low <= self.aug_fraction.high <= 1:
            raise UserError("sweep.aug_fraction: the range must lie within (0, 1]")
        if self.macs_limit is not None and self.macs_limit.low < 1:
            raise UserError(f"sweep.macs_limit.low: a MACs limit is a multiple of the base's MACs, >= 1, got "
                            f"{self.macs_limit.low:g}")

    def modes(self) -> list[str]:
        return list(dict.fromkeys(self.mode)) if self.mode else ["netaug_rkd"]

    def searches_largest(self) -> bool:
        """Whether trials search their a* on the supernet: `largest: searched` and a swept mode that augments."""
        return self.largest == "searched" and any(m not in PLAIN_MODES for m in self.modes())

    def n_startup_trials(self) -> int:
        """Random trials before TPE or GP starts modelling (sweep.startup_trials, or its default)."""
        return self.startup_trials if self.startup_trials is not None else max(2, min(10, self.trials // 3))


@dataclass
class FinalConfig(TrialPlacement):
    """Stage 4: retrain the sweep's winner from scratch against plain training, paired over seeds."""

    arms: list[Literal["winner", "baseline", "netaug_fixed", "baseline_equal", "reparam", "baseline_matched"]] = opt(
        ["winner", "baseline", "netaug_fixed", "baseline_equal"],
        "arms retrained: winner (best sweep trial: its mode, parameters and a*), baseline (plain training for "
        "final.epochs), netaug_fixed (plain NetAug at the winner's r, s and alpha, or the best NetAug trial's when "
        "the winner is plain training or reparam, every layer at r), baseline_equal (plain "
        "training for as many epochs as the winner's compute buys, by compute.unit), reparam "
        "(re-parameterized training with the `reparam` section, folded into the base at export), baseline_matched "
        "(plain training of as many epochs as each other arm that final.budget gives its own epochs, one arm "
        "baseline_e<N> per count: their partners in the answer at equal epochs)")
    seeds: int = opt(2, "seeds per arm: training.seed, training.seed + 1, ...; one Tune trial per arm and seed",
                     ge=1, le=1000)
    epochs: int | None = opt(None, "training epochs of every final trial; null: training.epochs", ge=1, le=100000)
    budget: float | None = opt(
        None, "compute budget in plain-training epochs (compute.unit seconds or flops): winner, netaug_fixed and "
        "reparam train as many epochs as it buys, baseline_equal exactly this many (add baseline_matched to final.arms "
        "for an answer at equal epochs too); null: the winner's compute at final.epochs",
        gt=0, le=1e6)
    train_eval_size: int = opt(
        2000, "un-augmented training images (a fixed subset, the same for every arm and seed) scored each epoch "
        "as train_top1", ge=1)
    confidence: float = opt(0.95, "confidence level of the paired intervals", gt=0, lt=1)
    eval_every: int = opt(
        1, "score val and the train subset after every this many epochs and after the last one; evaluation is not "
        "training compute, so a larger value saves wall time only (on a small training split, most of it)",
        ge=1, le=100000)

    def check(self) -> None:
        if len(set(self.arms)) != len(self.arms):
            raise UserError(f"final.arms: each arm at most once, got {self.arms}")


@dataclass
class ComputeConfig:
    """How the sweep and the final stage measure cost, so that recipes are compared at equal compute."""

    unit: Literal["seconds", "flops", "epochs"] = opt(
        "seconds", "what equal compute means: seconds (training steps timed on this machine, round-robin on the same "
        "batches before each trial and before the final stage), flops (forward + backward FLOPs of every pass a "
        "step runs, counted) or epochs (every recipe gets the same epochs: the comparison before issue 37)")
    calibration_steps: int = opt(8, "timed steps per recipe and phase in a calibration (after the warm-up steps)",
                                 ge=1, le=10000)
    calibration_warmup: int = opt(2, "untimed steps per recipe before a calibration", ge=0, le=1000)


TFLITE_PACKAGES = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro")  # the `tflite` extra


@dataclass
class DeployConfig:
    """The int8 deliverable: post-training quantization of every final model, optional QAT and TFLite."""

    int8: bool = opt(True, "quantize every final model to int8 with onnxruntime (QDQ, per-channel symmetric "
                     "int8 weights, int8 activations) and score it on val and test")
    calib_images: int = opt(256, "un-augmented training images (drawn by data.split_seed) that calibrate the int8 "
                            "activation ranges; never val or test", ge=1)
    zero_dead_inputs: bool = opt(True, "before quantizing, set to 0 the weights that read a channel which is 0 "
                                 "on every calibration image (they multiply 0, but would set their output channel's "
                                 "int8 scale; docs/deploy.md)")
    qat_epochs: int = opt(0, "quantization-aware fine-tuning epochs (torch.ao FX QAT) when PTQ loses more than "
                          "qat_threshold points of val top-1; 0: off", ge=0, le=1000)
    qat_threshold: float = opt(0.5, "points of val top-1 that PTQ may lose before QAT runs", ge=0, le=100)
    qat_lr: float | None = opt(None, "peak learning rate of QAT (cosine, no warm-up); null: training.lr / 100",
                               gt=0, le=10)
    tflite: bool = opt(False, "also write an int8 .tflite of the delivered model and run it on TensorFlow Lite "
                       "Micro's interpreter (needs the `tflite` extra: pip install -e '.[tflite]')")

    def check(self) -> None:
        missing = [p for p in TFLITE_PACKAGES if importlib.util.find_spec(p) is None] if self.tflite else []
        if missing:
            raise UserError(f"deploy.tflite: needs {', '.join(missing)}, not installed here "
                            "(pip install -e '.[tflite]', or set deploy.tflite false)")


@dataclass
class SpaceConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    netaug: NetAugConfig = field(default_factory=NetAugConfig)
    rkd: RKDConfig = field(default_factory=RKDConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    reparam: ReparamConfig = field(default_factory=ReparamConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def check(self) -> None:
        if self.final.budget is not None and self.compute.unit == "epochs":
            raise UserError("final.budget: a compute budget needs compute.unit seconds or flops (epochs: use "
                            "final.epochs)")
        if self.training.mode == "reparam" and self.sharing.enabled:
            raise UserError("sharing.enabled: share-then-unshare needs a NetAug mode, not reparam")
        if self.training.mode == "kd" and self.rkd.teacher != "max":
            raise UserError(f"rkd.teacher: {self.rkd.teacher} needs a NetAug mode (netaug_kd, netaug_rkd); kd trains "
                            "no augmented sub-network, so its teacher must be max")
        if self.search.r is not None and self.search.r > self.r_max():
            raise UserError(f"search.r: must not exceed the supernet's r_max {self.r_max():g}, got {self.search.r:g}")
        if self.netaug.expand_r is not None and self.netaug.expand_r > self.supernet.e_max:
            raise UserError(f"netaug.expand_r: must not exceed supernet.e_max={self.supernet.e_max:g} (the SPOS "
                            f"supernet holds no wider middle), got {self.netaug.expand_r:g}")
        if self.sweep.largest == "searched" and self.sweep.r.high > self.r_max():
            raise UserError(f"sweep.r.high: must not exceed supernet.r_max={self.r_max():g}, "
                            f"got {self.sweep.r.high:g}")

    def r_max(self) -> float:
        """The supernet's widest multiplier: supernet.r_max, or the widest r of the sweep."""
        return self.supernet.r_max if self.supernet.r_max is not None else self.sweep.r.high

    def search_grid(self) -> tuple[float, int]:
        """(r, s) of the SPOS search: search.r/s, defaulting to netaug.r/s (checked against the supernet)."""
        if self.search.r is None and self.netaug.r > self.r_max():
            raise UserError(f"search.r: null takes netaug.r={self.netaug.r:g}, above the supernet's r_max "
                            f"{self.r_max():g}; set search.r or supernet.r_max")
        return (self.search.r if self.search.r is not None else self.netaug.r,
                self.search.s if self.search.s is not None else self.netaug.s)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation engine


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; return it (ints widen to float). Raise UserError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError:
                pass
        raise UserError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{key}: must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list) or not value:
            raise UserError(f"{key}: expected a non-empty list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError(f"{key}: expected a mapping of names to values, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"schema type {tp!r} of {key} is not supported")  # a bug in the schema itself


def _check_range(value: Any, meta: dict, key: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    rules = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
             "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for name, (ok, sign) in rules.items():
        if name in meta and not ok(value, meta[name]):
            raise UserError(f"{key}: must be {sign} {meta[name]}, got {value!r}")


def _nested_dataclass(tp: Any) -> tuple[type | None, bool]:
    """(the dataclass of a section-typed annotation, whether the section may be null)."""
    if dataclasses.is_dataclass(tp):
        return tp, False
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0], True
    return None, False


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def from_dict(cls: type, data: Any, prefix: str = "", defaults: dict | None = None) -> Any:
    """Build dataclass `cls` from a plain mapping, validating every key against the schema.

    `defaults` (a plain mapping) replaces the class defaults of keys that `data` leaves out: a
    section's own defaults, e.g. the range of `sweep.r` differs from that of `sweep.lambda_kd`.
    """
    where = prefix.rstrip(".") or "space file"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise UserError(f"{prefix}{key}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        section, nullable = _nested_dataclass(tp)
        if section is not None:
            default = defaults[name] if defaults and name in defaults else _field_default(f)
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            given = name in data
            if nullable and ((given and data[name] is None) or (not given and default is None)):
                values[name] = None
                continue
            if given and data[name] is None:
                raise UserError(f"{key}: expected a mapping, got null")
            values[name] = from_dict(section, data.get(name), key + ".", default)
            continue
        if name not in data:
            if defaults and name in defaults:
                values[name] = defaults[name]
            continue
        value = _coerce(data[name], tp, key)
        _check_range(value, f.metadata, key)
        values[name] = value
    obj = cls(**values)
    if hasattr(obj, "check_at"):
        obj.check_at(prefix.rstrip("."))
    if hasattr(obj, "check"):
        obj.check()
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `section.key=value` (value in YAML syntax) into a key path and a value."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected key=value, for example training.epochs=5")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise UserError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set` overrides to a raw (not yet validated) space dict."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"{'.'.join(path[: i + 1])}: is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_space(path: str | Path | None, overrides: list[str] | None = None) -> SpaceConfig:
    """Read, override and validate a space file. `None` gives the defaults (plus overrides)."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        raw = read_yaml(p, "--space")
        if raw is None:
            raise UserError(f"--space: {p} is empty (no sections); copy spaces/mbv2.yaml to start from the defaults")
        if not isinstance(raw, dict):
            raise UserError(f"{p}: the space file must be a mapping of sections")
    keys = {".".join(parse_override(text)[0]) for text in overrides or []}
    if keys & {"model.spec", "model.module"} and "model.name" not in keys and isinstance(raw.get("model"), dict):
        raw["model"].pop("name", None)  # --set model.module=... replaces the space file's model.name
    raw = apply_overrides(raw, overrides or [])
    return from_dict(SpaceConfig, raw)


# What says where and how a run executes, not what it trains: a resumed run may change these.
EXECUTION_KEYS = ("data.root", "data.workers", "training.device")
EXECUTION_LEAVES = ("resources", "workers", "max_failures")  # of supernet, search, sweep and final


def is_execution_key(key: str) -> bool:
    parts = key.split(".")
    return key in EXECUTION_KEYS or (len(parts) > 1 and parts[0] in ("supernet", "search", "sweep", "final")
                                     and parts[1] in EXECUTION_LEAVES)


def changed_keys(before: dict, after: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, before, after) of every leaf that differs between two plain space mappings, in schema order."""
    out = []
    for name in [*after, *(k for k in before if k not in after)]:
        old, new = before.get(name), after.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            out += changed_keys(old, new, f"{prefix}{name}.")
        elif old != new:
            out.append((f"{prefix}{name}", old, new))
    return out


def _as_today(stored: Any, defaults: Any) -> Any:
    """`stored` in today's schema (`defaults`, a plain space mapping): keys it dropped left out, keys it added
    at their defaults."""
    if not (isinstance(stored, dict) and isinstance(defaults, dict)):
        return stored
    return {k: _as_today(stored[k], v) if k in stored else v for k, v in defaults.items()}


def resume_conflicts(stored: dict, cfg: SpaceConfig) -> list[tuple[str, Any, Any]]:
    """What resuming with `cfg` would change in what a run trains, against the space it ran with (`stored`, its
    space.json); where it executes may change. Keys the schema gained since the run take their defaults; keys it
    dropped are not compared (no value can be given for them)."""
    before = _as_today(stored, json.loads(json.dumps(SpaceConfig().to_dict())))
    after = json.loads(json.dumps(cfg.to_dict()))
    return [c for c in changed_keys(before, after) if not is_execution_key(c[0])]


def describe_schema(cls: type = SpaceConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every leaf key: the source of docs/spaces tables."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        section, nullable = _nested_dataclass(tp)
        if section is not None:
            default = _field_default(f)
            if default is None:  # an optional section: list its keys with the class defaults
                rows.append((f"{prefix}{f.name}", "section or null", None, f.metadata.get("doc", "")))
                rows += describe_schema(section, f"{prefix}{f.name}.")
            else:
                sub = describe_schema(section, f"{prefix}{f.name}.")
                own = dataclasses.asdict(default)
                rows += [(k, t, own.get(k.rsplit(".", 1)[1], d), doc) for k, t, d, doc in sub]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", _type_name(tp), default, f.metadata.get("doc", "")))
    return rows
