"""Atomic writes: the target appears whole or not at all, and a failed write leaves what was there."""

from __future__ import annotations

import pytest

from netaug.io import atomic_path


def test_atomic_path_replaces_on_success_and_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "results.parquet"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.parquet"]  # no temporary left behind
