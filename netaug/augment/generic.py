"""NetAug for any traceable PyTorch model: the augmented twin of a user's own `nn.Module`.

`augment_module(model, width_mults, expand_mults, example)` finds the model's coupled channel
groups (netaug.augment.graph), deep-copies the model and swaps each conv, linear and BatchNorm layer
for a dynamic one holding the widened weights (the user's weights in the leading slices). The twin
runs the user's own forward code; each dynamic layer reads its input width from the tensor and
writes the width its output group has in the active sub-network. The "min" sub-network is the
user's model, and `export("min")` is an instance of the user's class with the user's layers.

Sub-network config: ((width multiplier per width group, ...), (expand multiplier per middle group,
...)). A middle group is an inverted residual's expansion: the channels a 1x1 conv writes for a
depthwise conv (it alone; SE gates aside); every other free group is a width group. With
`mid_width: input` (the official NetAug) a middle group's width also scales with the width of the
group its 1x1 conv reads, so width and expand augmentation multiply as in the built-in networks.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from netaug.augment.configs import ConfigLike, SubnetConfig, SubnetConfigs
from netaug.augment.graph import FIXED, Binding, ChannelGraph, analyse, identical_blocks
from netaug.augment.layers import (
    PREFIX_VIEWED,
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    prefix_view_class,
)
from netaug.augment.permute import permute_all, ranking
from netaug.augment.widths import pick_choice, se_width, widen
from netaug.errors import UserError
from netaug.models.network import InvertedResidualNet, head_layers, init_module
from netaug.models.weight_sharing import plain_state_dict

SORT_SCOPES = ("all", "augmented")
SORT_MOMENTUM = ("follow", "stay")

# ---------------------------------------------------------------------------- the user's model
class ModuleNet(nn.Module):
    """A user's model (any nn.Module taking (B, C, H, W) and returning logits) with the trainer's
    interface: `forward_with_features` gives the classifier's input (flattened) with the logits.
    `net` is the user's own object; `source` says how to rebuild it (factory and kwargs)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int], source: dict | None = None,
                 classifier: str | None = None) -> None:
        super().__init__()
        self.net = module
        self.input_shape = tuple(input_shape)
        self.source = dict(source or {})
        self.classifier = classifier or last_dense_layer(module, input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own = getattr(self.net, "forward_with_features", None)
        if own is not None:  # a built-in network: its embedding (before dropout)
            return own(x)
        seen: list[torch.Tensor] = []
        layer = self.net.get_submodule(self.classifier)
        handle = layer.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1), logits


def last_dense_layer(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The name of the last conv or linear layer a forward pass calls: the classifier."""
    order: list[str] = []
    names = {m: n for n, m in module.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod]))
             for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    probe_mode = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=_device(module)))
    finally:
        for h in hooks:
            h.remove()
        module.train(probe_mode)
    if not order:
        raise UserError(f"model.module: {type(module).__name__} has no conv or linear layer")
    return order[-1]


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# ---------------------------------------------------------------------------- the augmented twin
class AugmentedModule(SubnetConfigs, nn.Module):
    """The largest augmented model of a `ModuleNet`; `set_active` picks a sub-network, `export` gives a
    static model of the user's class.

    Free channel groups are of three kinds: width groups (drawn from the width grid), middle groups (an
    inverted residual's expansion, drawn from the expand grid) and derived groups (an SE squeeze, whose width
    follows the gated group's as the official `DynamicSE` rounds it). Each is named by the first layer that
    writes it (`group_names`); `named(config)` and `normalize({name: multiplier})` speak those names."""

    def __init__(self, base: ModuleNet, width_mults: Sequence[float], expand_mults: Sequence[float],
                 mid_width: str = "input", init: str = "base", freeze: Sequence[str] = (), unwrap: bool = False
                 ) -> None:
        super().__init__()
        if mid_width not in ("input", "block"):
            raise ValueError(f"mid_width must be input or block, got {mid_width!r}")
        if init not in ("base", "augmented"):
            raise ValueError(f"init must be 'base' or 'augmented', got {init!r}")
        self.width_mults = tuple(sorted({float(m) for m in width_mults}))
        self.expand_mults = tuple(sorted({float(m) for m in expand_mults}))
        if not self.width_mults or self.width_mults[0] != 1.0 or not self.expand_mults or self.expand_mults[0] != 1.0:
            raise ValueError("width_mults and expand_mults must start at 1 (the base model)")
        self.mid_width = mid_width
        self.unwrap = unwrap  # export gives the user's module itself, not its ModuleNet
        graph = analyse(base.net, torch.zeros(1, *base.input_shape, device=_device(base.net)), freeze)
        self.graph: ChannelGraph = graph
        self.gates = gates = graph_gates(graph)  # SE gates: fixed by the graph, read by every sort
        free = graph.free_groups
        self.derived = derived_groups(graph, gates)  # squeeze group -> the group it gates
        self.middle_groups = [g.id for g in free if g.id not in self.derived and is_middle(graph, g.id, gates)]
        self.width_groups = [g.id for g in free if g.id not in self.middle_groups and g.id not in self.derived]
        self.num_width_groups, self.num_expand_groups = len(self.width_groups), len(self.middle_groups)
        self.draw_order = draw_order(graph, self.width_groups, self.middle_groups, gates)
        self.template = [copy.deepcopy(base)]  # a list: the base's pristine copy is not a submodule
        self.ceiling: SubnetConfig | None = None
        self._gated_max: dict[int, int] = {}
        self.max_widths = self.group_widths(self.config("max"))
        self._gated_max = {g: self.max_widths[g] for g in self.derived.values()}  # fixes each SE's reduction
        twin = copy.deepcopy(base)
        self.base = twin
        self._widen(twin.net, init)
        modules = dict(twin.net.named_modules())
        self._dense = [(modules[n], b) for n, b in graph.bindings.items() if b.kind != "norm"]  # set_active's targets
        self.active = self.config("min")
        self.set_active("min")
        self.train(base.training)

    @property
    def group_names(self) -> tuple[list[str], list[str]]:
        """(width group names, middle group names): each group's first writer, in config order."""
        g = self.graph.groups
        return [g[i].producers[0] for i in self.width_groups], [g[i].producers[0] for i in self.middle_groups]

    def describe(self) -> str:
        """The channel groups NetAug widens (width groups, then the middle groups that the expand grid widens),
        who writes and who reads each: what to look at before choosing `model.freeze`."""
        names = {gid: f"width group {i}" for i, gid in enumerate(self.width_groups)}
        names |= {gid: f"middle group {i}" for i, gid in enumerate(self.middle_groups)}
        g = self.graph.groups
        names |= {s: f"SE squeeze of {g[t].producers[0]} (derived)" for s, t in self.derived.items()}
        return self.graph.describe(names)

    # ------------------------------------------------------------------ construction
    def _widen(self, net: nn.Module, init: str) -> None:
        """Swap each bound layer for a dynamic one of the largest widths (base weights in the prefix). Every
        dynamic layer is built first, then each initialised in graph order, as a network built wide at once
        and then initialised (`init_weights`) draws its random numbers: a built-in's augmented twin gets the
        weights the built-in code gave it."""
        modules = dict(net.named_modules())
        conv_like = set(map(id, head_layers(net))) if isinstance(net, InvertedResidualNet) else set()
        built = [(name, b, modules[name], self._dynamic_like(modules[name], b))
                 for name, b in self.graph.bindings.items()]
        schemes = ["fan_out"] if init == "base" else ["fan_out", "uniform"]  # a wide network's own init, then
        for scheme in schemes:  # the official NetAug's of the whole augmented model
            for _, b, old, new in built:
                if b.kind != "norm":  # norms start at weight 1, bias 0, statistics (0, 1)
                    init_module(new, scheme, as_conv=id(old) in conv_like)
        for name, _, old, new in built:
            if init == "base":
                with torch.no_grad():
                    own = new.state_dict()
                    for key, value in old.state_dict().items():
                        target = own[key][tuple(slice(0, n) for n in value.shape)] if value.dim() else own[key]
                        target.copy_(value)
            parent_name, _, attr = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else net, attr, new.to(_device(old)).train(old.training))

    @staticmethod
    def channels(b: Binding, side: str, widths: dict[int, int]) -> int:
        """Channels layer `b` reads ("in") or writes ("out") at group widths `widths` (fixed: the user's)."""
        (g, scale), base = (b.inp, b.in_ch) if side == "in" else (b.out, b.out_ch)
        return base if g == FIXED else scale * widths[g]

    def _dynamic_like(self, old: nn.Module, b: Binding) -> nn.Module:
        w = self.max_widths
        if b.kind == "norm":
            c = self.channels(b, "in", w)
            if type(old) in (nn.BatchNorm1d, nn.BatchNorm2d):
                cls = DynamicBatchNorm1d if isinstance(old, nn.BatchNorm1d) else DynamicBatchNorm2d
                return cls(c, old.eps, old.momentum, old.affine, old.track_running_stats)
            new = copy.deepcopy(old)  # its own forward (and activation) with widened statistics
            _resize_norm(new, c)
            new.__class__ = prefix_view_class(type(old))
            return new
        if b.kind == "linear":
            new = DynamicLinear(self.channels(b, "in", w), self.channels(b, "out", w), old.bias is not None)
            new.active_out = new.out_features
            return new
        c_in, c_out = self.channels(b, "in", w), self.channels(b, "out", w)
        groups = 1 if old.groups == 1 else c_in // (old.in_channels // old.groups)
        new = DynamicConv2d(c_in, c_out, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                            old.bias is not None, old.padding_mode)
        new.active_out = c_out
        return new

    # ------------------------------------------------------------------ configurations
    def group_widths(self, config: SubnetConfig) -> dict[int, int]:
        """Channels of every group in sub-network `config` (frozen groups at their base)."""
        widths, expands = config
        g = self.graph.groups
        out = {gid: grp.base for gid, grp in g.items()}
        for gid, mult in zip(self.width_groups, widths):
            out[gid] = widen(g[gid].base, mult, g[gid].unit)
        for gid, mult in zip(self.middle_groups, expands):
            src = g[gid].input_group  # scaled by only when a width group: middles feeding middles do not compound
            factor = mult * (out[src] / g[src].base if self.mid_width == "input" and src in self.width_groups else 1.0)
            out[gid] = widen(g[gid].base, factor, g[gid].unit)
        for squeeze, gated in self.derived.items():
            out[squeeze] = se_width(g[squeeze].base, g[gated].base, out[gated], self._gated_max.get(gated))
        return out

    def expand_choices(self, group: int) -> tuple[float, ...]:
        return self.expand_mults

    def config(self, kind: str, generator: torch.Generator | None = None) -> SubnetConfig:
        """"min" (the base), "max", "random" (uniform per group) or "min_w" (base widths, random expands).
        Groups draw in `draw_order` (the official NetAug's order on the built-in networks); a choice with one
        option draws nothing."""
        nw, ne = self.num_width_groups, self.num_expand_groups
        if kind == "min":
            return (1.0,) * nw, (1.0,) * ne
        if kind == "max":
            return self.ceiling or ((self.width_mults[-1],) * nw, (self.expand_mults[-1],) * ne)
        if kind not in ("random", "min_w"):
            raise ValueError(f"unknown sub-network kind {kind!r} (min, max, random, min_w, or a config)")
        top_w, top_e = self.ceiling or ((None,) * nw, (None,) * ne)
        widths, expands = [1.0] * nw, [1.0] * ne
        for side, i in self.draw_order:
            if side == "width" and kind == "random":
                widths[i] = pick_choice(self.width_mults, top_w[i], generator)
            elif side == "middle":
                expands[i] = pick_choice(self.expand_mults, top_e[i], generator)
        return tuple(widths), tuple(expands)

    def named(self, config: ConfigLike = "min") -> dict[str, float]:
        """Sub-network `config` as {group name: multiplier} (width groups, then middle groups): plain JSON that
        `normalize` and `set_active` take back."""
        widths, expands = self.normalize(config)
        w_names, m_names = self.group_names
        return dict(zip(w_names, widths)) | dict(zip(m_names, expands))

    def from_named(self, mapping: dict) -> SubnetConfig:
        """The config of {layer name: multiplier}: each name is a layer writing a width or middle group (the
        group's name or any other writer); every width and middle group must be named once."""
        writes = {b.name: b.out[0] for b in self.graph.bindings.values() if b.kind != "norm"}
        value: dict[int, float] = {}
        for name, mult in mapping.items():
            gid = writes.get(name)
            if gid not in self.width_groups and gid not in self.middle_groups:
                w_names, m_names = self.group_names
                raise ValueError(f"sub-network config: {name!r} names no width or middle group (groups: "
                                 f"{', '.join(w_names + m_names)})")
            if gid in value and value[gid] != float(mult):
                raise ValueError(f"sub-network config: {name!r} gives its group a second multiplier")
            value[gid] = float(mult)
        missing = [self.graph.groups[gid].producers[0] for gid in self.width_groups + self.middle_groups
                   if gid not in value]
        if missing:
            raise ValueError(f"sub-network config: no multiplier for {', '.join(missing)}")
        return tuple(value[g] for g in self.width_groups), tuple(value[g] for g in self.middle_groups)

    def normalize(self, config: ConfigLike, generator: torch.Generator | None = None) -> SubnetConfig:
        """A kind, a config tuple, a {group name: multiplier} mapping, or (a built-in network's) a positional
        config of the former augmenter (`netaug.augment.legacy`), resolved into a validated config tuple."""
        if not isinstance(config, (str, dict)) and isinstance(self.template[0].net, InvertedResidualNet):
            from netaug.augment.legacy import named_from_positional

            try:
                lengths = tuple(len(part) for part in config)
            except TypeError:
                lengths = ()
            if lengths != (self.num_width_groups, self.num_expand_groups):
                config = named_from_positional(self.template[0].net, config) or config
        if isinstance(config, dict):
            config = self.from_named(config)
        return super().normalize(config, generator)

    def set_active(self, config="min", generator: torch.Generator | None = None) -> SubnetConfig:
        """Activate a sub-network (a kind, a config tuple or a {group name: multiplier} mapping); returns the
        resolved config tuple."""
        config = self.normalize(config, generator)
        widths = self.group_widths(config)
        for layer, b in self._dense:
            layer.active_out = self.channels(b, "out", widths)
        self.active = config
        return config

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.forward_with_features(x)

    # ------------------------------------------------------------------ export
    def export(self, config="min") -> nn.Module:
        """A static model of the user's class computing what sub-network `config` computes: for "min" the
        user's own layers (its state_dict loads into a fresh model); otherwise the same model with wider plain
        layers. The user's module itself when `augment_module` was given one, else the `ModuleNet`."""
        config = self.normalize(config)
        widths = self.group_widths(config)
        out = copy.deepcopy(self.template[0]).to(_device(self.base.net))
        modules = dict(out.net.named_modules())
        if config != self.config("min"):
            for name, b in self.graph.bindings.items():
                parent_name, _, attr = name.rpartition(".")
                static = _static_like(modules[name], b, self.channels(b, "in", widths), self.channels(b, "out", widths))
                setattr(modules[parent_name] if parent_name else out.net, attr, static)
            if isinstance(out.net, InvertedResidualNet):
                out.net.spec = out.net.spec_from_layers()
        target = out.net.state_dict()  # keeps its _metadata (versions some modules' loaders check)
        full = plain_state_dict(self.base.net)
        with torch.no_grad():
            for k, t in target.items():
                t.copy_(full[k][tuple(slice(0, n) for n in t.shape)] if t.dim() else full[k])
        out.net.load_state_dict(target)
        out.train(self.training)
        return out.net if self.unwrap else out

    # ------------------------------------------------------------------ channel sorting
    @torch.no_grad()
    def sort_channels(self, optimizer: torch.optim.Optimizer | None = None, scope: str = "all",
                      momentum: str = "follow") -> None:
        """Reorder each middle group's channels by importance, most important first: the L1 norm of the dense
        weights that read them (the projection's; not an SE squeeze's), as the official `sort_channels_inner`.
        Every tensor indexed by the group is permuted alike, so the largest model computes the same function.
        An SE squeeze gating the group is then sorted by the L1 norm of the gate's weights that read it (the
        official `sort_se`). scope "all" ranks every channel, "augmented" only those past the base's, so the base
        is untouched. momentum "follow" permutes the optimizer's state with the weights; "stay" leaves it, as
        the official code does. Groups read at a scale other than 1 (a flatten, a depthwise multiplier) and
        groups shared across identical blocks (share-then-unshare) keep their order."""
        if scope not in SORT_SCOPES:
            raise ValueError(f"scope must be one of {SORT_SCOPES}, got {scope!r}")
        if momentum not in SORT_MOMENTUM:
            raise ValueError(f"momentum must be one of {SORT_MOMENTUM}, got {momentum!r}")
        modules = dict(self.base.net.named_modules())
        squeezes = {self.graph.bindings[p].inp[0] for p in self.gates}
        follow = optimizer if momentum == "follow" else None
        for gid in self.middle_groups:
            touching = self._touching(gid)
            if any((b.inp[0] == gid and b.inp[1] != 1) or (b.out[0] == gid and b.out[1] != 1) for b in touching):
                continue
            if any(parametrize.is_parametrized(modules[b.name]) for b in touching):
                continue  # shared with identical blocks (share-then-unshare): one permutation cannot suit all
            readers = [b for b in touching if b.inp[0] == gid and b.kind in ("conv", "linear") and b.groups == 1
                       and b.out[0] not in squeezes]  # the official importance: the projection's weights
            if readers:
                self._sort_group(gid, readers, touching, modules, scope, follow)
            for squeeze in (s for s, gated in self.derived.items() if gated == gid):
                inner = self._touching(squeeze)
                gates = [b for b in inner if b.inp[0] == squeeze and b.kind != "norm" and b.groups == 1]
                if gates and all(b.inp[1] == 1 and b.out[1] == 1 for b in inner):
                    self._sort_group(squeeze, gates, inner, modules, scope, follow)

    def _touching(self, gid: int) -> list[Binding]:
        return [b for b in self.graph.bindings.values() if gid in (b.inp[0], b.out[0])]

    def _sort_group(self, gid: int, readers: list[Binding], touching: list[Binding], modules: dict,
                    scope: str, optimizer: torch.optim.Optimizer | None) -> None:
        importance = sum(_column_l1(modules[b.name].weight) for b in readers)
        perm = ranking(importance, None if scope == "all" else self.graph.groups[gid].base)
        tensors: list[tuple[torch.Tensor, int]] = []
        for b in touching:
            m = modules[b.name]
            if b.out[0] == gid:
                tensors += [(t, 0) for t in (m.weight, getattr(m, "bias", None), getattr(m, "running_mean", None),
                                             getattr(m, "running_var", None)) if t is not None]
            if b.inp[0] == gid and b.kind != "norm" and b.groups == 1:
                tensors.append((m.weight, 1))
        permute_all(tensors, perm, optimizer)


def _column_l1(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of each input channel's weights of a conv (O, I, kh, kw) or linear (O, I) layer."""
    return weight.abs().sum(dim=(0, 2, 3)) if weight.dim() == 4 else weight.abs().sum(dim=0)


def _static_like(old: nn.Module, b: Binding, c_in: int, c_out: int) -> nn.Module:
    if b.kind == "norm":
        if type(old) in (nn.BatchNorm1d, nn.BatchNorm2d):
            return type(old)(c_in, old.eps, old.momentum, old.affine, old.track_running_stats)
        new = copy.deepcopy(old)  # a BatchNorm subclass (its activation kept): resized statistics
        _resize_norm(new, c_in)
        return new
    if b.kind == "linear":
        return nn.Linear(c_in, c_out, old.bias is not None)
    groups = 1 if old.groups == 1 else c_in // (old.in_channels // old.groups)
    return nn.Conv2d(c_in, c_out, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                     old.bias is not None, old.padding_mode)


def _resize_norm(norm: nn.Module, channels: int) -> None:
    """Give a BatchNorm (subclass) `channels`-long weight and running variance (ones), bias and running
    mean (zeros): a fresh BatchNorm's."""
    for name in PREFIX_VIEWED:
        fill = 1.0 if name in ("weight", "running_var") else 0.0
        if name in norm._parameters and norm._parameters[name] is not None:
            norm._parameters[name] = nn.Parameter(norm._parameters[name].new_full((channels,), fill))
        elif name in norm._buffers and norm._buffers[name] is not None:
            norm._buffers[name] = norm._buffers[name].new_full((channels,), fill)
    norm.num_features = channels


def graph_gates(graph: ChannelGraph) -> set[str]:
    """Dense layers writing SE-style gates: a layer that writes feature map G from a squeeze group whose one
    writer reads G and which only it reads (G -> pool -> squeeze -> gate, multiplied back into G). Squeeze and
    gate read pooled values; that tells them from a residual branch (G -> conv -> conv, added back into G)."""
    readers: dict[int, list[str]] = {}
    for b in graph.bindings.values():
        if b.kind != "norm":
            readers.setdefault(b.inp[0], []).append(b.name)
    gates = set()
    for gid, g in graph.groups.items():
        if all(graph.bindings[p].pooled for p in g.producers):
            continue  # a gate multiplies a feature map, not a vector
        for p in g.producers:
            squeeze = graph.groups[graph.bindings[p].inp[0]]
            if (squeeze.id not in (gid, FIXED) and len(squeeze.producers) == 1 and squeeze.input_group == gid
                    and not squeeze.depthwise_consumers and readers.get(squeeze.id) == [p]
                    and graph.bindings[p].pooled and graph.bindings[squeeze.producers[0]].pooled):
                gates.add(p)
    return gates


def is_middle(graph: ChannelGraph, gid: int, gates: set[str]) -> bool:
    """An inverted residual's expansion: written by one 1x1 conv (SE gates aside), read by a depthwise conv."""
    g = graph.groups[gid]
    writers = [p for p in g.producers if p not in gates]
    if len(writers) != 1 or not g.depthwise_consumers:
        return False
    b = graph.bindings[writers[0]]
    return b.kind == "conv" and b.pointwise and g.input_group not in (None, gid)


def derived_groups(graph: ChannelGraph, gates: set[str]) -> dict[int, int]:
    """{squeeze group: gated group} of the SE layers: the squeeze of a gate (G -> pool -> squeeze -> gate,
    multiplied back into G) follows G's width, as the official `DynamicSE`, instead of being drawn."""
    out = {}
    for p in sorted(gates, key=lambda n: graph.groups[graph.bindings[n].inp[0]].first):
        squeeze, gated = graph.bindings[p].inp[0], graph.bindings[p].out[0]
        if squeeze != FIXED and gated != FIXED and squeeze not in out:
            out[squeeze] = gated
    return out


def draw_order(graph: ChannelGraph, width_groups: list[int], middle_groups: list[int], gates: set[str]
               ) -> list[tuple[str, int]]:
    """The order in which a random sub-network draws its groups: ("width" | "middle", index in the config).

    The official NetAug's: in graph order, where a middle group comes after the width group its block writes
    when that group starts in this block (a stage's first block draws the stage's width, then its expand)."""
    g = graph.groups
    keys = [((g[gid].first, 0), ("width", i)) for i, gid in enumerate(width_groups)]
    squeezes = {graph.bindings[p].inp[0] for p in gates}
    for i, gid in enumerate(middle_groups):
        written = [g[b.out[0]].first for b in graph.bindings.values()
                   if b.inp[0] == gid and b.kind != "norm" and b.groups == 1 and b.out[0] not in squeezes
                   and b.out[0] != FIXED]
        keys.append(((max(g[gid].first, min(written, default=g[gid].first)), 1), ("middle", i)))
    return [what for _, what in sorted(keys)]


def share_blocks(net: nn.Module, graph: ChannelGraph) -> list[list[nn.Module]]:
    """Share-then-unshare on a user's model: every conv and linear weight of identical consecutive blocks
    (`identical_blocks`) is reparametrised as w_i = w0 / sqrt(L) + w~_i. BatchNorms stay per block."""
    from netaug.models.weight_sharing import share_layers

    modules = dict(net.named_modules())
    shared = []
    for run in identical_blocks(net, graph):
        first = run[0]
        for name, b in graph.bindings.items():
            if b.kind != "norm" and name.startswith(first + "."):
                rel = name[len(first) + 1:]
                shared.append(share_layers([modules[f"{block}.{rel}"] for block in run]))
    return shared


def augment_module(model: nn.Module | ModuleNet, width_mults: Sequence[float],
                   expand_mults: Sequence[float] | None = None, example_input: torch.Tensor | None = None,
                   mid_width: str = "input", init: str = "base", freeze: Sequence[str] = ()) -> AugmentedModule:
    """The largest augmented model of a user's `model` (an nn.Module, or a `ModuleNet`), whose "min"
    sub-network computes exactly `model`. `example_input` (one (1, C, H, W) batch) fixes the input
    shape for tracing; a `ModuleNet` brings its own. `export()` gives back what was passed in: the user's
    own class for an nn.Module, a `ModuleNet` for a `ModuleNet`."""
    unwrap = not isinstance(model, ModuleNet)
    if unwrap:
        if example_input is None:
            raise ValueError("augment_module needs example_input for a plain nn.Module")
        model = ModuleNet(model, tuple(example_input.shape[1:]))
    return AugmentedModule(model, width_mults, expand_mults if expand_mults is not None else [1.0], mid_width,
                           init, freeze, unwrap=unwrap)


TRACE_SIDE = 64  # the side of the example input a built-in network is traced with (any side traces alike)


def augment(base: nn.Module, width_mults: Sequence[float], expand_mults: Sequence[float] | None = None,
            mid_width: str = "input", init: str = "base", freeze: Sequence[str] = ()) -> AugmentedModule:
    """The largest augmented model of a built-in network or a `ModuleNet`, whose "min" sub-network is `base`.

    init "base": the base's weights are copied into the leading slices (the extra weights keep the
    fan-out init of the augmented shapes). init "augmented" (the official NetAug): the whole
    augmented model is initialised at once (Kaiming-uniform) and the base's own weights are not used;
    the base is its leading slice. `export()` gives back an object of `base`'s class."""
    if isinstance(base, ModuleNet):
        return augment_module(base, width_mults, expand_mults, None, mid_width, init, freeze)
    if not isinstance(base, InvertedResidualNet):
        raise TypeError("augment takes a built-in network or a ModuleNet; use augment_module for an nn.Module")
    wrapped = ModuleNet(base, (base.spec.in_channels, TRACE_SIDE, TRACE_SIDE), classifier="classifier")
    return AugmentedModule(wrapped, width_mults, expand_mults if expand_mults is not None else [1.0], mid_width,
                           init, freeze, unwrap=True)
