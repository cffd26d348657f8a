"""Positional sub-network configs of the built-in networks' former augmenter, read as named ones.

That augmenter (before one torch.fx augmenter served every model) wrote a config as ((width multiplier per
width group), (expand multiplier per block)) with groups in a fixed layout: the stem, each stage, the feature
conv (a slot even where a network has none) and MobileNetV3's head layer; one expand per block, 1 for a block
without an expansion. a* files saved then (studies/convergence/astar/*.json) still load through this adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

from netaug.models.network import InvertedResidualNet


def positional_layout(net: InvertedResidualNet) -> tuple[list[str | None], list[str | None]]:
    """(width slots, expand slots) of the former layout, each a layer writing that group (None: no such layer)."""
    spec = net.spec
    widths: list[str | None] = ["stem.conv"]
    for stage in range(spec.num_stages):
        first = next(i for i, b in enumerate(spec.blocks) if b.stage == stage)
        widths.append(f"blocks.{first}.project.conv")
    widths.append("feature_mix.conv" if spec.feature_ch else None)
    if spec.head_ch:
        widths.append("head.0")
    expands = [f"blocks.{i}.expand.conv" if b.mid_ch is not None else None for i, b in enumerate(spec.blocks)]
    return widths, expands


def named_from_positional(net: InvertedResidualNet, config: Sequence) -> dict[str, float] | None:
    """{layer name: multiplier} of a former positional config of `net`, or None when `config` does not have the
    former layout's lengths. A slot without a layer is ignored."""
    w_slots, e_slots = positional_layout(net)
    try:
        widths, expands = (tuple(float(v) for v in part) for part in config)
    except (TypeError, ValueError):
        return None
    if len(widths) != len(w_slots) or len(expands) != len(e_slots):
        return None
    named: dict[str, float] = {}
    for slots, values in ((w_slots, widths), (e_slots, expands)):
        for name, value in zip(slots, values):
            if name is not None:  # a slot without a layer (MCUNet's feature conv) computes nothing: ignored
                named[name] = value
    return named
