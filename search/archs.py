"""archs.parquet: one row per path evaluated by an SPOS search, appended per search call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from netaug.io import write_parquet
from netaug.spos import Candidate, path_id

ARCHS_FILE = "archs.parquet"
SCHEMA = pa.schema([
    ("candidate_id", pa.string()), ("search_id", pa.string()), ("method", pa.string()),
    ("generation", pa.int64()), ("r", pa.float64()), ("s", pa.int64()), ("arch", pa.string()),
    ("macs", pa.int64()), ("params", pa.int64()), ("val_top1", pa.float64()), ("val_loss", pa.float64()),
    ("chosen", pa.bool_()),
])


def archs_table(candidates: Sequence[Candidate], chosen: Candidate, search_id: str, method: str,
                r: float, s: int) -> pa.Table:
    rows = [{**c.row(), "candidate_id": path_id(c.path), "search_id": search_id, "method": method,
             "r": float(r), "s": int(s), "chosen": c.path == chosen.path} for c in candidates]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def append_archs(run_dir: Path, table: pa.Table) -> Path:
    """Append rows to `<run_dir>/archs.parquet` (rewritten atomically, so a reader never sees half a file)."""
    path = run_dir / ARCHS_FILE
    if path.exists():
        table = pa.concat_tables([pq.read_table(path, schema=SCHEMA), table])
    write_parquet(table, path)
    return path
