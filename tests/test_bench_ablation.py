"""bench/ablation.py writes the documented Parquet schema, computes metrics from predictions, resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"mode", "seed", "epochs", "val_top1", "test_top1", "train_s", "mean_step_s",
           *(f"test_{m}_at_{k}" for k in (1, 3, 5) for m in ("precision", "recall", "f1"))}


def run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/ablation.py", "--dataset", "digits", "--subset", "128",
                           "--epochs", "1", "--seeds", "2", "--modes", "baseline", "netaug_rkd",
                           "--set", "data.resolution=16", "--set", "netaug.r=2", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_ablation_schema_table_and_resume(tmp_path):
    out = tmp_path / "results.parquet"
    first = run(out)
    assert first.returncode == 0, first.stderr[-2000:]
    df = pd.read_parquet(out)
    assert COLUMNS <= set(df.columns)
    assert sorted(zip(df["mode"], df["seed"])) == [("baseline", 0), ("baseline", 1), ("netaug_rkd", 0),
                                                    ("netaug_rkd", 1)]
    assert (df["epochs"] == 1).all() and df[list(COLUMNS - {"mode"})].notna().all().all()
    # Micro recall@1 is top-1; macro recall is bounded and grows with k.
    assert (df["test_recall_at_5"] >= df["test_recall_at_1"] - 1e-12).all()
    assert df[[c for c in COLUMNS if c.startswith("test_")]].apply(lambda s: s.between(0, 1)).all().all()
    assert "baseline" in first.stdout and "±" in first.stdout
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # temp name, then renamed
    again = run(out)  # every (mode, seed) is already there: nothing is trained again
    assert again.returncode == 0 and "seed 0:" not in again.stdout
    assert pd.read_parquet(out).equals(df)
