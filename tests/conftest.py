"""Shared fixtures: the real digits data at a small resolution, and a fast space config."""

from __future__ import annotations

import pytest
import torch

from netaug.config import load_space
from netaug.data import load_data


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
