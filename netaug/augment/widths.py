"""From NetAug's (r, s) to width multipliers, and from multipliers to channel counts."""

from __future__ import annotations

from netaug.models.spec import make_divisible


def width_multipliers(r: float, s: int) -> list[float]:
    """s + 1 multipliers linearly spaced from 1 to r (r = 3, s = 2 gives [1, 2, 3]); r = 1 gives [1]."""
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    if s < 1:
        raise ValueError(f"s must be >= 1, got {s}")
    if r == 1:
        return [1.0]
    return [round(1 + (r - 1) * i / s, 6) for i in range(s + 1)]


def widen(channels: int, mult: float, divisor: int = 8) -> int:
    """Channels of a layer whose base width is `channels`, augmented by `mult` (never below the base)."""
    if mult == 1:
        return channels
    return max(channels, make_divisible(channels * mult, divisor))
