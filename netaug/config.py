"""The one typed schema of a space file (spaces/*.yaml), with validation and `--set` overrides.

Every section is a dataclass; each field carries its range in `metadata`. Loading checks unknown
keys, types and ranges and raises `UserError` with the dotted key in the message, so a CLI exits 2
with one line before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from netaug.errors import UserError

DATASETS = ("digits", "idx", "fashion-mnist", "cifar10", "imagefolder")
MODELS = ("mobilenetv2_tiny", "mobilenetv2", "proxylessnas_mobile")
MODES = ("baseline", "kd", "netaug", "netaug_kd", "netaug_rkd")
TEACHER_MODES = ("kd", "netaug_kd", "netaug_rkd")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def opt(default: Any, doc: str, **rules: Any) -> Any:
    """A schema field: its default, a one-line doc, and range rules (ge, gt, le, lt)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **rules})
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass
class DataConfig:
    name: Literal["digits", "idx", "fashion-mnist", "cifar10", "imagefolder"] = opt(
        "digits", "dataset: digits (bundled), idx, fashion-mnist, cifar10 or imagefolder")
    root: str | None = opt(None, "dataset folder (not used by digits; fashion-mnist has a default)")
    resolution: int = opt(16, "input side in pixels; images are resized to it", ge=8, le=512)
    val_fraction: float = opt(0.1, "fraction of the training data held out for validation", gt=0, lt=1)
    test_fraction: float = opt(0.2, "digits only: fraction held out for test", gt=0, lt=1)
    split_seed: int = opt(0, "seed of the train/val/test split", ge=0)
    subset: int | None = opt(None, "keep at most this many training images, drawn by split_seed", ge=1)
    augment: bool = opt(True, "padded random crop (and flip where it makes sense) on training batches")
    flip: bool | None = opt(None, "horizontal flip; null picks per dataset (off for digits and IDX)")

    def check(self) -> None:
        if self.val_fraction + (self.test_fraction if self.name == "digits" else 0.0) >= 1.0:
            raise UserError("data.val_fraction: val_fraction + test_fraction must be below 1")
        if self.name == "fashion-mnist" and self.root is None:
            self.root = FASHION_MNIST_ROOT
        if self.name != "digits":
            if self.root is None:
                raise UserError(f"data.root: dataset '{self.name}' needs a root folder")
            if not Path(self.root).expanduser().is_dir():
                raise UserError(f"data.root: no such directory: {self.root}")


@dataclass
class ModelConfig:
    name: Literal["mobilenetv2_tiny", "mobilenetv2", "proxylessnas_mobile"] = opt(
        "mobilenetv2_tiny", "base model: mobilenetv2_tiny, mobilenetv2 or proxylessnas_mobile")
    width_mult: float = opt(1.0, "width multiplier (mobilenetv2, proxylessnas_mobile)", gt=0, le=4)
    small_input: bool | None = opt(
        None, "keep stem and first stage at stride 1; null means automatic (input <= 64 px)")
    dropout: float = opt(0.0, "dropout before the classifier", ge=0, lt=1)

    def check(self) -> None:
        if self.name == "mobilenetv2_tiny" and self.width_mult != 1.0:
            raise UserError("model.width_mult: mobilenetv2_tiny has a fixed width (0.35); leave it at 1.0")


@dataclass
class TrainingConfig:
    mode: Literal["baseline", "kd", "netaug", "netaug_kd", "netaug_rkd"] = opt(
        "netaug", "baseline, kd (online KD from the largest augmented model), netaug, netaug_kd or netaug_rkd")
    epochs: int = opt(15, "training epochs", ge=1, le=100000)
    batch_size: int = opt(64, "training batch size", ge=1)
    eval_batch_size: int = opt(512, "evaluation batch size", ge=1)
    lr: float = opt(0.05, "peak learning rate", gt=0, le=10)
    momentum: float = opt(0.9, "SGD momentum (Nesterov)", ge=0, lt=1)
    nesterov: bool = opt(True, "Nesterov momentum")
    weight_decay: float = opt(5e-5, "weight decay (not applied to biases or BatchNorm)", ge=0, lt=1)
    warmup_epochs: float = opt(1.0, "linear warm-up length in epochs, then cosine", ge=0)
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
    augment_expand: bool = opt(True, "also augment the expand (middle) width of each block on the same grid")
    aug_loss_weight: float = opt(1.0, "alpha: weight of the augmented models' loss", ge=0)
    aug_samples: int = opt(1, "augmented models sampled per step", ge=1, le=16)
    min_w_fraction: float = opt(
        0.1, "final fraction of epochs in min_w mode (base widths, random expand)", ge=0, le=1)
    sort_channels: bool = opt(True, "sort the augmented middle channels by L1 importance each epoch")


@dataclass
class RKDConfig:
    lambda_kd: float = opt(1.0, "lambda_KD: weight of the distillation term (RKD, or Hinton KD in kd modes)", ge=0)
    distance_weight: float = opt(1.0, "w_d: weight of distance-wise RKD", ge=0)
    angle_weight: float = opt(2.0, "w_a: weight of angle-wise RKD", ge=0)
    embedding: Literal["features", "logits"] = opt(
        "features", "what RKD compares: penultimate pooled features or logits")
    temperature: float = opt(4.0, "temperature T of Hinton KD (kd, netaug_kd)", gt=0)


@dataclass
class SharingConfig:
    enabled: bool = opt(False, "share-then-unshare the weights of identical consecutive blocks")
    share_fraction: float = opt(0.25, "fraction of all steps during which only the shared weights train",
                                ge=0, le=1)


@dataclass
class SpaceConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    netaug: NetAugConfig = field(default_factory=NetAugConfig)
    rkd: RKDConfig = field(default_factory=RKDConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation engine


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
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


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, validating every key against the schema."""
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
        if dataclasses.is_dataclass(tp):
            values[name] = from_dict(tp, data.get(name), key + ".")
            continue
        if name not in data:
            continue
        value = _coerce(data[name], tp, key)
        _check_range(value, f.metadata, key)
        values[name] = value
    obj = cls(**values)
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
        if not p.is_file():
            raise UserError(f"--space: no such file: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"{p}:{where} is not valid YAML") from None
        if not isinstance(raw, dict):
            raise UserError(f"{p}: the space file must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    return from_dict(SpaceConfig, raw)


def describe_schema(cls: type = SpaceConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every leaf key: the source of docs/spaces tables."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_schema(tp, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", _type_name(tp), default, f.metadata.get("doc", "")))
    return rows
