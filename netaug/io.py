"""Files are never half-written: write to a temporary name beside the target, then rename. And the
user's YAML files are read with one-line errors naming the key they came from."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netaug.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically, on error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table, path: str | Path) -> None:
    """Write a pyarrow Table (or pandas DataFrame) as Parquet: temporary name first, then rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_yaml(path: str | Path, key: str) -> Any:
    """The parsed YAML file at `path`; a missing file or invalid YAML raises UserError naming `key`
    (the flag or space key that gave the path) and, for YAML, the line."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{key}: no such file: {path}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{key}: {p}:{where} is not valid YAML") from None
