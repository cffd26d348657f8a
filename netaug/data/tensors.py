"""In-memory image splits held as uint8 tensors, with tensor-side normalisation and augmentation.

No DataLoader: a split is two tensors, and a batch is an index into them. Augmentation (padded
random crop, optional horizontal flip) runs vectorised on the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4, self.images.shape
        assert self.labels.dtype == torch.int64 and len(self.labels) == len(self.images)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def take(self, index: np.ndarray | torch.Tensor) -> ImageSet:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageSet(self.images[index.to(self.images.device)].contiguous(), self.labels[index].contiguous())

    def to(self, device: torch.device | str) -> ImageSet:
        """The images on `device` (labels stay on the CPU: they index and score on the host)."""
        return ImageSet(self.images.to(device), self.labels)


@dataclass
class DataSplits:
    """train/val/test splits plus what a model and its export need to know about the data."""

    name: str
    train: ImageSet  # or a StreamSet (netaug.data.stream): same interface, images stay on disk
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool
    classes: tuple[str, ...] | None = None  # class names by label; None: the labels' numbers

    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes is not None else [str(i) for i in range(self.num_classes)]

    @property
    def in_channels(self) -> int:
        return int(self.train.sample_shape[0])

    @property
    def resolution(self) -> int:
        return int(self.train.sample_shape[-1])


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W) images to (size, size); identity when already that size."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=chunk.shape[-1] > size)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale."""
    x = images.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions) + 1 disjoint parts (the rest comes last), per class, by seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for i, frac in enumerate(fractions):
            n = int(round(frac * len(idx)))
            parts[i].append(idx[start:start + n])
            start += n
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)) for p in parts]


class Batcher:
    """Turns an ImageSet into normalised float batches on a device, with optional augmentation."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu",
                 crop_padding: int = 0, flip: bool = False, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255.0
        self.scale = 1.0 / (torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) * 255.0)
        self.crop_padding = crop_padding
        self.flip = flip
        self.channels_last = channels_last

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.device, non_blocking=True).float() - self.mean) * self.scale
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Padded random crop and optional horizontal flip, per sample, on uint8 images (on their device;
        the random draws come from the CPU `generator`, so CPU and GPU runs see the same crops)."""
        n, _, h, w = images.shape
        dev = images.device
        p = self.crop_padding
        if p > 0:
            padded = F.pad(images, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator).to(dev, non_blocking=True)
            ox = torch.randint(0, 2 * p + 1, (n, 1), generator=generator).to(dev, non_blocking=True)
            rows = (oy + torch.arange(h, device=dev)).view(n, 1, h, 1)
            cols = (ox + torch.arange(w, device=dev)).view(n, 1, 1, w)
            batch_idx = torch.arange(n, device=dev).view(n, 1, 1, 1)
            chan_idx = torch.arange(images.shape[1], device=dev).view(1, -1, 1, 1)
            images = padded[batch_idx, chan_idx, rows, cols]
        if self.flip:
            mask = (torch.rand(n, generator=generator) < 0.5).to(dev, non_blocking=True)
            images = torch.where(mask.view(n, 1, 1, 1), images.flip(3), images)
        return images

    def batches(self, data: ImageSet, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) batches. `generator` drives shuffling and augmentation (required for either).

        `shard=(rank, world)` yields worker `rank`'s contiguous 1/world of every batch of
        `batch_size`; the random draws are those of the whole batch, so the workers' shards together
        are exactly the one-worker batch."""
        n = len(data)
        if shuffle or augment:
            assert generator is not None, "shuffle/augment need a torch.Generator for reproducibility"
        rank, world = shard
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            images = data.images[idx.to(data.images.device, non_blocking=True)]
            if augment:
                images = self.augment(images, generator)
            if world > 1:
                part = slice(rank * len(idx) // world, (rank + 1) * len(idx) // world)
                images, idx = images[part], idx[part]
            yield self.normalise(images), data.labels[idx].to(self.device, non_blocking=True)
