"""Datasets chosen by `data.name` in the space file: held in memory as uint8 tensors (`data.loader:
memory`), or streamed from disk by DataLoader workers (`data.loader: stream`, netaug.data.stream)."""

from __future__ import annotations

import numpy as np

from netaug.config import DataConfig
from netaug.data.tensors import Batcher, DataSplits, ImageSet, channel_stats, resize_uint8, stratified_split
from netaug.errors import UserError

__all__ = ["Batcher", "DataSplits", "ImageSet", "load_data", "make_batcher"]

FLIP_BY_DEFAULT = {"digits": False, "idx": False, "fashion-mnist": False, "cifar10": True, "imagefolder": True,
                   "shards": True}
CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def _class_names(cfg: DataConfig, num_classes: int) -> tuple[str, ...] | None:
    if cfg.name == "imagefolder":
        from netaug.data.imagefolder import class_names

        return tuple(class_names(cfg.root))
    names = CLASS_NAMES.get(cfg.name)
    return names if names is not None and len(names) == num_classes else None


def _train_and_test(cfg: DataConfig) -> tuple[ImageSet, ImageSet | None]:
    """The dataset's own train and test splits (test is None when it must be carved out)."""
    if cfg.name == "digits":
        from netaug.data.digits import load_digits_images

        return load_digits_images(), None
    if cfg.name in ("idx", "fashion-mnist"):
        from netaug.data.idx import load_idx_split

        return load_idx_split(cfg.root, "train"), load_idx_split(cfg.root, "test")
    if cfg.name == "cifar10":
        from netaug.data.cifar10 import load_cifar10_split

        return load_cifar10_split(cfg.root, "train"), load_cifar10_split(cfg.root, "test")
    if cfg.name == "imagefolder":
        from netaug.data.imagefolder import class_names, load_imagefolder_split

        classes = class_names(cfg.root)
        return (load_imagefolder_split(cfg.root, "train", cfg.resolution, classes),
                load_imagefolder_split(cfg.root, "test", cfg.resolution, classes))
    raise AssertionError(cfg.name)  # the schema admits no other name


def load_stream(cfg: DataConfig) -> DataSplits:
    """Index (not decode) a folder tree or tar shards; val is carved from train by split_seed when absent."""
    from pathlib import Path

    from netaug.data.stream import StreamSet, folder_classes, index_folder, index_shards, stream_stats

    root = Path(cfg.root).expanduser()
    classes = folder_classes(root) if cfg.name == "imagefolder" else None

    def split(name: str) -> StreamSet:
        source, labels = index_folder(root, name, classes) if classes is not None else index_shards(root, name)
        return StreamSet(source, labels, cfg.resolution)

    train, test = split("train"), split("test")
    if (root / "val").is_dir():
        val = split("val")
    else:
        val_idx, train_idx = stratified_split(train.labels.numpy(), [cfg.val_fraction], cfg.split_seed)
        train, val = train.take(train_idx), train.take(val_idx)
        if len(val) == 0 or len(train) == 0:
            raise UserError(f"data.val_fraction: carving val from {len(train) + len(val)} training images leaves "
                            "an empty split")
    if cfg.subset is not None and cfg.subset < len(train):
        train = train.take(np.sort(np.random.default_rng(cfg.split_seed + 1).permutation(len(train))[: cfg.subset]))
    num_classes = int(max(int(s.labels.max()) for s in (train, val, test)) + 1)
    mean, std = stream_stats(train, cfg.stats_images, cfg.split_seed + 2, cfg.workers)
    flip = FLIP_BY_DEFAULT[cfg.name] if cfg.flip is None else cfg.flip
    names = tuple(classes) if classes is not None and len(classes) == num_classes else None
    return DataSplits(cfg.name, train, val, test, num_classes, mean, std, flip, names)


CHEAP_TO_LOAD = ("digits", "idx", "fashion-mnist")  # datasets a driver may decode whole in a second or two


def probe_data(cfg: DataConfig) -> tuple[int, int]:
    """(classes, input channels) of the configured dataset, checked the cheap way: folders and shards are
    listed, not decoded (the check a driver makes before any work starts; the same UserErrors as loading)."""
    from pathlib import Path

    if cfg.name in CHEAP_TO_LOAD:
        data = load_data(cfg)
        return data.num_classes, data.in_channels
    if cfg.name == "cifar10":
        from netaug.data.cifar10 import load_cifar10_split

        return 10, int(load_cifar10_split(cfg.root, "test").images.shape[1])
    from netaug.data.stream import folder_classes, index_folder, index_shards

    root = Path(cfg.root).expanduser()
    if cfg.name == "imagefolder":
        classes = folder_classes(root)
        for split in ("train", "test", *(("val",) if (root / "val").is_dir() else ())):
            index_folder(root, split, classes)
        return len(classes), 3
    labels = [index_shards(root, split)[1] for split in ("train", "test")]
    return int(max(int(t.max()) for t in labels) + 1), 3


def load_data(cfg: DataConfig) -> DataSplits:
    """Load, resize and split the configured dataset. Splits are disjoint and fixed by `split_seed`."""
    if cfg.loader == "stream":
        return load_stream(cfg)
    full, test = _train_and_test(cfg)
    labels = full.labels.numpy()
    if test is None:
        test_idx, val_idx, train_idx = stratified_split(labels, [cfg.test_fraction, cfg.val_fraction],
                                                        cfg.split_seed)
        test = full.take(test_idx)
    else:
        val_idx, train_idx = stratified_split(labels, [cfg.val_fraction], cfg.split_seed)
    train, val = full.take(train_idx), full.take(val_idx)
    if cfg.subset is not None and cfg.subset < len(train):
        keep = np.sort(np.random.default_rng(cfg.split_seed + 1).permutation(len(train))[: cfg.subset])
        train = train.take(keep)
    train, val, test = (ImageSet(resize_uint8(s.images, cfg.resolution), s.labels) for s in (train, val, test))
    num_classes = int(max(int(train.labels.max()), int(val.labels.max()), int(test.labels.max())) + 1)
    mean, std = channel_stats(train.images)
    flip = FLIP_BY_DEFAULT[cfg.name] if cfg.flip is None else cfg.flip
    return DataSplits(cfg.name, train, val, test, num_classes, mean, std, flip, _class_names(cfg, num_classes))


def make_batcher(data: DataSplits, cfg: DataConfig, device="cpu", channels_last: bool = False) -> Batcher:
    """The batcher for these splits: their normalisation, plus crop/flip when `data.augment` is on."""
    if cfg.loader == "stream":
        from netaug.data.stream import StreamBatcher

        return StreamBatcher(data.mean, data.std, device, flip=data.flip and cfg.augment, workers=cfg.workers,
                             channels_last=channels_last)
    padding = max(1, data.resolution // 8) if cfg.augment else 0
    return Batcher(data.mean, data.std, device, crop_padding=padding, flip=data.flip and cfg.augment,
                   channels_last=channels_last)
