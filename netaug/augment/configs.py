"""What every augmented model shares about sub-network configs: validation and the a* ceiling.

A config is ((width multiplier per width group, ...), (expand multiplier per middle group, ...)); the
class using this mixin provides `config(kind, generator)`, `num_width_groups`, `num_expand_groups`,
`width_mults` and `expand_choices(i)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SubnetConfig = tuple[tuple[float, ...], tuple[float, ...]]
ConfigLike = str | SubnetConfig | Sequence


class SubnetConfigs:
    """`normalize` and `set_ceiling`, on top of the model's own `config`."""

    ceiling: SubnetConfig | None

    def normalize(self, config: ConfigLike, generator: torch.Generator | None = None) -> SubnetConfig:
        """Resolve a kind or a (JSON-decoded) config into a validated `SubnetConfig`."""
        if isinstance(config, str):
            return self.config(config, generator)
        try:
            widths, expands = (tuple(float(v) for v in part) for part in config)
        except (TypeError, ValueError):
            raise ValueError(f"not a sub-network config: {config!r}") from None
        if len(widths) != self.num_width_groups or len(expands) != self.num_expand_groups:
            raise ValueError(f"config needs {self.num_width_groups} widths and {self.num_expand_groups} "
                             f"expands, got {len(widths)} and {len(expands)}")
        if any(w < 1 or w > self.width_mults[-1] for w in widths):
            raise ValueError(f"width multipliers must lie in [1, {self.width_mults[-1]}]: {widths}")
        for i, e in enumerate(expands):
            if e < 1 or e > self.expand_choices(i)[-1]:
                raise ValueError(f"expand multiplier {e} of block {i} is outside [1, {self.expand_choices(i)[-1]}]")
        return widths, expands

    def set_ceiling(self, config: ConfigLike | None) -> SubnetConfig | None:
        """Make `config` (e.g. a searched a*) the largest augmented model: "max" returns it, and
        "random"/"min_w" draw each choice only among the multipliers at or below it. None lifts it."""
        self.ceiling = None if config is None else self.normalize(config)
        return self.ceiling
