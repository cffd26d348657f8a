"""The augmented twin of a base model: one weight-sharing network whose "min" sub-network is the base.

Width groups: the stem, each stage (blocks of a stage share their output width, so residuals keep
input width equal to output width), the feature conv, and MobileNetV3's post-pool head layer when
the base has one. Each middle (expanded) width of a block
is augmented on its own. A sub-network configuration is a plain, hashable, JSON-serialisable value

    ((width multiplier per width group, ...), (expand multiplier per block, ...))

and multiplier 1 everywhere is the base model. Depthwise-separable blocks have no middle width:
their expand multiplier is always 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from netaug.augment.configs import ConfigLike, SubnetConfig, SubnetConfigs
from netaug.augment.permute import permute_all, ranking
from netaug.augment.widths import pick_choice, se_width, widen
from netaug.models.layers import Ops
from netaug.models.network import InvertedResidualNet, init_weights
from netaug.models.spec import NetSpec
from netaug.models.weight_sharing import plain_state_dict
from reference.twin_ops import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicDepthwiseConv2d,
    DynamicLinear,
    dynamic_pw_bias,
)

DYNAMIC_OPS = Ops(conv=DynamicConv2d, dwconv=DynamicDepthwiseConv2d, bn=DynamicBatchNorm2d, linear=DynamicLinear,
                  pw_bias=dynamic_pw_bias)


MID_WIDTHS = ("input", "block")
SORT_SCOPES = ("all", "augmented")
SORT_MOMENTUM = ("follow", "stay")


def spec_for(base: NetSpec, config: SubnetConfig, mid_width: str = "input",
             max_mids: Sequence[int | None] | None = None) -> NetSpec:
    """The static structure of sub-network `config` of the augmented twin of `base`.

    A block's middle width follows `mid_width`: "input" (the official NetAug) scales the base's
    middle width by the block's active input width over its base input width, times the expand
    factor, so width and expand augmentation multiply; "block" scales it by the expand factor alone.
    An SE squeeze follows its middle width by the reduction of the augmented model's widest middle
    there, `max_mids` (per block; None: this config is the widest), as the official `DynamicSE`.
    """
    if mid_width not in MID_WIDTHS:
        raise ValueError(f"mid_width must be one of {MID_WIDTHS}, got {mid_width!r}")
    widths, expands = config
    stem = widen(base.stem_ch, widths[0])
    blocks, in_ch = [], stem
    for i, (b, e) in enumerate(zip(base.blocks, expands)):
        out = widen(b.out_ch, widths[b.stage + 1])
        factor = e * in_ch / b.in_ch if mid_width == "input" else e
        mid = None if b.mid_ch is None else widen(b.mid_ch, factor)
        se = None if b.se_ch is None else se_width(b.se_ch, b.mid_ch, mid, None if max_mids is None else max_mids[i])
        blocks.append(dataclasses.replace(b, in_ch=in_ch, out_ch=out, mid_ch=mid, se_ch=se))
        in_ch = out
    feature_group = base.num_stages + 1
    feature = widen(base.feature_ch, widths[feature_group]) if base.feature_ch else 0
    head = widen(base.head_ch, widths[feature_group + 1]) if base.head_ch else 0
    return dataclasses.replace(base, stem_ch=stem, blocks=tuple(blocks), feature_ch=feature, head_ch=head)


def slice_state_dict(full: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For each key of `target`, the leading slice of `full[key]` with target's shape (copied)."""
    out = {}
    for key, t in target.items():
        src = full[key]
        out[key] = src[tuple(slice(0, n) for n in t.shape)].clone() if t.dim() else src.clone()
    return out


class AugmentedNet(SubnetConfigs, InvertedResidualNet):
    """The largest augmented model; `set_active` picks a sub-network, `export` gives a static base."""

    def __init__(self, base_spec: NetSpec, base_cls: type[InvertedResidualNet],
                 width_mults: Sequence[float], expand_mults: Sequence[float], mid_width: str = "input") -> None:
        self.base_spec = base_spec
        self.mid_width = mid_width
        self.base_cls = base_cls
        self.width_mults = tuple(sorted({float(m) for m in width_mults}))
        self.expand_mults = tuple(sorted({float(m) for m in expand_mults}))
        if not self.width_mults or self.width_mults[0] != 1.0 or not self.expand_mults or self.expand_mults[0] != 1.0:
            raise ValueError("width_mults and expand_mults must start at 1 (the base model)")
        self.num_width_groups = base_spec.num_stages + 2 + (1 if base_spec.head_ch else 0)
        self.ceiling: SubnetConfig | None = None
        self.max_mids: tuple[int | None, ...] | None = None  # the widest middles, fixing each SE's reduction
        widest = self.spec_of(self.config("max"))
        self.max_mids = tuple(b.mid_ch for b in widest.blocks)
        super().__init__(widest, DYNAMIC_OPS)
        self.active: SubnetConfig = self.config("min")
        self.set_active("min")

    # ------------------------------------------------------------------ configurations
    def spec_of(self, config: SubnetConfig) -> NetSpec:
        """The static structure of sub-network `config`."""
        return spec_for(self.base_spec, config, self.mid_width, self.max_mids)

    @property
    def num_expand_groups(self) -> int:
        return len(self.base_spec.blocks)

    def expand_choices(self, block: int) -> tuple[float, ...]:
        return (1.0,) if self.base_spec.blocks[block].mid_ch is None else self.expand_mults

    def config(self, kind: str, generator: torch.Generator | None = None) -> SubnetConfig:
        """"min" (the base), "max", "random" (uniform per group and block) or "min_w" (base widths,
        random expands).

        Draws follow the official code's order: the stem's width, then block by block the width of
        a stage at its first block and the block's expand factor, then the feature conv's width (and
        the head layer's). A block of the stem's group (stage -1) draws no width. A choice with one
        option draws nothing, so one seed gives the official sequence."""
        spec = self.base_spec
        n_blocks = len(spec.blocks)
        top_w, top_e = self.ceiling if self.ceiling is not None else ((None,) * self.num_width_groups,
                                                                        (None,) * n_blocks)
        if kind == "min":
            return (1.0,) * self.num_width_groups, (1.0,) * n_blocks
        if kind == "max":
            if self.ceiling is not None:
                return self.ceiling
            return ((self.width_mults[-1],) * self.num_width_groups,
                    tuple(self.expand_choices(i)[-1] for i in range(n_blocks)))
        if kind not in ("random", "min_w"):
            raise ValueError(f"unknown sub-network kind {kind!r} (min, max, random, min_w, or a config)")

        def pick(choices: tuple[float, ...], top: float | None) -> float:
            return pick_choice(choices, top, generator)

        draw_widths = kind == "random"
        widths = [1.0] * self.num_width_groups
        expands = []
        if draw_widths:
            widths[0] = pick(self.width_mults, top_w[0])
        for i, b in enumerate(spec.blocks):
            if draw_widths and b.stage >= 0 and (i == 0 or b.stage != spec.blocks[i - 1].stage):
                widths[b.stage + 1] = pick(self.width_mults, top_w[b.stage + 1])
            expands.append(pick(self.expand_choices(i), top_e[i]))
        feature_group = spec.num_stages + 1
        if draw_widths and spec.feature_ch:
            widths[feature_group] = pick(self.width_mults, top_w[feature_group])
        if draw_widths and spec.head_ch:
            widths[feature_group + 1] = pick(self.width_mults, top_w[feature_group + 1])
        return tuple(widths), tuple(expands)

    def set_active(self, config: ConfigLike = "min", generator: torch.Generator | None = None) -> SubnetConfig:
        """Activate a sub-network; returns the resolved config (log it: it is plain JSON)."""
        config = self.normalize(config, generator)
        spec = self.spec_of(config)
        self.stem.conv.active_out = spec.stem_ch
        for block, b in zip(self.blocks, spec.blocks):
            if block.expand is not None:
                block.expand.conv.active_out = b.mid_ch
            if block.se is not None:
                block.se.reduce.active_out = b.se_ch
                block.se.expand.active_out = b.mid_ch
            block.project.conv.active_out = b.out_ch
        if self.feature_mix is not None:
            self.feature_mix.conv.active_out = spec.feature_ch
        if self.head is not None:
            self.head[0].active_out = spec.head_ch
        self.active = config
        return config

    def active_spec(self) -> NetSpec:
        return self.spec_of(self.active)

    # ------------------------------------------------------------------ export
    def export(self, config: ConfigLike = "min") -> InvertedResidualNet:
        """A plain static network (the base model's class) computing what sub-network `config` computes."""
        spec = self.spec_of(self.normalize(config))
        net = self.base_cls(spec).to(next(self.parameters()).device)
        net.load_state_dict(slice_state_dict(plain_state_dict(self), net.state_dict()))
        return net.train(self.training)

    # ------------------------------------------------------------------ channel sorting
    @torch.no_grad()
    def sort_channels(self, optimizer: torch.optim.Optimizer | None = None, scope: str = "all",
                      momentum: str = "follow") -> None:
        """Reorder each block's middle channels by importance, most important first.

        Importance of a middle channel is the L1 norm of the projection-conv weights that read it.
        scope "all" (the official `sort_channels_inner`) ranks every middle channel, the base's
        included, so an augmented channel the wider models made important can move into the base's
        prefix (the base's function changes); "augmented" ranks only the channels past the base's
        `mid_ch`, so the base is untouched. Every tensor indexed by those channels (expand conv rows,
        both BatchNorms with their running statistics, depthwise filters, SE input columns and output
        rows, projection columns) is permuted alike, so the largest model computes exactly the same
        function. An SE layer's squeeze channels are then sorted the same way, by the L1 norm of the
        SE expand-conv weights that read them (the official `sort_se`; "augmented" keeps the base's
        squeeze prefix in place). momentum "follow"
        permutes the optimizer's per-parameter state (momentum) with its weights; "stay" leaves it
        in the old order, as the official code does (its sort copies `.data` only). Blocks whose
        weights are shared with identical blocks (share-then-unshare) keep their order: one
        permutation cannot suit them all.
        """
        if scope not in SORT_SCOPES:
            raise ValueError(f"scope must be one of {SORT_SCOPES}, got {scope!r}")
        if momentum not in SORT_MOMENTUM:
            raise ValueError(f"momentum must be one of {SORT_MOMENTUM}, got {momentum!r}")
        for block, b in zip(self.blocks, self.base_spec.blocks):
            if block.expand is None or parametrize.is_parametrized(block.expand.conv):
                continue  # no middle channels, or shared with identical blocks (share-then-unshare)
            importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
            perm = ranking(importance, None if scope == "all" else b.mid_ch)
            tensors: list[tuple[torch.Tensor, int]] = [(block.expand.conv.weight, 0),
                                                       (block.depthwise.conv.weight, 0),
                                                       (block.project.conv.weight, 1)]
            for bn in (block.expand.bn, block.depthwise.bn):
                tensors += [(bn.weight, 0), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 0)]
            if block.se is not None:
                tensors += [(block.se.reduce.weight, 1), (block.se.expand.weight, 0), (block.se.expand.bias, 0)]
            permute_all(tensors, perm, optimizer if momentum == "follow" else None)
            if block.se is not None:
                se = block.se
                importance = se.expand.weight.abs().sum(dim=(0, 2, 3))
                squeeze_perm = ranking(importance, None if scope == "all" else b.se_ch)
                permute_all([(se.expand.weight, 1), (se.reduce.weight, 0), (se.reduce.bias, 0)], squeeze_perm,
                             optimizer if momentum == "follow" else None)


def augment(base: nn.Module, width_mults: Sequence[float], expand_mults: Sequence[float] | None = None,
            mid_width: str = "input", init: str = "base", freeze: Sequence[str] = ()) -> AugmentedNet:
    """Build the largest augmented model of `base`, whose "min" sub-network is the base.

    init "base": the base's weights are copied into the leading slices (the extra weights keep the
    fan-out init of the augmented shapes). init "augmented" (the official NetAug): the whole
    augmented model is initialised at once (`init_weights(..., "uniform")`) and the base's own
    weights are not used; the base is its leading slice.
    """
    if init not in ("base", "augmented"):
        raise ValueError(f"init must be 'base' or 'augmented', got {init!r}")
    if not isinstance(base, InvertedResidualNet):  # a user's own module: the generic twin
        from netaug.augment.generic import ModuleNet, augment_module

        if not isinstance(base, ModuleNet):
            raise TypeError("augment takes a built-in network or a ModuleNet; use augment_module for an nn.Module")
        return augment_module(base, width_mults, expand_mults, None, mid_width, init, freeze)
    aug = AugmentedNet(base.spec, type(base), width_mults, expand_mults if expand_mults is not None else [1.0],
                       mid_width)
    device = next(base.parameters()).device
    aug.to(device)
    if init == "augmented":
        init_weights(aug, "uniform")
        return aug.train(base.training)
    own = aug.state_dict()
    base_state = base.state_dict()
    with torch.no_grad():
        for key, value in base_state.items():
            target = own[key]
            if value.dim() == 0:
                target.copy_(value)
            else:
                target[tuple(slice(0, n) for n in value.shape)].copy_(value)
    return aug.train(base.training)
