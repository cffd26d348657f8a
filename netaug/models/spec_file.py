"""A user's own inverted-residual network from a YAML file (`model.spec: path.yaml`).

    stem: {channels: 16, stride: 2, act: h_swish}
    blocks:
      - {out: 16, kernel: 3, act: relu}                         # no mid/expand: depthwise-separable
      - {out: 24, mid: 64, kernel: 3, stride: 2, act: relu}
      - {out: 24, expand: 3, kernel: 3}                         # mid = in x 3; residual: auto
      - {out: 40, mid: 72, kernel: 5, stride: 2, se: 24}        # squeeze-and-excitation, 24 wide
    head: {feature: 448, linear: 0, act: relu6}                 # linear: MobileNetV3's post-pool layer

A block's `in` may be written and must then equal the previous output; `residual` defaults to
stride 1 with in == out. Width groups (what NetAug widens together) follow the residuals: a block
without a shortcut starts a new group, a residual block joins its input's. The number of classes
and input channels come from the dataset, dropout from `model.dropout`. Every malformed field
raises `UserError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netaug.errors import UserError
from netaug.io import read_yaml
from netaug.models.spec import ACTIVATION_NAMES, BlockSpec, NetSpec, make_divisible

STEM_KEYS = {"channels", "stride", "kernel", "act"}
BLOCK_KEYS = {"in", "out", "mid", "expand", "kernel", "stride", "se", "act", "residual"}
HEAD_KEYS = {"feature", "linear", "act"}


def _section(raw: dict, key: str, known: set[str], where: str, required: bool = True) -> dict:
    value = raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}{key}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise UserError(f"{where}{key}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    return value


def _int(section: dict, key: str, where: str, default: Any = ..., low: int = 1) -> int:
    if key not in section or section[key] is None:
        if default is ...:
            raise UserError(f"{where}.{key}: missing")
        return default
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{where}.{key}: expected an integer >= {low}, got {value!r}")
    return value


def _act(section: dict, where: str, default: str) -> str:
    value = section.get("act", default)
    if value not in ACTIVATION_NAMES:
        raise UserError(f"{where}.act: unknown activation {value!r} (known: {', '.join(ACTIVATION_NAMES)})")
    return value


def spec_from_mapping(raw: Any, num_classes: int, in_channels: int, dropout: float = 0.0, where: str = "") -> NetSpec:
    """Build and validate a NetSpec from the parsed file; `where` prefixes every message (the path)."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}expected a mapping with stem, blocks and head")
    unknown = sorted(set(raw) - {"name", "stem", "blocks", "head"})
    if unknown:
        raise UserError(f"{where}{unknown[0]}: unknown key (known: name, stem, blocks, head)")
    stem = _section(raw, "stem", STEM_KEYS, where)
    stem_ch = _int(stem, "channels", f"{where}stem")
    stem_stride = _int(stem, "stride", f"{where}stem", 2)
    if stem_stride not in (1, 2):
        raise UserError(f"{where}stem.stride: must be 1 or 2, got {stem_stride}")
    if _int(stem, "kernel", f"{where}stem", 3) != 3:
        raise UserError(f"{where}stem.kernel: the stem conv is 3x3")
    stem_act = _act(stem, f"{where}stem", "relu6")
    blocks_raw = raw.get("blocks")
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise UserError(f"{where}blocks: expected a non-empty list of blocks")
    blocks: list[BlockSpec] = []
    in_ch, stage = stem_ch, -1
    for i, b in enumerate(blocks_raw):
        at = f"{where}blocks[{i}]"
        if not isinstance(b, dict):
            raise UserError(f"{at}: expected a mapping, got {b!r}")
        bad = sorted(set(b) - BLOCK_KEYS)
        if bad:
            raise UserError(f"{at}.{bad[0]}: unknown key (known: {', '.join(sorted(BLOCK_KEYS))})")
        if "in" in b and b["in"] != in_ch:
            source = "the stem's" if i == 0 else f"blocks[{i - 1}]'s"
            raise UserError(f"{at}.in: channel mismatch: {b['in']!r}, but {source} output is {in_ch}")
        out = _int(b, "out", at)
        if b.get("mid") is not None and b.get("expand") is not None:
            raise UserError(f"{at}.expand: give mid or expand, not both")
        if b.get("expand") is not None:
            expand = b["expand"]
            if isinstance(expand, bool) or not isinstance(expand, (int, float)) or expand < 1:
                raise UserError(f"{at}.expand: expected a number >= 1, got {expand!r}")
            mid = None if expand == 1 else make_divisible(expand * in_ch)
        else:
            mid = _int(b, "mid", at, None)
        kernel = _int(b, "kernel", at, 3)
        if kernel % 2 == 0:
            raise UserError(f"{at}.kernel: must be odd, got {kernel}")
        stride = _int(b, "stride", at, 1)
        if stride not in (1, 2):
            raise UserError(f"{at}.stride: must be 1 or 2, got {stride}")
        se = b.get("se")
        if se is True:
            se = max(make_divisible((mid or in_ch) / 4), 16)
        elif se is False:
            se = None
        elif se is not None:
            se = _int(b, "se", at)
        if se is not None and mid is None:
            raise UserError(f"{at}.se: squeeze-and-excitation needs an expanded block (mid or expand > 1)")
        residual = b.get("residual", stride == 1 and in_ch == out)
        if not isinstance(residual, bool):
            raise UserError(f"{at}.residual: expected true or false, got {residual!r}")
        if residual and stride != 1:
            raise UserError(f"{at}.residual: a residual block needs stride 1, got stride {stride}")
        if residual and in_ch != out:
            raise UserError(f"{at}.residual: a residual block needs in == out, got {in_ch} -> {out}")
        if not residual:
            stage += 1
        blocks.append(BlockSpec(in_ch, out, mid, kernel, stride, residual, stage, se, _act(b, at, "relu6")))
        in_ch = out
    head = _section(raw, "head", HEAD_KEYS, where, required=False)
    spec = NetSpec(in_channels, stem_ch, stem_stride, tuple(blocks), _int(head, "feature", f"{where}head", 0, low=0),
                   num_classes, float(dropout), stem_act=stem_act, head_act=_act(head, f"{where}head", "relu6"),
                   head_ch=_int(head, "linear", f"{where}head", 0, low=0))
    try:
        spec.validate()
    except ValueError as exc:  # a case the checks above missed: still one line naming the field
        raise UserError(f"{where}{exc}") from None
    return spec


def load_spec_file(path: str | Path, num_classes: int, in_channels: int, dropout: float = 0.0) -> NetSpec:
    """Read a spec file; errors name the file and the field ("my.yaml: blocks[3].residual: ...")."""
    raw = read_yaml(path, "model.spec")
    return spec_from_mapping(raw, num_classes, in_channels, dropout, where=f"model.spec: {Path(path).expanduser()}: ")
