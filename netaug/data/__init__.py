"""Datasets chosen by `data.name` in the space file, all held in memory as uint8 tensors."""

from __future__ import annotations

import numpy as np

from netaug.config import DataConfig
from netaug.data.tensors import Batcher, DataSplits, ImageSet, channel_stats, resize_uint8, stratified_split

__all__ = ["Batcher", "DataSplits", "ImageSet", "load_data", "make_batcher"]

FLIP_BY_DEFAULT = {"digits": False, "idx": False, "fashion-mnist": False, "cifar10": True, "imagefolder": True}
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


def load_data(cfg: DataConfig) -> DataSplits:
    """Load, resize and split the configured dataset. Splits are disjoint and fixed by `split_seed`."""
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
    padding = max(1, data.resolution // 8) if cfg.augment else 0
    return Batcher(data.mean, data.std, device, crop_padding=padding, flip=data.flip and cfg.augment,
                   channels_last=channels_last)
