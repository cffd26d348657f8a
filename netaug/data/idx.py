"""MNIST-format IDX files (MNIST, Fashion-MNIST), gzipped or not."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from netaug.data.tensors import ImageSet
from netaug.errors import UserError

SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserError(f"data.root: missing IDX file {root / (stem + '.gz')}")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (unsigned-byte payload) into a numpy array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"data.root: cannot read {path}: {exc}") from None
    if len(raw) < 4:
        raise UserError(f"data.root: {path} is not an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UserError(f"data.root: {path} is not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise UserError(f"data.root: {path} is truncated ({payload.size} of {int(np.prod(dims))} bytes)")
    return payload.reshape(dims)


def load_idx_split(root: str | Path, split: str) -> ImageSet:
    """The `train` or `test` split of an IDX dataset folder as uint8 (N, 1, H, W)."""
    root = Path(root).expanduser()
    prefix = SPLIT_PREFIX[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"data.root: {root} holds IDX files of mismatched shapes")
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
