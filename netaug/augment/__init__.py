"""NetAug's augmented models: one torch.fx augmenter for the built-in networks and a user's own module,
BN recalibration, and the width grids."""

from netaug.augment.bn import recalibrate_bn
from netaug.augment.configs import ConfigLike, SubnetConfig
from netaug.augment.generic import AugmentedModule, ModuleNet, augment, augment_module
from netaug.augment.protocol import AugmentedModel
from netaug.augment.widths import netaug_grids, widen, width_multipliers

__all__ = ["AugmentedModel", "AugmentedModule", "ConfigLike", "ModuleNet", "SubnetConfig", "augment",
           "augment_module", "netaug_grids", "recalibrate_bn", "widen", "width_multipliers"]
