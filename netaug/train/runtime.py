"""Process set-up shared by every stage: torch threads, device choice, seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from netaug.errors import UserError


def cpus_given() -> int:
    """CPUs this process may use: OMP_NUM_THREADS when set (Ray sets it per trial), else its affinity."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads() -> int:
    """Make torch's intra-op threads follow the CPUs the process is given."""
    n = cpus_given()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """"auto" is CUDA when present. A data-parallel worker takes GPU LOCAL_RANK (or `local_rank`)
    among those it sees (one, when Ray gives each worker its own)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device: cuda was asked for but no CUDA device is available")
    if name == "cuda" and local_rank is not None:
        index = int(os.environ.get("LOCAL_RANK", local_rank)) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
