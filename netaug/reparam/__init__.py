"""Training-time structural re-parameterization: extra conv + BN branches while training, folded exactly into
the model's own conv and BN at export (RepVGG, Diverse Branch Block, MobileOne)."""

from netaug.reparam.branches import RepConv
from netaug.reparam.model import RepModule, conv_bn_pairs, reparameterize

__all__ = ["RepConv", "RepModule", "conv_bn_pairs", "reparameterize"]
