"""Base models: `build_model(name, num_classes, in_channels, **kw)`.

Small-input option: at 64 px or less (or with `small_input=True`) the stem and the first strided
stage run at stride 1, as CIFAR variants of MobileNetV2 do, so a 32 px image ends at 4x4 rather
than 1x1 before global pooling.
"""

from __future__ import annotations

from collections.abc import Callable

from netaug.config import MODELS
from netaug.errors import UserError
from netaug.models.network import InvertedResidualNet, MCUNet, MobileNetV2, MobileNetV3, ProxylessNASMobile
from netaug.models.profile import count_params, profile_macs
from netaug.models.spec import BlockSpec, NetSpec, make_divisible, stage_blocks
from netaug.models.spec_file import load_spec_file

__all__ = ["BlockSpec", "InvertedResidualNet", "MCUNet", "MobileNetV2", "MobileNetV3", "NetSpec", "ProxylessNASMobile",
           "build_from_spec_file", "build_model", "count_params", "profile_macs", "resolve_small_input"]

# (expand ratio t, channels c, blocks n, stride s) of MobileNetV2.
MBV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
# ProxylessNAS-Mobile: per-stage (expand ratios, kernel sizes, blocks, stride, channels), then the head.
PROXYLESS_STAGES = [([3, 3], [5, 3], 2, 2, 32), ([3, 3, 3, 3], [7, 3, 5, 5], 4, 2, 40),
                    ([6, 3, 3, 3], [7, 5, 5, 5], 4, 2, 80), ([6, 3, 3, 3], [5, 5, 5, 5], 4, 1, 96),
                    ([6, 6, 3, 3], [7, 7, 7, 7], 4, 2, 192)]
# MCUNet (the NetAug paper's ImageNet model, 81.8M MACs at 176 px): per-stage (expand ratios, kernel
# sizes, blocks, stride, channels) after a 16-channel stem and an 8-channel depthwise-separable block.
MCUNET_STAGES = [([3, 5, 5, 4], [7, 3, 7, 5], 4, 2, 16), ([5, 5, 5], [5, 5, 5], 3, 2, 24),
                 ([5, 6, 4], [3, 7, 5], 3, 2, 40), ([5, 5, 5], [5, 7, 3], 3, 1, 48), ([6, 5, 4], [3, 7, 3], 3, 2, 96)]
# MobileNetV3-Large as the official NetAug code defines it (models/base/mbv3.py): per stage (middle
# widths per block, kernel, blocks, stride, activation, SE), after a 16-channel h-swish stem and a residual
# depthwise-separable 16-channel block; then stages to 24, 40, 80, 112, 160 channels and a 960 -> 1280 head.
MBV3_STAGES = [([64, 72], 3, 2, 2, "relu", False), ([72, 120, 120], 5, 3, 2, "relu", True),
               ([240, 200, 184, 184], 3, 4, 2, "h_swish", False), ([480, 672], 3, 2, 1, "h_swish", True),
               ([672, 960, 960], 5, 3, 2, "h_swish", True)]
MBV3_WIDTHS = [16, 24, 40, 80, 112, 160]
SMALL_INPUT_MAX_RESOLUTION = 64


def resolve_small_input(small_input: bool | None, resolution: int | None) -> bool:
    """`None` means automatic: small-input layout at 64 px or less."""
    if small_input is not None:
        return small_input
    return resolution is not None and resolution <= SMALL_INPUT_MAX_RESOLUTION


def mobilenetv2_spec(num_classes: int, in_channels: int = 3, width_mult: float = 1.0, small_input: bool = False,
                     dropout: float = 0.0, feature_ch: int | None = None) -> NetSpec:
    stem = make_divisible(32 * width_mult)
    blocks: list[BlockSpec] = []
    in_ch, first_strided = stem, True
    for stage, (t, c, n, s) in enumerate(MBV2_STAGES):
        if small_input and s == 2 and first_strided:
            s, first_strided = 1, False
        out = make_divisible(c * width_mult)
        blocks += stage_blocks(in_ch, out, n, s, stage, [t] * n, [3] * n)
        in_ch = out
    if feature_ch is None:
        feature_ch = make_divisible(1280 * max(1.0, width_mult))
    return NetSpec(in_channels, stem, 1 if small_input else 2, tuple(blocks), feature_ch, num_classes, dropout)


def mobilenetv2_tiny_spec(num_classes: int, in_channels: int = 3, small_input: bool = False,
                          dropout: float = 0.0) -> NetSpec:
    """MCUNet/NetAug MobileNetV2-Tiny: MBV2 at width 0.35 whose head is 56 -> 112 -> 448."""
    return mobilenetv2_spec(num_classes, in_channels, 0.35, small_input, dropout, feature_ch=448)


def searched_blocks(stem: int, first: int, stages: list, width_mult: float, small_input: bool
                    ) -> tuple[list[BlockSpec], int]:
    """A depthwise-separable first block from the stem, then stages of searched (expand ratios, kernel
    sizes, blocks, stride, channels); the small-input layout keeps the first stage at stride 1.
    Returns the blocks and the last width."""
    blocks = stage_blocks(stem, first, 1, 1, 0, [1], [3])
    in_ch = first
    for stage, (expands, kernels, n, s, c) in enumerate(stages, start=1):
        out = make_divisible(c * width_mult)
        blocks += stage_blocks(in_ch, out, n, 1 if small_input and stage == 1 else s, stage, expands, kernels)
        in_ch = out
    return blocks, in_ch


def proxylessnas_mobile_spec(num_classes: int, in_channels: int = 3, width_mult: float = 1.0,
                             small_input: bool = False, dropout: float = 0.0) -> NetSpec:
    stem = make_divisible(32 * width_mult)
    blocks, in_ch = searched_blocks(stem, make_divisible(16 * width_mult), PROXYLESS_STAGES, width_mult, small_input)
    head = make_divisible(320 * width_mult)
    blocks += stage_blocks(in_ch, head, 1, 1, len(PROXYLESS_STAGES) + 1, [6], [7])
    feature_ch = max(make_divisible(1280 * width_mult), 1280)
    return NetSpec(in_channels, stem, 1 if small_input else 2, tuple(blocks), feature_ch, num_classes, dropout)


def mcunet_spec(num_classes: int, in_channels: int = 3, width_mult: float = 1.0, small_input: bool = False,
                dropout: float = 0.0) -> NetSpec:
    """MCUNet: stem 16 -> depthwise-separable 8 -> 5 searched stages -> 7x7 inverted head block (expand
    480) to 160 channels -> pool -> linear. No 1x1 feature conv (feature_ch 0)."""
    stem = make_divisible(16 * width_mult)
    blocks, in_ch = searched_blocks(stem, make_divisible(8 * width_mult), MCUNET_STAGES, width_mult, small_input)
    blocks += stage_blocks(in_ch, make_divisible(160 * width_mult), 1, 1, len(MCUNET_STAGES) + 1, [5], [7])
    return NetSpec(in_channels, stem, 1 if small_input else 2, tuple(blocks), 0, num_classes, dropout)


def mobilenetv3_spec(num_classes: int, in_channels: int = 3, width_mult: float = 1.0, small_input: bool = False,
                     dropout: float = 0.0) -> NetSpec:
    """MobileNetV3-Large; the NetAug paper trains it at width 0.35 (`model.width_mult: 0.35`). SE squeeze
    width: a quarter of the middle width, rounded to 8, at least 16."""
    widths = [make_divisible(w * width_mult) for w in MBV3_WIDTHS]
    stem = widths[0]
    blocks = [BlockSpec(stem, stem, None, 3, 1, residual=True, stage=-1, act="relu")]
    in_ch, first_strided = stem, True
    for stage, ((mids, kernel, n, s, act, se), out) in enumerate(zip(MBV3_STAGES, widths[1:])):
        if small_input and s == 2 and first_strided:
            s, first_strided = 1, False
        for i in range(n):
            mid = make_divisible(round(mids[i] * width_mult))
            blocks.append(BlockSpec(in_ch, out, mid, kernel, s if i == 0 else 1, residual=i > 0, stage=stage,
                                    se_ch=max(make_divisible(mid / 4), 16) if se else None, act=act))
            in_ch = out
    feature = make_divisible(960 * width_mult)
    head = max(make_divisible(1280 * width_mult), 1280)
    return NetSpec(in_channels, stem, 1 if small_input else 2, tuple(blocks), feature, num_classes, dropout,
                   stem_act="h_swish", head_act="h_swish", head_ch=head)


_REGISTRY: dict[str, tuple[type[InvertedResidualNet], Callable[..., NetSpec]]] = {
    "mobilenetv2_tiny": (MobileNetV2, mobilenetv2_tiny_spec),
    "mobilenetv2": (MobileNetV2, mobilenetv2_spec),
    "mobilenetv3": (MobileNetV3, mobilenetv3_spec),
    "proxylessnas_mobile": (ProxylessNASMobile, proxylessnas_mobile_spec),
    "mcunet": (MCUNet, mcunet_spec),
}


def build_from_spec_file(path: str, num_classes: int, in_channels: int = 3, dropout: float = 0.0
                         ) -> InvertedResidualNet:
    """A user's own network described in a YAML spec file (netaug/models/spec_file.py)."""
    return InvertedResidualNet(load_spec_file(path, num_classes, in_channels, dropout))


assert tuple(_REGISTRY) == MODELS, "netaug.config.MODELS names the registry's models, in its order"


def build_model(name: str, num_classes: int, in_channels: int = 3, *, resolution: int | None = None,
                small_input: bool | None = None, **kw) -> InvertedResidualNet:
    """Build a base model by name. `resolution` lets `small_input=None` pick the layout automatically."""
    if name not in _REGISTRY:
        raise UserError(f"model.name: unknown model {name!r} (known: {', '.join(_REGISTRY)})")
    cls, make_spec = _REGISTRY[name]
    spec = make_spec(num_classes, in_channels, small_input=resolve_small_input(small_input, resolution), **kw)
    return cls(spec)
