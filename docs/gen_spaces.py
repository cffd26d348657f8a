"""Regenerate docs/spaces.md from the schema: `python docs/gen_spaces.py > docs/spaces.md`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.config import describe_schema  # noqa: E402


def render() -> str:
    lines = ["# Space file reference", "",
             "Every key of a space file (`spaces/*.yaml`), generated from `netaug/config.py`. Any key can be",
             "overridden on the command line with `--set section.key=value` (YAML syntax for the value).",
             "An unknown key, a wrong type or an out-of-range value stops the program with one line naming",
             "the key, and exit code 2.", ""]
    section = None
    for key, type_name, default, doc in describe_schema():
        head = key.split(".")[0]
        if head != section:
            section = head
            lines += ["", f"## {section}", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
        lines.append(f"| `{key}` | {type_name.replace('|', '/')} | `{shown}` | {doc} |")
    lines += ["", *SPEC_FORMAT.splitlines()]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


EXAMPLE = Path(__file__).resolve().parents[1] / "spaces" / "models" / "tiny-se.yaml"
SPEC_FORMAT = f"""
## Your own model: `model.spec`

`model.spec: path.yaml` trains, augments, sweeps, exports and quantizes a network you describe, such
as a once-for-all or MCUNet sub-network written by hand. It replaces `model.name`; the number of
classes and input channels come from the dataset, dropout from `model.dropout`. The example
`spaces/models/tiny-se.yaml`:

```yaml
{EXAMPLE.read_text().strip()}
```

| where | key | meaning |
| --- | --- | --- |
| `stem` | `channels` | output width of the 3x3 stem conv (required) |
| `stem` | `stride` | 1 or 2 (default 2) |
| `stem` | `act` | relu, relu6, h_swish or swish (default relu6) |
| `blocks[i]` | `out` | output width (required) |
| `blocks[i]` | `in` | optional; must equal the previous output (the stem's for the first block) |
| `blocks[i]` | `mid` or `expand` | middle width, or expand ratio x input width (rounded to 8); neither, or \
expand 1: a depthwise-separable block |
| `blocks[i]` | `kernel` | depthwise kernel, odd (default 3) |
| `blocks[i]` | `stride` | 1 or 2 (default 1) |
| `blocks[i]` | `se` | squeeze width of a squeeze-and-excitation layer after the depthwise conv; \
`true`: mid / 4 rounded to 8, at least 16 |
| `blocks[i]` | `act` | activation of the expand and depthwise convs (default relu6); the projection is linear |
| `blocks[i]` | `residual` | identity shortcut; default: stride 1 and in == out. A residual needs both |
| `head` | `feature` | width of the 1x1 feature conv before pooling; 0: none (the classifier reads the last block) |
| `head` | `linear` | width of a post-pool linear layer with bias (MobileNetV3's 1280); 0: none |
| `head` | `act` | activation of the feature conv and the head layer (default relu6) |

NetAug widens width groups together: the stem; then each block without a shortcut starts a new
group that its residual successors join (a residual first block joins the stem's); the feature conv;
the head layer. Middle widths are augmented per block, and an SE layer's squeeze width follows its
block's middle width. A malformed field stops the program with one line naming the file and the
field, and exit code 2, e.g. `error: model.spec: my.yaml: blocks[3].residual: a residual block needs
stride 1, got stride 2`.
"""


if __name__ == "__main__":
    sys.stdout.write(render())
