"""Datasets: deterministic disjoint splits, every loader on real or format-exact files, augmentation."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from netaug.config import load_space
from netaug.data import Batcher, load_data
from netaug.errors import UserError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_digits_splits_are_deterministic_disjoint_and_complete():
    cfg = load_space(None, ["data.resolution=8"]).data
    a, b = load_data(cfg), load_data(cfg)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)
    assert len(a.train) + len(a.val) + len(a.test) == 1797  # the whole sklearn digits set
    c = load_data(load_space(None, ["data.resolution=8", "data.split_seed=1"]).data)
    assert not torch.equal(a.test.labels, c.test.labels) or not torch.equal(a.test.images, c.test.images)
    # Stratified: every class in every split, in proportion.
    assert set(a.test.labels.tolist()) == set(range(10))
    assert abs(len(a.test) / 1797 - 0.2) < 0.01 and abs(len(a.val) / 1797 - 0.1) < 0.01


def test_split_indices_are_disjoint_and_cover_everything():
    from netaug.data.tensors import stratified_split
    labels = np.random.default_rng(0).integers(0, 5, 500)
    parts = stratified_split(labels, [0.2, 0.1], seed=3)
    allidx = np.concatenate(parts)
    assert len(allidx) == 500 and len(np.unique(allidx)) == 500


def test_digits_upsampling_keeps_the_image():
    d8 = load_data(load_space(None, ["data.resolution=8"]).data)
    d16 = load_data(load_space(None, ["data.resolution=16"]).data)
    assert d16.train.images.shape[1:] == (1, 16, 16)
    down = torch.nn.functional.avg_pool2d(d16.train.images.float(), 2).flatten()
    corr = np.corrcoef(down.numpy(), d8.train.images.float().flatten().numpy())[0, 1]
    assert corr > 0.95  # the same pictures in the same order, only smoothed


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_loader_reads_the_format(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60, 28, 28)).astype(np.uint8)
    test = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(60) % 3)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 3)
    d = load_data(load_space(None, ["data.name=idx", f"data.root={tmp_path}", "data.resolution=28"]).data)
    assert d.num_classes == 3 and len(d.test) == 20 and len(d.train) + len(d.val) == 60
    assert torch.equal(d.test.images[:, 0], torch.from_numpy(test))
    assert d.test.labels.tolist() == [i % 3 for i in range(20)]


def test_idx_truncated_file_is_a_user_error(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(struct.pack(">HBB3I", 0, 8, 3, 10, 28, 28) + b"\0" * 10)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(10))
    with pytest.raises(UserError, match="truncated"):
        load_data(load_space(None, ["data.name=idx", f"data.root={tmp_path}"]).data)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    d = load_data(load_space(None, ["data.name=fashion-mnist", "data.resolution=28", "data.subset=1000"]).data)
    assert len(d.train) == 1000 and len(d.val) == 6000 and len(d.test) == 10000
    assert d.num_classes == 10 and d.train.images.shape[1:] == (1, 28, 28)
    assert np.bincount(d.test.labels.numpy()).tolist() == [1000] * 10  # the real test set is balanced


def test_cifar10_pickle_batches(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in [(f"data_batch_{i}", 10) for i in range(1, 6)] + [("test_batch", 8)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "test_batch", "rb") as fh:
        expected = pickle.load(fh)
    d = load_data(load_space(None, ["data.name=cifar10", f"data.root={tmp_path}", "data.resolution=32"]).data)
    assert len(d.train) + len(d.val) == 50 and len(d.test) == 8 and d.flip
    assert torch.equal(d.test.images, torch.from_numpy(expected[b"data"].reshape(8, 3, 32, 32)))


def test_imagefolder(tmp_path):
    from PIL import Image
    for split, n in (("train", 6), ("test", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), colour).save(tmp_path / split / cls / f"{i}.png")
    d = load_data(load_space(None, ["data.name=imagefolder", f"data.root={tmp_path}", "data.resolution=16",
                                    "data.val_fraction=0.34"]).data)
    assert d.num_classes == 2 and len(d.test) == 4 and len(d.train) + len(d.val) == 12 and len(d.val) == 4
    red = d.test.images[d.test.labels == 0]
    assert red.shape[1:] == (3, 16, 16) and bool((red[:, 0] == 255).all()) and bool((red[:, 2] == 0).all())


def test_missing_dataset_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "missing")):
        load_space(None, ["data.name=idx", f"data.root={tmp_path / 'missing'}"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="missing IDX file"):
        load_data(load_space(None, ["data.name=idx", f"data.root={tmp_path / 'empty'}"]).data)


def test_random_crop_is_a_shift_of_the_padded_image_and_flip_mirrors():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    b = Batcher((0.5,), (0.5,), crop_padding=2, flip=False)
    out = b.augment(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for n in range(2):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[n], padded[n, :, dy:dy + 6, dx:dx + 6])]
        assert matches, "each crop is a window of the padded image"
    flipper = Batcher((0.5,), (0.5,), crop_padding=0, flip=True)
    flipped = flipper.augment(images.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    same = [torch.equal(f, i) for f, i in zip(flipped, images.repeat(50, 1, 1, 1))]
    mirrored = [torch.equal(f, i.flip(2)) for f, i in zip(flipped, images.repeat(50, 1, 1, 1))]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 90


def test_batches_normalise_and_cover_the_split(digits16):
    b = Batcher(digits16.mean, digits16.std)
    xs, ys = zip(*b.batches(digits16.val, 64))
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, digits16.val.labels)
    expected = (digits16.val.images.float() / 255 - digits16.mean[0]) / digits16.std[0]
    assert torch.allclose(x, expected, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    shuffled = torch.cat([yb for _, yb in b.batches(digits16.train, 100, shuffle=True, generator=gen)])
    assert sorted(shuffled.tolist()) == sorted(digits16.train.labels.tolist())
