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


SE_MIN_DIM = 16  # the official DynamicSE's min_dim


def se_width(se_ch: int, mid_ch: int, mid: int, max_mid: int | None = None) -> int:
    """Squeeze channels of an SE layer whose base squeezes `mid_ch` middle channels to `se_ch`, when the
    middle is `mid` wide, in an augmented model whose widest middle there is `max_mid` (None: `mid`).

    The official `DynamicSE` rule: the largest layer squeezes round(max_mid / (mid_ch / se_ch + 1e-10))
    channels, which fixes its reduction max_mid / max_se; a drawn middle width squeezes
    make_divisible(max(mid / reduction, min_dim), 1). min_dim is 16, or the base's squeeze if smaller
    (a spec file's tiny SE), and the base itself always keeps its own `se_ch`."""
    if mid == mid_ch:
        return se_ch
    floor = min(SE_MIN_DIM, se_ch)
    max_mid = mid if max_mid is None else max_mid
    max_se = max(round(max_mid / (mid_ch / se_ch + 1e-10)), floor)
    if mid == max_mid:
        return max_se
    return make_divisible(max(mid / (max_mid / max_se), floor), 1)


def pick_choice(choices: tuple[float, ...], top: float | None, generator) -> float:
    """One of `choices` (those at or below `top`, a ceiling such as a searched a*; 1 if none), drawn
    uniformly from `generator`; a single option draws nothing, so one seed gives the official sequence."""
    import torch

    if top is not None:
        choices = tuple(c for c in choices if c <= top) or (1.0,)
    if len(choices) == 1:
        return choices[0]
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


def netaug_grids(cfg: NetAugConfig) -> tuple[list[float], list[float]]:
    """(width multipliers, expand factors) of NetAug's augmented model. Expands: expand_s + 1 points
    up to expand_r (null: the width grid); [1] when expand augmentation is off."""
    widths = width_multipliers(cfg.r, cfg.s)
    if not cfg.augment_expand:
        return widths, [1.0]
    return widths, width_multipliers(cfg.expand_r if cfg.expand_r is not None else cfg.r,
                                     cfg.expand_s if cfg.expand_s is not None else cfg.s)
