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
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
