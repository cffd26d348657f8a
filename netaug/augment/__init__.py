"""NetAug's augmented models: dynamic ops, the weight-sharing twin of a base model, BN recalibration."""

from netaug.augment.generic import AugmentedModule, ModuleNet, augment_module
from netaug.augment.network import (
    AugmentedNet,
    SubnetConfig,
    augment,
    recalibrate_bn,
    slice_state_dict,
    spec_for,
)
from netaug.augment.widths import netaug_grids, widen, width_multipliers

AUGMENTED = (AugmentedNet, AugmentedModule)  # what `set_active` / `export` / `config` work on

__all__ = ["AUGMENTED", "AugmentedModule", "AugmentedNet", "ModuleNet", "SubnetConfig", "augment", "augment_module",
           "netaug_grids", "recalibrate_bn", "slice_state_dict", "spec_for", "widen", "width_multipliers"]
