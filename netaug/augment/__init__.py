"""NetAug's augmented models: dynamic ops, the weight-sharing twin of a base model, BN recalibration."""

from netaug.augment.network import (
    AugmentedNet,
    SubnetConfig,
    augment,
    recalibrate_bn,
    slice_state_dict,
    spec_for,
)
from netaug.augment.widths import netaug_grids, widen, width_multipliers

__all__ = ["AugmentedNet", "SubnetConfig", "augment", "recalibrate_bn", "slice_state_dict", "spec_for", "widen",
           "netaug_grids", "width_multipliers"]
