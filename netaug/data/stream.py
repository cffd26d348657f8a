"""Datasets larger than memory: images stay on disk and are decoded per batch by DataLoader workers.

Two sources, both indexed once (paths or tar offsets and labels: a few bytes per image, never pixels):

- an ImageFolder tree `root/{train,val,test}/<class>/*.jpg|png` (val is carved from train by
  `data.split_seed` when absent);
- webdataset-style tar shards `root/{train,val,test}/*.tar` whose members `<key>.jpg|png` pair with
  `<key>.cls` (the class index as text). Members are read by their offset in the shard, so shards
  behave like folders: shuffling, per-sample seeds and subsets work the same.

Workers decode and resize with OpenCV (chosen by bench/loader.py: 1.4-1.9x Pillow's images/s per
process), then apply the ImageNet recipes' transforms: train = random-resized crop to
`data.resolution` plus optional horizontal flip; eval = resize the short side to resolution / 0.875,
centre crop. Each sample's randomness comes from a seed drawn in the main process, so a batch is the
same whatever the number of workers.
"""

from __future__ import annotations

import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from netaug.data.tensors import Batcher
from netaug.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg")
EVAL_CROP = 0.875  # eval: resize the short side to resolution / 0.875, then centre crop
CROP_SCALE = (0.08, 1.0)  # random-resized crop: area fraction and aspect ratio ranges (ImageNet recipes)
CROP_RATIO = (3 / 4, 4 / 3)


# ---------------------------------------------------------------------------------------- sources
@dataclass
class FolderSource:
    """Image files under `root`: relative paths as fixed-width bytes (compact, fork-friendly)."""

    root: str
    paths: np.ndarray  # dtype S, relative to root

    def read(self, i: int) -> bytes:
        with open(Path(self.root) / self.paths[i].decode(), "rb") as f:
            return f.read()

    def name(self, i: int) -> str:
        return str(Path(self.root) / self.paths[i].decode())

    def take(self, index: np.ndarray) -> FolderSource:
        return FolderSource(self.root, self.paths[index])


@dataclass
class TarSource:
    """Members of tar shards, read by byte offset: shard number, data offset and size per image."""

    shards: tuple[str, ...]
    shard: np.ndarray  # int32
    offset: np.ndarray  # int64
    size: np.ndarray  # int64

    def read(self, i: int) -> bytes:
        with open(self.shards[int(self.shard[i])], "rb") as f:
            f.seek(int(self.offset[i]))
            return f.read(int(self.size[i]))

    def name(self, i: int) -> str:
        return f"{self.shards[int(self.shard[i])]}@{int(self.offset[i])}"

    def take(self, index: np.ndarray) -> TarSource:
        return TarSource(self.shards, self.shard[index], self.offset[index], self.size[index])


Source = FolderSource | TarSource


@dataclass
class StreamSet:
    """A split streamed from disk: where each image is, its label, and the decoded sample shape."""

    source: Source
    labels: torch.Tensor  # int64 (N,)
    resolution: int
    channels: int = 3

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.channels, self.resolution, self.resolution

    def take(self, index: np.ndarray | torch.Tensor) -> StreamSet:
        index = np.asarray(index, dtype=np.int64)
        return StreamSet(self.source.take(index), self.labels[torch.from_numpy(index)].contiguous(),
                         self.resolution, self.channels)


def _check_dir(path: Path) -> Path:
    if not path.is_dir():
        raise UserError(f"data.root: no such directory: {path} (expected layout: root/train/<class>/*.png|jpg, or "
                        "root/train/*.tar shards; optionally val and test alike)")
    return path


def folder_classes(root: str | Path) -> list[str]:
    train = _check_dir(Path(root).expanduser() / "train")
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not names:
        raise UserError(f"data.root: {train} has no class folders")
    return names


def index_folder(root: str | Path, split: str, classes: list[str]) -> tuple[FolderSource, torch.Tensor]:
    """Every image file of `root/split/<class>/`, sorted, labelled by `classes` order."""
    root = Path(root).expanduser()
    folder = _check_dir(root / split)
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        files = sorted(p.name for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS)
        paths += [f"{split}/{name}/{f}" for f in files]
        labels += [label] * len(files)
    if not paths:
        raise UserError(f"data.root: {folder} holds no .png or .jpg images")
    return FolderSource(str(root), np.array(paths, dtype=np.bytes_)), torch.tensor(labels, dtype=torch.int64)


def index_shards(root: str | Path, split: str) -> tuple[TarSource, torch.Tensor]:
    """Every image member of `root/split/*.tar`, in shard then member order, labelled by its `.cls`."""
    folder = _check_dir(Path(root).expanduser() / split)
    shards = sorted(str(p) for p in folder.glob("*.tar"))
    if not shards:
        raise UserError(f"data.root: {folder} holds no .tar shards")
    shard_ids, offsets, sizes, labels = [], [], [], []
    for number, shard in enumerate(shards):
        images: dict[str, tuple[int, int]] = {}
        classes: dict[str, int] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition(".")
                    if f".{ext.lower()}" in EXTENSIONS:
                        images[key] = (member.offset_data, member.size)
                    elif ext == "cls":
                        classes[key] = int(tar.extractfile(member).read().decode().strip())
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise UserError(f"data.root: cannot read shard {shard} ({exc})") from None
        for key in sorted(images):
            if key not in classes:
                raise UserError(f"data.root: {shard}: image {key} has no {key}.cls label")
            shard_ids.append(number)
            offsets.append(images[key][0])
            sizes.append(images[key][1])
            labels.append(classes[key])
    if not labels:
        raise UserError(f"data.root: the shards in {folder} hold no images")
    source = TarSource(tuple(shards), np.array(shard_ids, dtype=np.int32), np.array(offsets, dtype=np.int64),
                       np.array(sizes, dtype=np.int64))
    return source, torch.tensor(labels, dtype=torch.int64)


# ---------------------------------------------------------------------------------------- decoding
def random_resized_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random crop covering CROP_SCALE of the area at a CROP_RATIO aspect ratio;
    the centre crop of the largest box that fits after 10 failed draws (the usual fallback)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif in_ratio > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """To (width, height): area averaging when shrinking (anti-aliased, as Pillow), bilinear otherwise."""
    import cv2

    shrink = size[0] < image.shape[1] or size[1] < image.shape[0]
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out if out.ndim == 3 else out[:, :, None]


def decode(data: bytes, resolution: int, seed: int, flip: bool, channels: int = 3) -> np.ndarray:
    """One image as uint8 (C, resolution, resolution): train transform when seed >= 0, else eval.

    OpenCV decodes and resizes (1.4-1.9x Pillow per process in bench/loader.py)."""
    import cv2

    cv2.setNumThreads(1)  # the DataLoader's processes are the parallelism
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ValueError("not a decodable image")
    if image.ndim == 2:
        image = image[:, :, None]
    height, width = image.shape[:2]
    if seed >= 0:
        rng = np.random.default_rng(seed)
        left, top, w, h = random_resized_box(width, height, rng)
        out = _resize(image[top:top + h, left:left + w], (resolution, resolution))
        if flip and rng.random() < 0.5:
            out = out[:, ::-1]
    else:
        scale = round(resolution / EVAL_CROP) / min(width, height)
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        out = _resize(image, size)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        out = out[top:top + resolution, left:left + resolution]
    if channels == 3:
        out = out[:, :, ::-1]  # BGR -> RGB
    return np.ascontiguousarray(out.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------- loading
class _Decoded(torch.utils.data.Dataset):
    """Items are (index, seed): seed >= 0 draws the train transform, -1 gives the eval transform."""

    def __init__(self, data: StreamSet, flip: bool) -> None:
        self.data, self.flip = data, flip

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = item
        try:
            image = decode(self.data.source.read(i), self.data.resolution, seed, self.flip, self.data.channels)
        except (OSError, ValueError) as exc:
            raise UserError(f"data.root: cannot read image {self.data.source.name(i)} ({exc})") from None
        return torch.from_numpy(image), int(self.data.labels[i])


class _Plan:
    """Batch sampler of one pass: an order and optional per-sample seeds, cut lazily into batches."""

    def __init__(self) -> None:
        self.order = np.zeros(0, dtype=np.int64)
        self.seeds: np.ndarray | None = None
        self.batch_size = 1
        self.shard = (0, 1)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rank, world = self.shard
        for start in range(0, len(self.order), self.batch_size):
            stop = min(start + self.batch_size, len(self.order))
            lo, hi = start + rank * (stop - start) // world, start + (rank + 1) * (stop - start) // world
            idx = self.order[lo:hi].tolist()
            seeds = self.seeds[lo:hi].tolist() if self.seeds is not None else [-1] * len(idx)
            yield list(zip(idx, seeds))

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


def _worker_error(exc: Exception) -> UserError | None:
    """The one-line UserError a worker raised, out of DataLoader's wrapped message."""
    text = str(exc)
    marker = "UserError: "
    return UserError(text[text.rindex(marker) + len(marker):].strip().splitlines()[0]) if marker in text else None


MMAP_THRESHOLD = 4 << 20


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Serve allocations of `nbytes` or more with mmap, returned to the OS on free (glibc only).

    glibc raises its mmap threshold after large frees, and batches received from DataLoader workers
    then pile up in the heap: measured (bench/stream_rss.py) the main process grew from 161 to about
    850 MB over an epoch; with a fixed threshold it stays flat. A fixed threshold turns that off."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, nbytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return False


class StreamBatcher(Batcher):
    """Batches of a StreamSet decoded by DataLoader worker processes, normalised on the device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu",
                 flip: bool = False, workers: int = 2, prefetch: int = 4, channels_last: bool = False) -> None:
        super().__init__(mean, std, device, crop_padding=0, flip=flip, channels_last=channels_last)
        if workers > 0:
            fix_mmap_threshold()
        self.workers, self.prefetch = workers, prefetch
        self._loaders: dict[int, tuple[StreamSet, DataLoader, _Plan]] = {}

    def _loader(self, data: StreamSet) -> tuple[DataLoader, _Plan]:
        if id(data) not in self._loaders:
            plan = _Plan()
            kw = {"prefetch_factor": self.prefetch, "persistent_workers": True} if self.workers > 0 else {}
            loader = DataLoader(_Decoded(data, self.flip), batch_sampler=plan, num_workers=self.workers,
                                pin_memory=self.device.type == "cuda", **kw)
            self._loaders[id(data)] = (data, loader, plan)  # holding `data` keeps its id from being reused
        _, loader, plan = self._loaders[id(data)]
        return loader, plan

    def batches(self, data: StreamSet, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """As `Batcher.batches`; augmentation is the random-resized crop (+ flip) done by the workers,
        and a shard decodes only its own images."""
        n = len(data)
        if shuffle or augment:
            assert generator is not None, "shuffle/augment need a torch.Generator for reproducibility"
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator) if augment else None
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        loader, plan = self._loader(data)
        plan.order, plan.batch_size, plan.shard = order[:stop].numpy(), batch_size, shard
        plan.seeds = seeds[:stop].numpy() if seeds is not None else None
        try:
            for images, labels in loader:
                yield self.normalise(images), labels.to(self.device, non_blocking=True)
        except Exception as exc:
            error = _worker_error(exc)
            if error is None:
                raise
            raise error from None


def stream_stats(data: StreamSet, count: int, seed: int, workers: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale of `count` images drawn by `seed` (eval transform)."""
    from netaug.data.tensors import channel_stats

    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:count])
    sample = data.take(keep)
    batcher = StreamBatcher((0.0,) * data.channels, (1 / 255,) * data.channels, workers=min(workers, 2), prefetch=2)
    images = torch.cat([x for x, _ in batcher.batches(sample, 256)]).round_().to(torch.uint8)
    return channel_stats(images)
