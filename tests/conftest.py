"""Shared fixtures: the real digits data at a small resolution, and a fast space config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from netaug.config import load_space
from netaug.data import load_data
from netaug.records import TRIALS_SCHEMA

# The whole pipeline at the smallest budget that still exercises every stage (8 px digits, one supernet
# epoch, tiny searches); tests append their own overrides (later ones win).
TINY_PIPELINE = ["data.resolution=8", "training.batch_size=128", "training.bn_calib_batches=2", "supernet.epochs=1",
                 "supernet.s=2", "supernet.e_max=2", "supernet.resources.cpu=1", "search.num_paths=2",
                 "search.workers=1", "search.r=2", "sweep.r.low=1.2", "sweep.r.high=2", "sweep.s.high=2",
                 "sweep.num_paths=2", "sweep.resources.cpu=1", "sweep.scheduler=none", "final.epochs=2",
                 "final.resources.cpu=1", "final.train_eval_size=200",
                 "compute.unit=epochs"]  # tests of other things keep sweep.epochs; the shared run measures compute

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "mbv2.yaml"
# The four-stage run that test_final, test_analysis and test_sweep read (one run for all saves CI minutes):
# two sweep modes, three trials (too few for importances), every final arm (reparam too) at two seeds, int8 on, at
# equal compute.
# Compute in seconds: each trial trains what sweep.budget buys, and baseline_equal what the winner's 2 epochs cost.
SHARED_RUN = TINY_PIPELINE + ["search.num_paths=3", "sweep.concurrency=2", "sweep.trials=3", "sweep.budget=5",
                              "sweep.sampler=random", "sweep.mode=[netaug, netaug_rkd]", "final.seeds=2",
                              "sweep.seed=3",  # draws both modes (seed 0 draws netaug_rkd three times)
                              "final.arms=[winner, baseline, netaug_fixed, baseline_equal, reparam]",
                              "compute.unit=seconds", "compute.calibration_steps=4",
                              "sweep.macs_limit={low: 2.0, high: 4.0}"]  # each trial's a* under its own limit


def winner_row(**values) -> dict:
    """A sweep's one finished trial (NetAug, r=2, s=1) as trials.parquet holds it: `--stage final` on its own."""
    row = {name: None for name in TRIALS_SCHEMA.names}
    row.update({"trial_id": "t0", "status": "TERMINATED", "r": 2.0, "s": 1, "aug_loss_weight": 1.0, "mode": "netaug",
                "val_top1": 0.5, **values})
    return row


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits16():
    return load_data(load_space(None, ["data.resolution=16"]).data)


@pytest.fixture
def fast_cfg():
    """A small, fast configuration (digits at 16 px, MBV2-Tiny, r=2, s=2)."""
    return load_space(None, ["data.resolution=16", "training.batch_size=64", "training.lr=0.05",
                             "training.epochs=2", "training.bn_calib_batches=2", "netaug.r=2"])


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """(config, run folder, stdout lines) of `search/run.py` on the shared tiny space, as a user runs it."""
    from netaug.config import load_space

    out = tmp_path_factory.mktemp("pipeline") / "run"
    args = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(SPACE), "--out", str(out),
            "--no-dashboard", *[a for s in SHARED_RUN for a in ("--set", s)]]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_space(SPACE, SHARED_RUN), out, proc.stdout.splitlines()
