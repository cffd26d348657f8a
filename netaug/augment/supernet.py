"""The SPOS supernet's model: the augmented model over every per-stage width up to r_max and every
per-block expand up to e_max. It lives below the trainer (which trains it) and netaug.spos (which
searches it), so that neither imports the other."""

from __future__ import annotations

import torch

from netaug.augment.generic import AugmentedModule, augment
from netaug.augment.widths import width_multipliers
from netaug.config import SpaceConfig


def build_supernet(cfg: SpaceConfig, base: torch.nn.Module) -> AugmentedModule:
    """Per-stage widths on the grid 1..r_max and per-block expands on 1..e_max (s + 1 points each)."""
    sn = cfg.supernet
    return augment(base, width_multipliers(cfg.r_max(), sn.s), width_multipliers(sn.e_max, sn.s),
                   cfg.netaug.mid_width, cfg.netaug.init, cfg.model.freeze or ())
