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
import torch.nn.functional as F
from torch.nn.utils import parametrize

from netaug.augment.configs import SubnetConfig, SubnetConfigs
from netaug.augment.dynamic_ops import DynamicBatchNorm1d, DynamicBatchNorm2d
from netaug.augment.graph import FIXED, Binding, ChannelGraph, analyse, identical_blocks
from netaug.augment.permute import permute_all, ranking
from netaug.augment.widths import pick_choice, widen
from netaug.errors import UserError
from netaug.models.network import init_module
from netaug.models.weight_sharing import plain_state_dict


# ---------------------------------------------------------------------------- dynamic layers
class GenericDynamicConv2d(nn.Conv2d):
    """A conv over the input's leading channels writing `active_out` channels (dense), or a grouped conv
    whose active groups follow the input (depthwise included)."""

    active_out: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias, groups = self.weight, self.bias, self.groups
        c = x.shape[1]
        if groups == 1:
            if self.active_out != weight.shape[0] or c != weight.shape[1]:
                weight = weight[: self.active_out, :c]
                bias = bias[: self.active_out] if bias is not None else None
        else:
            per_in, per_out = weight.shape[1], weight.shape[0] // groups
            groups = c // per_in
            if groups != self.groups:
                weight = weight[: groups * per_out]
                bias = bias[: groups * per_out] if bias is not None else None
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class GenericDynamicLinear(nn.Linear):
    """A linear layer over the input's leading features writing `active_out` features."""

    active_out: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, o = x.shape[-1], self.active_out
        if f == self.weight.shape[1] and o == self.weight.shape[0]:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight[:o, :f], self.bias[:o] if self.bias is not None else None)


PREFIX_VIEWED = ("weight", "bias", "running_mean", "running_var")
_PREFIX_CLASSES: dict[type, type] = {}


def prefix_view_class(cls: type[nn.Module]) -> type[nn.Module]:
    """A subclass of a BatchNorm subclass with its own forward (timm's BatchNormAct2d) whose forward
    sees weight, bias and running statistics cut to the input's channels (views: running statistics
    update in place)."""
    if cls not in _PREFIX_CLASSES:
        def forward(self, x: torch.Tensor, *args, **kwargs):
            self.__dict__["_prefix"] = x.shape[1]
            try:
                return cls.forward(self, x, *args, **kwargs)
            finally:
                self.__dict__["_prefix"] = None

        def __getattr__(self, name: str):
            value = nn.Module.__getattr__(self, name)
            c = self.__dict__.get("_prefix")
            if c is not None and name in PREFIX_VIEWED and value is not None and value.shape[0] != c:
                return value[:c]
            return value

        _PREFIX_CLASSES[cls] = type(f"Dynamic{cls.__name__}", (cls,), {"forward": forward, "__getattr__": __getattr__,
                                                                        "__module__": __name__})
    return _PREFIX_CLASSES[cls]


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
    static model of the user's class."""

    def __init__(self, base: ModuleNet, width_mults: Sequence[float], expand_mults: Sequence[float],
                 mid_width: str = "input", init: str = "base", freeze: Sequence[str] = ()) -> None:
        super().__init__()
        if mid_width not in ("input", "block"):
            raise ValueError(f"mid_width must be input or block, got {mid_width!r}")
        self.width_mults = tuple(sorted({float(m) for m in width_mults}))
        self.expand_mults = tuple(sorted({float(m) for m in expand_mults}))
        if self.width_mults[0] != 1.0 or self.expand_mults[0] != 1.0:
            raise ValueError("width_mults and expand_mults must start at 1 (the base model)")
        self.mid_width = mid_width
        graph = analyse(base.net, torch.zeros(1, *base.input_shape, device=_device(base.net)), freeze)
        self.graph: ChannelGraph = graph
        gates = graph_gates(graph)
        free = graph.free_groups
        self.middle_groups = [g.id for g in free if is_middle(graph, g.id, gates)]
        self.width_groups = [g.id for g in free if g.id not in self.middle_groups]
        self.num_width_groups, self.num_expand_groups = len(self.width_groups), len(self.middle_groups)
        self.template = [copy.deepcopy(base)]  # a list: the base's pristine copy is not a submodule
        self.ceiling: SubnetConfig | None = None
        self.max_widths = self.group_widths(self.config("max"))
        twin = copy.deepcopy(base)
        self.base = twin
        self._widen(twin.net, init)
        modules = dict(twin.net.named_modules())
        self._dense = [(modules[n], b) for n, b in graph.bindings.items() if b.kind != "norm"]  # set_active's targets
        self.active = self.config("min")
        self.set_active("min")
        self.train(base.training)

    def describe(self) -> str:
        """The channel groups NetAug widens (width groups, then the middle groups that the expand grid widens),
        who writes and who reads each: what to look at before choosing `model.freeze`."""
        names = {gid: f"width group {i}" for i, gid in enumerate(self.width_groups)}
        names |= {gid: f"middle group {i}" for i, gid in enumerate(self.middle_groups)}
        return self.graph.describe(names)

    # ------------------------------------------------------------------ construction
    def _widen(self, net: nn.Module, init: str) -> None:
        """Swap each bound layer for a dynamic one of the largest widths (base weights in the prefix)."""
        modules = dict(net.named_modules())
        for name, b in self.graph.bindings.items():
            old = modules[name]
            new = self._dynamic_like(old, b)
            if b.kind != "norm":  # norms start at weight 1, bias 0, statistics (0, 1)
                init_module(new, "fan_out" if init == "base" else "uniform")
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
            new = GenericDynamicLinear(self.channels(b, "in", w), self.channels(b, "out", w), old.bias is not None)
            new.active_out = new.out_features
            return new
        c_in, c_out = self.channels(b, "in", w), self.channels(b, "out", w)
        groups = 1 if old.groups == 1 else c_in // (old.in_channels // old.groups)
        new = GenericDynamicConv2d(c_in, c_out, old.kernel_size, old.stride, old.padding, old.dilation, groups,
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
        return out

    def expand_choices(self, group: int) -> tuple[float, ...]:
        return self.expand_mults

    def config(self, kind: str, generator: torch.Generator | None = None) -> SubnetConfig:
        """"min" (the base), "max", "random" (uniform per group) or "min_w" (base widths, random expands).
        Width groups draw first, in graph order, then middle groups."""
        nw, ne = self.num_width_groups, self.num_expand_groups
        if kind == "min":
            return (1.0,) * nw, (1.0,) * ne
        if kind == "max":
            return self.ceiling or ((self.width_mults[-1],) * nw, (self.expand_mults[-1],) * ne)
        if kind not in ("random", "min_w"):
            raise ValueError(f"unknown sub-network kind {kind!r} (min, max, random, min_w, or a config)")
        top_w, top_e = self.ceiling or ((None,) * nw, (None,) * ne)

        def pick(choices: tuple[float, ...], top: float | None) -> float:
            return pick_choice(choices, top, generator)

        widths = tuple(pick(self.width_mults, t) if kind == "random" else 1.0 for t in top_w)
        return widths, tuple(pick(self.expand_mults, t) for t in top_e)

    def set_active(self, config="min", generator: torch.Generator | None = None) -> SubnetConfig:
        """Activate a sub-network; returns the resolved config (plain JSON)."""
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
    def export(self, config="min") -> ModuleNet:
        """A static `ModuleNet` around the user's class computing what sub-network `config` computes: for
        "min" the user's own layers (its state_dict loads into a fresh model); otherwise the same model
        with wider plain layers."""
        config = self.normalize(config)
        widths = self.group_widths(config)
        out = copy.deepcopy(self.template[0]).to(_device(self.base.net))
        modules = dict(out.net.named_modules())
        if config != self.config("min"):
            for name, b in self.graph.bindings.items():
                parent_name, _, attr = name.rpartition(".")
                static = _static_like(modules[name], b, self.channels(b, "in", widths), self.channels(b, "out", widths))
                setattr(modules[parent_name] if parent_name else out.net, attr, static)
        target = out.net.state_dict()  # keeps its _metadata (versions some modules' loaders check)
        full = plain_state_dict(self.base.net)
        with torch.no_grad():
            for k, t in target.items():
                t.copy_(full[k][tuple(slice(0, n) for n in t.shape)] if t.dim() else full[k])
        out.net.load_state_dict(target)
        return out.train(self.training)

    # ------------------------------------------------------------------ channel sorting
    @torch.no_grad()
    def sort_channels(self, optimizer: torch.optim.Optimizer | None = None, scope: str = "all",
                      momentum: str = "follow") -> None:
        """Reorder each middle group's channels by importance (L1 norm of the dense weights that read them),
        as the built-in networks' `sort_channels`; every tensor indexed by the group is permuted alike.
        Groups read at a scale other than 1 (a flatten, a depthwise multiplier) keep their order."""
        modules = dict(self.base.net.named_modules())
        squeezes = {self.graph.bindings[p].inp[0] for p in graph_gates(self.graph)}
        for gid in self.middle_groups:
            touching = [b for b in self.graph.bindings.values() if gid in (b.inp[0], b.out[0])]
            if any((b.inp[0] == gid and b.inp[1] != 1) or (b.out[0] == gid and b.out[1] != 1) for b in touching):
                continue
            if any(parametrize.is_parametrized(modules[b.name]) for b in touching):
                continue  # shared with identical blocks (share-then-unshare): one permutation cannot suit all
            readers = [b for b in touching if b.inp[0] == gid and b.kind in ("conv", "linear") and b.groups == 1
                       and b.out[0] not in squeezes]  # the official importance: the projection's weights
            if not readers:
                continue
            importance = sum(modules[b.name].weight.abs().flatten(2).sum(dim=(0, 2)) if b.kind == "conv" else
                             modules[b.name].weight.abs().sum(dim=0) for b in readers)
            keep = None if scope == "all" else self.graph.groups[gid].base
            perm = ranking(importance, keep)
            tensors: list[tuple[torch.Tensor, int]] = []
            for b in touching:
                m = modules[b.name]
                if b.out[0] == gid:
                    tensors += [(t, 0) for t in (m.weight, getattr(m, "bias", None), getattr(m, "running_mean", None),
                                                 getattr(m, "running_var", None)) if t is not None]
                if b.inp[0] == gid and b.kind != "norm" and b.groups == 1:
                    tensors.append((m.weight, 1))
            permute_all(tensors, perm, optimizer if momentum == "follow" else None)


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
    """Dense layers writing SE-style gates: a layer that writes group G from a squeeze group whose one
    writer reads G (G -> pool -> squeeze -> gate, multiplied back into G)."""
    gates = set()
    for gid, g in graph.groups.items():
        for p in g.producers:
            squeeze = graph.groups[graph.bindings[p].inp[0]]
            if squeeze.id not in (gid, FIXED) and len(squeeze.producers) == 1 and squeeze.input_group == gid:
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
    shape for tracing; a `ModuleNet` brings its own."""
    if not isinstance(model, ModuleNet):
        if example_input is None:
            raise ValueError("augment_module needs example_input for a plain nn.Module")
        model = ModuleNet(model, tuple(example_input.shape[1:]))
    return AugmentedModule(model, width_mults, expand_mults if expand_mults is not None else [1.0], mid_width,
                           init, freeze)
