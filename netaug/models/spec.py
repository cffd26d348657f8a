"""Plain, serialisable descriptions of inverted-residual networks (MobileNetV2 family).

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


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block. `mid_ch=None` is a depthwise-separable block (no expansion)."""

    in_ch: int
    out_ch: int
    mid_ch: int | None
    kernel: int
    stride: int
    residual: bool
    stage: int  # blocks of one stage share their output width (a residual needs in == out)


@dataclass(frozen=True)
class NetSpec:
    """stem conv -> blocks -> 1x1 feature conv -> global pool -> (dropout) -> linear classifier.

    `feature_ch = 0` means no feature conv (MCUNet): the classifier reads the pooled last block."""

    in_channels: int
    stem_ch: int
    stem_stride: int
    blocks: tuple[BlockSpec, ...]
    feature_ch: int
    num_classes: int
    dropout: float = 0.0

    @property
    def embedding_ch(self) -> int:
        """Width of the pooled embedding the classifier reads."""
        return self.feature_ch or self.blocks[-1].out_ch

    @property
    def num_stages(self) -> int:
        return max(b.stage for b in self.blocks) + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> NetSpec:
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
