"""Coupled channel groups of any traceable PyTorch model, found with torch.fx.

Every tensor whose dim 1 holds channels (or features) gets a label (group, scale): its channel
count is `scale` x the width of `group`. A dense conv or linear layer starts a new group at its
output; BatchNorm, activations, pooling and depthwise convs pass their input's label on; a residual
add (or any elementwise op of two same-width tensors: SE gating) merges the groups of its operands;
a grouped conv with k outputs per input channel scales it by k; flatten of a (C, H, W) tensor scales
it by H x W (features stay channel-major, so the first c x H x W features are the first c channels).
The model's input and its output (the classifier's) are one fixed group that is never widened.

Widening a group and keeping its leading channels computes the base model exactly when every op
on its tensors treats channels independently or by prefix. Ops that do not (a concat along
channels, a reshape that mixes channels with space, a reduction over channels, an op this module
does not know) are accepted only on frozen groups: a `UserError` names the layer and the reason,
and the layers to list in `model.freeze` when freezing is safe.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from netaug.errors import UserError

FIXED = 0  # the group of the model's input and output channels: never widened

DENSE = (nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
LEAF_TYPES = DENSE + NORMS

# Modules and functions that treat every channel on its own: the label passes through.
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU,
    nn.ELU, nn.PReLU, nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool1d,
    nn.AvgPool1d, nn.MaxPool1d, nn.ZeroPad2d, nn.ConstantPad2d, nn.Upsample,
)
ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.sigmoid, F.gelu, F.leaky_relu, F.elu, F.hardtanh,
    F.mish, F.dropout, F.dropout2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d,
    F.interpolate, F.pad, torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.exp, torch.abs, torch.neg,
    operator.neg, torch.nn.functional.relu_,
}
ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "contiguous", "clone", "exp", "abs",
                       "neg", "float", "to", "type_as", "detach", "sigmoid_", "tanh_"}
BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub,
          operator.truediv, operator.itruediv, torch.add, torch.mul, torch.sub, torch.div}
BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
REDUCTIONS = {"mean", "sum", "amax", "amin"}
FLATTENS = {"flatten", "view", "reshape"}


# Subclasses whose own forward computes what their base class's does (timm's scripting-friendly Linear).
STANDARD_EQUIVALENT = {"timm.layers.linear.Linear"}
REGISTERED_MODULES: set[type] = set()  # a user's channel-wise layers (register_channelwise): leaves of the trace


def register_channelwise(*layers) -> None:
    """Teach the graph layers that treat every channel on its own (an activation, a per-channel scale, a
    pooling): module classes, functions, or tensor method names. Their output keeps their input's channel
    group, so the channels around them can be widened. A module class registered here is not traced into.
    How torch-pruning and timm let users teach their graph a layer:

        from netaug.augment.graph import register_channelwise
        register_channelwise(MyActivation, my_fused_op, "my_method")
    """
    for layer in layers:
        if isinstance(layer, type) and issubclass(layer, nn.Module):
            REGISTERED_MODULES.add(layer)
        elif isinstance(layer, str):
            ELEMENTWISE_METHODS.add(layer)
        elif callable(layer):
            ELEMENTWISE_FUNCTIONS.add(layer)
        else:
            raise TypeError(f"register_channelwise takes module classes, functions or method names, got {layer!r}")

Label = tuple[int, int]  # (group id, scale)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass
class Group:
    """A set of channels that must keep one width: `base` channels in the user's model; widths are
    multiples of `unit` (a grouped conv needs whole groups)."""

    id: int
    base: int
    unit: int = 1
    producers: list[str] = field(default_factory=list)  # dense layers writing these channels, in graph order
    depthwise_consumers: list[str] = field(default_factory=list)
    input_group: int | None = None  # the group its (single) producer reads (for mid_width: input)
    first: int = 0  # graph position of its first producer (groups are ordered by it)


@dataclass
class Binding:
    """How one leaf layer of the model reads and writes channel groups."""

    name: str
    kind: str  # "conv", "linear" or "norm"
    inp: Label
    out: Label
    in_ch: int  # channels read and written in the user's model
    out_ch: int
    groups: int = 1  # a conv's groups in the base model
    pointwise: bool = False  # a 1x1 conv
    pooled: bool = False  # reads one value per channel (a pooled map or a vector): an SE squeeze or gate, a head


@dataclass
class ChannelGraph:
    """The analysis: groups (merged, in graph order), leaf-layer bindings, the classifier."""

    groups: dict[int, Group]
    bindings: dict[str, Binding]
    classifier: str

    @property
    def free_groups(self) -> list[Group]:
        """Every group but the fixed one (user-frozen groups are merged into it), in graph order."""
        return [g for g in sorted(self.groups.values(), key=lambda g: g.first) if g.id != FIXED]

    def describe(self, names: dict[int, str] | None = None) -> str:
        """One line per channel group: its base channels, the layers that write it and those that read it; the
        fixed group (input, classifier, frozen layers) first. To freeze a group, list one of its writers in
        `model.freeze`."""
        readers: dict[int, list[str]] = {}
        for b in self.bindings.values():
            if b.kind != "norm":
                readers.setdefault(b.inp[0], []).append(b.name)
        fixed = self.groups[FIXED]
        lines = [f"fixed (never widened): the input, written by {', '.join(fixed.producers) or 'no layer'}; read by "
                 f"{', '.join(readers.get(FIXED, [])) or 'no conv or linear'}"]
        for g in self.free_groups:
            label = (names or {}).get(g.id, f"group {g.id}")
            unit = f", in steps of {g.unit}" if g.unit > 1 else ""
            lines.append(f"{label}: {g.base} channels{unit}; written by {', '.join(g.producers)}; read by "
                         f"{', '.join(readers.get(g.id, [])) or 'no conv or linear'}")
        return "\n".join(lines)


class _Tracer(fx.Tracer):
    """Treats the standard layers (exact classes, or subclasses that keep their forward) and every
    BatchNorm (a subclass with its own forward, e.g. BatchNorm + activation, is taken as channel-wise)
    as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, tuple(REGISTERED_MODULES)):
            return True
        if isinstance(m, NORMS):  # BatchNorm subclasses (timm's BatchNormAct2d) stay channel-wise
            return True
        if isinstance(m, LEAF_TYPES):
            base = next(t for t in LEAF_TYPES if isinstance(m, t))
            return type(m).forward is base.forward or _qualname(type(m)) in STANDARD_EQUIVALENT
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's fx graph; a model that does not trace (data-dependent control flow) is a UserError."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ... on untraceable code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.module: {type(model).__name__} does not trace with torch.fx ({first}); "
                        "data-dependent control flow cannot be augmented") from None
    return fx.GraphModule(model, graph)


class _Analysis:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.parent: dict[int, int] = {FIXED: FIXED}
        self.info: dict[int, Group] = {FIXED: Group(FIXED, 0)}
        self.labels: dict[fx.Node, Label | None] = {}
        self.bindings: dict[str, Binding] = {}
        self.needs_frozen: list[tuple[str, str, list[int]]] = []  # (layer, reason, groups)
        self.position = 0

    # -- union-find
    def root(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def new_group(self, base: int, producer: str, input_group: int | None) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.info[gid] = Group(gid, base, producers=[producer], input_group=input_group, first=self.position)
        return gid

    def merge(self, a: Label, b: Label, where: str) -> Label:
        (ga, sa), (gb, sb) = a, b
        ra, rb = self.root(ga), self.root(gb)
        if sa != sb:
            self.needs_frozen.append((where, f"couples {sa}x and {sb}x channel groups", [ra, rb]))
            return a
        if ra == rb:
            return (ra, sa)
        if rb == FIXED:
            ra, rb = rb, ra
        keep, gone = self.info[ra], self.info[rb]
        if ra != FIXED and keep.base != gone.base:
            raise UserError(f"model.module: layer {where}: merges {keep.base} and {gone.base} channels")
        self.parent[rb] = ra
        keep.unit = math.lcm(keep.unit, gone.unit)
        keep.producers += gone.producers
        keep.depthwise_consumers += gone.depthwise_consumers
        keep.first = min(keep.first, gone.first)
        return (ra, sa)

    # -- helpers
    @staticmethod
    def shape(node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def label(self, arg) -> Label | None:
        return self.labels.get(arg) if isinstance(arg, fx.Node) else None

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        args = list(node.args) + list(node.kwargs.values())
        flat = []
        for a in args:
            flat += list(a) if isinstance(a, (list, tuple)) else [a]
        return [a for a in flat if isinstance(a, fx.Node) and self.label(a) is not None]

    def unsupported(self, node: fx.Node, reason: str, out: Label | None = None) -> Label | None:
        """An op that is safe only on frozen channels: demand that, and give a fixed output (`out` for an op
        whose output has no shape of its own, e.g. a tuple: what is taken from it stays fixed too)."""
        ins = self.tensor_args(node)
        if ins:
            self.needs_frozen.append((self.layer_name(node), reason, [self.root(self.label(a)[0]) for a in ins]))
        return (FIXED, 1) if self.shape(node) is not None and len(self.shape(node)) >= 2 else out

    @staticmethod
    def layer_name(node: fx.Node) -> str:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack")
        where = list(stack)[-1] if stack else ""
        return f"{where}.{node.name}" if where else node.name

    # -- per node
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.position += 1
            self.labels[node] = self.visit(node)

    def visit(self, node: fx.Node) -> Label | None:
        shape = self.shape(node)
        if node.op == "placeholder":
            return (FIXED, 1) if shape is not None and len(shape) >= 2 else None
        if node.op == "output":
            for a in self.tensor_args(node):
                self.merge(self.label(a), (FIXED, 1), "the model's output")
            return None
        if node.op == "get_attr":
            return (FIXED, 1) if shape is not None and len(shape) >= 2 and shape[1] > 1 else None
        ins = self.tensor_args(node)
        if shape is None:
            if node.op == "call_module" and ins:  # a layer returning no single tensor (an LSTM, attention)
                return self.unsupported(node, f"is a {type(self.modules[node.target]).__name__}, a layer whose "
                                              "channel use is unknown", out=(FIXED, 1))
            return None  # sizes, tuples, flags: no channels
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target], ins)
        if node.op == "call_function" and node.target in BINARY or (
                node.op == "call_method" and node.target in BINARY_METHODS):
            return self.visit_binary(node, ins)
        if node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS or (
                node.op == "call_method" and node.target in ELEMENTWISE_METHODS):
            return self.same_channels(node, ins)
        if node.target in (torch.flatten,) or (node.op == "call_method" and node.target in FLATTENS):
            return self.visit_flatten(node, ins)
        if node.target in (torch.mean, torch.sum, torch.amax) or (
                node.op == "call_method" and node.target in REDUCTIONS):
            return self.visit_reduction(node, ins)
        if node.target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim in (1, 1 - len(shape)):
                return self.unsupported(node, "concatenates along channels, so its parts must keep their split")
            labels = [self.label(a) for a in ins]
            for other in labels[1:]:
                self.merge(labels[0], other, self.layer_name(node))
            return labels[0] if labels else None
        if node.op == "call_function" and node.target is operator.getitem:
            return self.unsupported(node, "indexes a tensor") if ins else None
        if not ins:
            return None
        return self.unsupported(node, f"calls {getattr(node.target, '__name__', node.target)}, whose channel use is "
                                      "unknown")

    def same_channels(self, node: fx.Node, ins: list[fx.Node]) -> Label | None:
        if not ins:
            return None
        src = ins[0]
        s_in, s_out = self.shape(src), self.shape(node)
        if s_in is None or len(s_in) < 2 or s_out is None or len(s_out) < 2 or s_in[1] != s_out[1]:
            return self.unsupported(node, "changes the channel count")
        return self.label(src)

    def visit_binary(self, node: fx.Node, ins: list[fx.Node]) -> Label | None:
        if len(ins) == 1:
            return self.same_channels(node, ins)
        a, b = ins[:2]
        sa, sb, so = self.shape(a), self.shape(b), self.shape(node)
        ca = sa[1] if len(sa) >= 2 else 1
        cb = sb[1] if len(sb) >= 2 else 1
        if ca == cb:
            return self.merge(self.label(a), self.label(b), self.layer_name(node))
        if 1 in (ca, cb) and so is not None and len(so) >= 2:  # broadcast of one channel (spatial attention)
            one, many = (a, b) if ca == 1 else (b, a)
            if len(self.shape(one)) >= 2:
                self.merge(self.label(one), (FIXED, 1), self.layer_name(node))
            return self.label(many)
        return self.unsupported(node, "combines tensors of different channel counts")

    def visit_flatten(self, node: fx.Node, ins: list[fx.Node]) -> Label | None:
        if not ins:
            return None
        src = ins[0]
        s_in, s_out = self.shape(src), self.shape(node)
        if s_out == s_in:
            return self.label(src)
        if len(s_in) >= 2 and len(s_out) == 2 and s_out[0] == s_in[0] and s_out[1] == math.prod(s_in[1:]):
            g, s = self.label(src)
            return (g, s * math.prod(s_in[2:]))  # channel-major: c x H x W features per sample
        return self.unsupported(node, "reshapes across the channel dimension")

    def visit_reduction(self, node: fx.Node, ins: list[fx.Node]) -> Label | None:
        if not ins:
            return None
        src = ins[0]
        s_in, s_out = self.shape(src), self.shape(node)
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if dims is None:
            return self.unsupported(node, "reduces over every dimension, the channels included")
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [d % len(s_in) for d in dims]
        if 0 in dims or 1 in dims:
            return self.unsupported(node, "reduces over the channel dimension")
        return self.label(src) if s_out is not None and len(s_out) >= 2 else None

    def visit_module(self, node: fx.Node, m: nn.Module, ins: list[fx.Node]) -> Label | None:
        name = str(node.target)
        src = self.label(ins[0]) if ins else None
        if src is None and isinstance(m, LEAF_TYPES):  # its input's channels were lost on the way (no label)
            came = next((a for a in [*node.args, *node.kwargs.values()] if isinstance(a, fx.Node)), None)
            where = self.layer_name(came) if came is not None else "its input"
            raise UserError(f"model.module: layer {name} reads {where}, whose channels could not be followed "
                            "through the graph, so the model cannot be augmented")
        shape = self.shape(ins[0]) if ins else None
        pooled = shape is not None and math.prod(shape[2:]) == 1
        if isinstance(m, NORMS):
            return self.bind(name, "norm", src, src, m.num_features, m.num_features)
        if isinstance(m, nn.Conv2d):
            if m.groups == 1:
                out = self.existing_out(name) or (self.new_group(m.out_channels, name, self.root(src[0])), 1)
                self.bind(name, "conv", src, out, m.in_channels, m.out_channels)
                self.bindings[name].pointwise = tuple(m.kernel_size) == (1, 1)
                self.bindings[name].pooled = pooled
                return out
            a, b = m.in_channels // m.groups, m.out_channels // m.groups
            g, s = src
            if b % a and a != 1:
                return self.unsupported(node, "is a grouped conv whose outputs per group are not a multiple of its "
                                        "inputs")
            root = self.root(g)
            self.info[root].unit = math.lcm(self.info[root].unit, a // math.gcd(a, s))
            if a == 1:
                self.info[root].depthwise_consumers.append(name)
            return self.bind(name, "conv", src, (g, s * b // a), m.in_channels, m.out_channels, m.groups)
        if isinstance(m, nn.Linear):
            out = self.existing_out(name) or (self.new_group(m.out_features, name, self.root(src[0])), 1)
            self.bind(name, "linear", src, out, m.in_features, m.out_features)
            self.bindings[name].pooled = True
            return out
        if isinstance(m, ELEMENTWISE_MODULES + tuple(REGISTERED_MODULES)):
            return self.same_channels(node, ins)
        if isinstance(m, nn.Flatten):
            return self.visit_flatten(node, ins)
        return self.unsupported(node, f"is a {type(m).__name__}, a layer whose channel use is unknown (if it treats "
                                      "every channel on its own: netaug.augment.graph.register_channelwise)")

    def existing_out(self, name: str) -> Label | None:
        b = self.bindings.get(name)
        return b.out if b is not None else None

    def bind(self, name: str, kind: str, inp: Label, out: Label, in_ch: int, out_ch: int, groups: int = 1) -> Label:
        old = self.bindings.get(name)
        if old is not None:  # a layer called twice: both calls must see the same widths
            inp = self.merge(old.inp, inp, name)
            out = self.merge(old.out, out, name)
        self.bindings[name] = Binding(name, kind, inp, out, in_ch, out_ch, groups)
        return out


def analyse(model: nn.Module, example: torch.Tensor, freeze: list[str] | tuple[str, ...] = ()) -> ChannelGraph:
    """The channel groups of `model` (traced on a copy, in eval mode, with `example` as input).

    `freeze`: layer names whose output channels keep their base width (making ops on them safe).
    """
    probe = copy.deepcopy(model).eval()
    gm = trace(probe)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    a = _Analysis(gm)
    a.run()
    for name in freeze:
        b = a.bindings.get(name)
        if b is None:
            known = ", ".join(n for n, bb in a.bindings.items() if bb.kind != "norm")
            raise UserError(f"model.freeze: {name!r} is not a conv or linear layer of the model (layers: {known})")
        a.merge(b.out, (FIXED, 1), name)
    for layer, reason, groups in a.needs_frozen:
        loose = [g for g in groups if a.root(g) != FIXED]
        if loose:
            producers = sorted({p for g in loose for p in a.info[a.root(g)].producers})
            hint = f"; to keep these channels at the base width, set model.freeze: {producers}" if producers else ""
            raise UserError(f"model.module: layer {layer} {reason}: it cannot be augmented{hint}")
    dense = [n for n, b in a.bindings.items() if b.kind in ("conv", "linear") and a.root(b.out[0]) == FIXED]
    if not dense:
        raise UserError(f"model.module: {type(model).__name__}'s output is not computed by a conv or linear layer")
    classifier = max(dense, key=lambda n: _first_call(gm, n))
    roots = {a.root(g) for g in a.parent}
    groups = {}
    for r in roots:
        g = a.info[r]
        g.input_group = None if g.input_group is None else a.root(g.input_group)
        groups[r] = g
    bindings = {n: Binding(b.name, b.kind, (a.root(b.inp[0]), b.inp[1]), (a.root(b.out[0]), b.out[1]), b.in_ch,
                           b.out_ch, b.groups, b.pointwise, b.pooled) for n, b in a.bindings.items()}
    return ChannelGraph(groups, bindings, classifier)


def _first_call(gm: fx.GraphModule, name: str) -> int:
    for i, node in enumerate(gm.graph.nodes):
        if node.op == "call_module" and node.target == name:
            return i
    return -1


def identical_blocks(net: nn.Module, graph: ChannelGraph) -> list[list[str]]:
    """Runs of >= 2 consecutive children of a Sequential or ModuleList that are the same block: the same
    class and layers, reading and writing the same outer channel groups (so residual blocks of one stage),
    with groups used only inside the block at the same base widths. Share-then-unshare's precondition."""
    touching: dict[int, set[str]] = {}
    for name, b in graph.bindings.items():
        for gid in (b.inp[0], b.out[0]):
            touching.setdefault(gid, set()).add(name)

    def signature(prefix: str, child: nn.Module) -> tuple | None:
        inside = {n: b for n, b in graph.bindings.items() if n.startswith(prefix + ".")}
        if not inside:
            return None

        def where(gid: int) -> object:
            own = all(n in inside for n in touching[gid])
            return ("inside", graph.groups[gid].base) if own else gid

        return (type(child), tuple(sorted(
            (n[len(prefix) + 1:], b.kind, b.in_ch, b.out_ch, b.groups, b.inp[1], b.out[1], where(b.inp[0]),
             where(b.out[0])) for n, b in inside.items())))

    runs: list[list[str]] = []
    for cname, container in net.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            continue
        run: list[str] = []
        last = None
        for name, child in container.named_children():
            prefix = f"{cname}.{name}" if cname else name
            sig = signature(prefix, child)
            if sig is not None and sig == last:
                run.append(prefix)
                continue
            if len(run) >= 2:
                runs.append(run)
            run, last = ([prefix], sig) if sig is not None else ([], None)
        if len(run) >= 2:
            runs.append(run)
    return runs

