"""CIFAR-10 in its standard python pickle batches (data_batch_1..5, test_batch) under a user path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from netaug.data.tensors import ImageSet
from netaug.errors import UserError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


def _root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    nested = root / "cifar-10-batches-py"
    return nested if nested.is_dir() else root


def load_cifar10_split(root: str | Path, split: str) -> ImageSet:
    """The `train` or `test` split as uint8 (N, 3, 32, 32)."""
    folder = _root(root)
    images, labels = [], []
    for name in TRAIN_BATCHES if split == "train" else TEST_BATCHES:
        path = folder / name
        if not path.is_file():
            raise UserError(f"data.root: missing CIFAR-10 batch {path}")
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            target = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise UserError(f"data.root: {path} is not a CIFAR-10 batch ({exc})") from None
        images.append(data)
        labels.append(target)
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))
