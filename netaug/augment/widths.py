"""From NetAug's (r, s) to width multipliers, and from multipliers to channel counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netaug.models.spec import make_divisible

if TYPE_CHECKING:
    from netaug.config import NetAugConfig


def width_multipliers(r: float, s: int) -> list[float]:
    """s + 1 multipliers linearly spaced from 1 to r (r = 3, s = 2 gives [1, 2, 3]); r = 1 gives [1]."""
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    if s < 1:
        raise ValueError(f"s must be >= 1, got {s}")
    if r == 1:
        return [1.0]
    return [round(1 + (r - 1) * i / s, 6) for i in range(s + 1)]


def widen(channels: int, mult: float, divisor: int = 1) -> int:
    """Channels of a layer whose base width is `channels`, augmented by `mult` (never below the base).

    Rounded to the nearest integer, as the official NetAug (`make_divisible(width, 1)`): augmented
    widths exist only during training, so they need no hardware-friendly multiple of 8."""
    if mult == 1:
        return channels
    return max(channels, make_divisible(channels * mult, divisor))


def netaug_grids(cfg: NetAugConfig) -> tuple[list[float], list[float]]:
    """(width multipliers, expand factors) of NetAug's augmented model. Expands: expand_s + 1 points
    up to expand_r (null: the width grid); [1] when expand augmentation is off."""
    widths = width_multipliers(cfg.r, cfg.s)
    if not cfg.augment_expand:
        return widths, [1.0]
    return widths, width_multipliers(cfg.expand_r if cfg.expand_r is not None else cfg.r,
                                     cfg.expand_s if cfg.expand_s is not None else cfg.s)
