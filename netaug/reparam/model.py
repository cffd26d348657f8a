"""Structural re-parameterization of any traceable model: find every conv -> BatchNorm pair on the torch.fx
graph, train each with parallel branches (`RepConv`), and export the model's own class with the branches folded
into its own conv and BN (same state_dict keys, parameters and MACs).

    rep = reparameterize(model, k=1, conv1x1=True, identity=True)
    ... train rep like the model ...
    plain = rep.export()        # an instance of the model's class; eval logits equal rep's

A conv is left unbranched (and listed in `rep.skipped` with the reason) when no BatchNorm2d reads its output
alone, when it or its BN runs more than once per forward, or when the BN has no affine or running statistics.
A model with no pair at all is a UserError naming a conv and why.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
import torch.fx as fx
import torch.nn as nn

from netaug.errors import UserError
from netaug.reparam.branches import RepConv


def _standard(module: nn.Module, base: type) -> bool:
    """An instance of `base` (or a subclass) that computes what `base` computes."""
    return isinstance(module, base) and type(module).forward is base.forward


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """((conv path, BN path) of every conv whose output only a BatchNorm2d reads, in graph order;
    {conv path: why it is not paired} for every other Conv2d)."""
    from netaug.augment.graph import trace

    gm = trace(model)
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    aliases = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    pairs, skipped = [], {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        conv = modules[node.target]
        users = list(node.users)
        bn_node = users[0] if len(users) == 1 else None
        bn = modules.get(bn_node.target) if isinstance(bn_node, fx.Node) and bn_node.op == "call_module" else None
        why = None
        if not _standard(conv, nn.Conv2d):
            why = f"{type(conv).__name__} has its own forward"
        elif bn is None or not _standard(bn, nn.BatchNorm2d) or bn_node.args[0] is not node:
            why = "no BatchNorm2d reads its output alone"
        elif not (bn.affine and bn.track_running_stats):
            why = "its BatchNorm has no affine parameters or running statistics"
        elif calls[node.target] > 1 or calls[bn_node.target] > 1 or aliases[id(conv)] > 1 or aliases[id(bn)] > 1:
            why = "it or its BatchNorm runs more than once per forward"
        if why is None:
            pairs.append((node.target, bn_node.target))
        else:
            skipped[node.target] = why
    return pairs, skipped


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


class RepModule(nn.Module):
    """A model whose conv -> BN pairs train with extra branches; `export()` folds them back."""

    def __init__(self, model: nn.Module, k: int = 1, conv1x1: bool = True, identity: bool = True) -> None:
        super().__init__()
        pairs, self.skipped = conv_bn_pairs(model)
        self.net = copy.deepcopy(model)
        self.pairs: list[tuple[str, str]] = []
        for conv_path, bn_path in pairs:
            rep = RepConv(self.net.get_submodule(conv_path), self.net.get_submodule(bn_path), k, conv1x1, identity)
            if not rep.branch_names():
                self.skipped[conv_path] = "no configured branch fits it: a 1x1 conv, not at stride 1 or channel-keeping"
                continue
            _replace(self.net, conv_path, rep)
            _replace(self.net, bn_path, nn.Identity())  # the BN now runs inside RepConv, on the main branch
            self.pairs.append((conv_path, bn_path))
        if not self.pairs:
            first = next(iter(self.skipped.items()), None)
            why = f" (e.g. {first[0]}: {first[1]})" if first else " (it has no Conv2d)"
            raise UserError(f"training.mode: reparam finds no conv -> BatchNorm2d pair to branch in "
                            f"{type(model).__name__}{why}; train it with mode baseline")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_features(x)

    def branched(self) -> dict[str, list[str]]:
        """{conv path: the branches beside it}."""
        return {conv: self.net.get_submodule(conv).branch_names() for conv, _ in self.pairs}

    def describe(self) -> str:
        """What was branched and what was not, for the run's log."""
        counts = Counter(tuple(b) for b in self.branched().values())
        lines = [f"reparam: {len(self.pairs)} conv -> BN pairs branched ("
                 + "; ".join(f"{n} with {' + '.join(b)}" for b, n in counts.items()) + ")"]
        by_reason: dict[str, list[str]] = {}
        for path, why in self.skipped.items():
            by_reason.setdefault(why, []).append(path)
        for why, paths in by_reason.items():
            shown = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
            lines.append(f"reparam: {len(paths)} conv{'s' * (len(paths) > 1)} left unbranched ({why}): {shown}")
        return "\n".join(lines)

    def own_layers(self) -> nn.Module:
        """The model as it was given, holding the main branch of each pair (its own conv and BN as they are now),
        without the extra branches: what the model trains from at init, not what it computes."""
        return self._rebuilt(lambda rep: (rep.conv, rep.bn))

    @torch.no_grad()
    def export(self) -> nn.Module:
        """The model as it was given (its class, its state_dict keys) with every branch folded into its own conv
        and BN: in eval mode its logits equal this model's."""
        return self._rebuilt(RepConv.folded)

    def _rebuilt(self, layers) -> nn.Module:
        """A copy of the model with each pair's RepConv and Identity replaced by `layers(rep)`: (conv, BN)."""
        plain = copy.deepcopy(self.net)
        for conv_path, bn_path in self.pairs:
            conv, bn = layers(plain.get_submodule(conv_path))
            _replace(plain, conv_path, conv)
            _replace(plain, bn_path, bn)
        return plain


def reparameterize(model: nn.Module, k: int = 1, conv1x1: bool = True, identity: bool = True) -> RepModule:
    """`model` (not modified) with its conv -> BN pairs branched for training; see the module's docstring."""
    if k == 0 and not conv1x1 and not identity:
        raise ValueError("reparameterize: no branch to add (k 0, conv1x1 and identity off)")
    return RepModule(model, k, conv1x1, identity)

