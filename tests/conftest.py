"""Shared fixtures: the real digits data at a small resolution, and a fast space config."""

from __future__ import annotations

import pytest
import torch

from netaug.config import load_space
from netaug.data import load_data

# The whole pipeline at the smallest budget that still exercises every stage (8 px digits, one supernet
# epoch, tiny searches); tests append their own overrides (later ones win).
TINY_PIPELINE = ["data.resolution=8", "training.batch_size=128", "training.bn_calib_batches=2", "supernet.epochs=1",
                 "supernet.s=2", "supernet.e_max=2", "supernet.resources.cpu=1", "search.num_paths=2",
                 "search.workers=1", "search.r=2", "sweep.r.low=1.2", "sweep.r.high=2", "sweep.s.high=2",
                 "sweep.num_paths=2", "sweep.resources.cpu=1", "sweep.scheduler=none", "final.epochs=2",
                 "final.resources.cpu=1", "final.train_eval_size=200"]


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
