"""Plain, serialisable descriptions of inverted-residual networks (MobileNetV2/V3 family).

A `NetSpec` fully determines a network's structure. Base models, augmented models and the static
networks exported from a sub-network are all built from one, so their state_dict keys line up and
a sub-network's weights are the leading slices of the augmented weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to a multiple of `divisor`, never going more than 10% below it."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


ACTIVATION_NAMES = ("relu", "relu6", "h_swish", "swish")


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block. `mid_ch=None` is a depthwise-separable block (no expansion).

    `stage` is the block's width group: blocks of one stage share their output width (a residual
    needs in == out); -1 joins the stem's group (MobileNetV3's residual first block). `se_ch` is the
    squeeze width of a squeeze-and-excitation layer after the depthwise conv (None: no SE); `act`
    the activation of the expand and depthwise convs."""

    in_ch: int
    out_ch: int
    mid_ch: int | None
    kernel: int
    stride: int
    residual: bool
    stage: int
    se_ch: int | None = None
    act: str = "relu6"


@dataclass(frozen=True)
class NetSpec:
    """stem conv -> blocks -> 1x1 feature conv -> global pool -> [linear + act] -> (dropout) -> classifier.

    `feature_ch = 0` means no feature conv (MCUNet): the classifier reads the pooled last block.
    `head_ch > 0` adds MobileNetV3's post-pool layer (linear with bias, then `head_act`)."""

    in_channels: int
    stem_ch: int
    stem_stride: int
    blocks: tuple[BlockSpec, ...]
    feature_ch: int
    num_classes: int
    dropout: float = 0.0
    stem_act: str = "relu6"
    head_act: str = "relu6"
    head_ch: int = 0

    @property
    def embedding_ch(self) -> int:
        """Width of the pooled embedding the classifier reads."""
        return self.head_ch or self.feature_ch or self.blocks[-1].out_ch

    @property
    def num_stages(self) -> int:
        return max(max(b.stage for b in self.blocks) + 1, 0)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field ("blocks[3].in_ch: ...")."""
        for name in ("stem_act", "head_act"):
            if getattr(self, name) not in ACTIVATION_NAMES:
                raise ValueError(f"{name}: unknown activation {getattr(self, name)!r} "
                                 f"(known: {', '.join(ACTIVATION_NAMES)})")
        if not self.blocks:
            raise ValueError("blocks: needs at least one block")
        prev_out, prev_stage = self.stem_ch, -1
        for i, b in enumerate(self.blocks):
            where = f"blocks[{i}]"
            if b.in_ch != prev_out:
                raise ValueError(f"{where}.in_ch: {b.in_ch} does not match the {'stem' if i == 0 else 'previous block'}"
                                 f"'s output width {prev_out}")
            if b.act not in ACTIVATION_NAMES:
                raise ValueError(f"{where}.act: unknown activation {b.act!r} (known: {', '.join(ACTIVATION_NAMES)})")
            if b.kernel < 1 or b.kernel % 2 == 0:
                raise ValueError(f"{where}.kernel: must be odd and positive, got {b.kernel}")
            if b.stride not in (1, 2):
                raise ValueError(f"{where}.stride: must be 1 or 2, got {b.stride}")
            if min(b.out_ch, b.mid_ch or 1, b.se_ch or 1) < 1:
                raise ValueError(f"{where}: channel counts must be positive")
            if b.residual:
                if b.stride != 1:
                    raise ValueError(f"{where}.residual: a residual block needs stride 1, got stride {b.stride}")
                if b.in_ch != b.out_ch:
                    raise ValueError(f"{where}.residual: a residual block needs in == out, got {b.in_ch} -> {b.out_ch}")
                if b.stage != prev_stage:
                    raise ValueError(f"{where}.stage: a residual block shares its input's width group "
                                     f"({prev_stage}), got {b.stage}")
            elif b.stage < prev_stage:
                raise ValueError(f"{where}.stage: stages must not decrease ({prev_stage} -> {b.stage})")
            prev_out, prev_stage = b.out_ch, b.stage

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> NetSpec:  # specs saved before SE/activations load with their defaults
        blocks = tuple(BlockSpec(**b) for b in d["blocks"])
        return NetSpec(**{**d, "blocks": blocks})


def stage_blocks(in_ch: int, out_ch: int, count: int, stride: int, stage: int,
                 expands: list[float], kernels: list[int], divisor: int = 8) -> list[BlockSpec]:
    """`count` blocks of one stage; only the first strides, later ones are residual.

    An expand ratio of 1 gives a depthwise-separable block (no 1x1 expansion conv).
    """
    blocks = []
    for i in range(count):
        s = stride if i == 0 else 1
        mid = None if expands[i] == 1 else make_divisible(round(expands[i] * in_ch), divisor)
        blocks.append(BlockSpec(in_ch, out_ch, mid, kernels[i], s, residual=i > 0, stage=stage))
        in_ch = out_ch
    return blocks
