"""Streaming data: folder and tar-shard sources, transforms, determinism, training and bad input."""

from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from netaug.config import load_space
from netaug.data import load_data, make_batcher
from netaug.data.stream import StreamBatcher, StreamSet, decode, index_folder, index_shards, random_resized_box
from netaug.errors import UserError

CLASSES = ["cat", "dog", "emu"]


def write_folder(root: Path, per_class: dict[str, int], size=(40, 30), seed=0, splits=("train", "test")) -> None:
    """Class c's images are noise around grey level 40 + 80 c, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class[split]):
                img = np.clip(rng.normal(40 + 80 * c, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i:04d}.png"), img)


def shards_from_folder(src: Path, dst: Path, split: str, per_shard: int) -> None:
    """webdataset layout: `<key>.png` + `<key>.cls`, keys in the folder's (class, file) order."""
    files = [(c, p) for c, name in enumerate(CLASSES) for p in sorted((src / split / name).iterdir())]
    (dst / split).mkdir(parents=True, exist_ok=True)
    for s in range(0, len(files), per_shard):
        with tarfile.open(dst / split / f"{split}-{s // per_shard:04d}.tar", "w") as tar:
            for k, (c, path) in enumerate(files[s:s + per_shard]):
                key = f"{s + k:06d}"
                tar.add(path, arcname=f"{key}.png")
                info = tarfile.TarInfo(f"{key}.cls")
                payload = str(c).encode()
                info.size = len(payload)
                import io

                tar.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    write_folder(root, {"train": 30, "test": 8})
    return root


def stream_cfg(root: Path, *extra: str, name="imagefolder"):
    return load_space(None, [f"data.name={name}", f"data.root={root}", "data.loader=stream", "data.resolution=16",
                             "data.workers=2", "training.batch_size=16", "training.eval_batch_size=20", *extra])


def test_folder_index_and_val_carved_from_train_by_seed(folder):
    data = load_data(stream_cfg(folder).data)
    assert len(data.train) + len(data.val) == 90 and len(data.test) == 24
    assert data.num_classes == 3 and data.class_names() == CLASSES
    assert data.resolution == 16 and data.in_channels == 3
    names = lambda s: {s.source.paths[i] for i in range(len(s))}  # noqa: E731
    assert not names(data.train) & names(data.val)
    assert sorted(data.val.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # stratified: 10% of each class
    other = load_data(stream_cfg(folder, "data.split_seed=5").data)
    assert names(other.val) != names(data.val)
    # Mean of the class grey levels 40, 120, 200, on the [0, 1] scale (noise is symmetric, little clipping).
    assert all(abs(m - 120 / 255) < 0.03 for m in data.mean)


def test_a_val_folder_is_used_when_present(tmp_path):
    write_folder(tmp_path, {"train": 4, "val": 2, "test": 2}, splits=("train", "val", "test"))
    data = load_data(stream_cfg(tmp_path).data)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 6)


def test_eval_transform_is_resize_then_centre_crop():
    img = np.zeros((40, 80, 3), np.uint8)  # wide: left half red, right half blue (BGR on disk)
    img[:, :40, 2] = 255
    img[:, 40:, 0] = 255
    data = cv2.imencode(".png", img)[1].tobytes()
    out = decode(data, 14, -1, flip=False)  # short side 40 -> 16, width 80 -> 32, centre 14 of 32
    assert out.shape == (3, 14, 14)
    assert (out[0, :, :6] == 255).all() and (out[2, :, :6] == 0).all()  # RGB: red on the left
    assert (out[2, :, 8:] == 255).all() and (out[0, :, 8:] == 0).all()


def test_random_resized_crop_box_stays_inside_and_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(2000):
        left, top, w, h = random_resized_box(200, 100, rng)
        assert 0 <= left and left + w <= 200 and 0 <= top and top + h <= 100
        areas.append(w * h / 20000)
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 or (w, h) in ((133, 100),)
    assert min(areas) >= 0.075 and max(areas) <= 1.0


def test_train_transform_is_a_crop_of_the_image():
    """A horizontal gradient: any crop then resize keeps each row non-decreasing left to right."""
    img = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (48, 1, 3))
    blob = cv2.imencode(".png", img)[1].tobytes()
    for seed in range(20):
        out = decode(blob, 16, seed, flip=False).astype(int)
        assert (np.diff(out[0], axis=1) >= -1).all()
        flipped = decode(blob, 16, seed, flip=True).astype(int)
        assert np.array_equal(flipped, out) or np.array_equal(flipped, out[:, :, ::-1])


def test_batches_are_the_same_for_any_worker_count(folder):
    data = load_data(stream_cfg(folder).data)
    runs = []
    for workers in (0, 1, 2):
        batcher = StreamBatcher(data.mean, data.std, workers=workers, flip=True)
        gen = torch.Generator().manual_seed(7)
        runs.append([(x.clone(), y.clone()) for x, y in
                     batcher.batches(data.train, 16, shuffle=True, augment=True, generator=gen, drop_last=True)])
    assert len(runs[0]) == len(data.train) // 16
    for other in runs[1:]:
        for (x0, y0), (x1, y1) in zip(runs[0], other, strict=True):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_tar_shards_give_the_folder_images(folder, tmp_path):
    for split, per_shard in (("train", 25), ("test", 10)):
        shards_from_folder(folder, tmp_path, split, per_shard)
    src, labels = index_folder(folder, "test", CLASSES)
    tar_src, tar_labels = index_shards(tmp_path, "test")
    assert len(tar_src.shards) == 3 and torch.equal(labels, tar_labels)
    a, b = StreamSet(src, labels, 16), StreamSet(tar_src, tar_labels, 16)
    batcher = StreamBatcher((0.5,) * 3, (0.25,) * 3, workers=2, flip=True)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for (xa, ya), (xb, yb) in zip(batcher.batches(a, 7, shuffle=True, augment=True, generator=gen_a),
                                  batcher.batches(b, 7, shuffle=True, augment=True, generator=gen_b), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    data = load_data(stream_cfg(tmp_path, name="shards").data)
    assert len(data.train) + len(data.val) == 90 and data.num_classes == 3


def test_training_bn_recalibration_and_predictions_on_streamed_splits(folder):
    from netaug.train.trainer import Trainer

    cfg = stream_cfg(folder, "training.mode=netaug", "training.epochs=2", "training.lr=0.1", "training.seed=3",
                     "netaug.r=2", "netaug.s=1", "training.bn_calib_batches=2")
    data = load_data(cfg.data)
    trainer = Trainer(cfg, data)
    trainer.fit()
    results = trainer.evaluate("test", trainer.sub_networks())
    base = results["base"]
    assert np.array_equal(base.labels, data.test.labels.numpy())
    assert base.topk.shape == (24, 3) and results["aug:max"].topk.shape == (24, 3)
    # The exported base (BN recalibrated on streamed training batches) computes what the base sub-network does.
    exported = trainer.export_base()
    batcher = make_batcher(data, cfg.data)
    x, _ = next(iter(batcher.batches(data.test, 24)))
    trainer.augmented.set_active("min")
    trainer.augmented.eval()
    assert torch.allclose(exported(x), trainer.augmented(x), atol=1e-5)
    # Same seed, same numbers.
    again = Trainer(cfg, load_data(cfg.data))
    again.fit()
    assert np.array_equal(again.evaluate("test")["base"].topk_prob, trainer.evaluate("test")["base"].topk_prob)


def test_bad_stream_input_is_a_one_line_user_error(folder, tmp_path):
    with pytest.raises(UserError, match="data.loader"):
        load_space(None, ["data.loader=stream"])  # digits are not streamed
    with pytest.raises(UserError, match="data.loader"):
        load_space(None, ["data.name=shards", f"data.root={tmp_path}"])
    (tmp_path / "train" / "a").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "a" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match=f"data.root: no such directory: {tmp_path / 'test'}"):
        load_data(stream_cfg(tmp_path).data)
    (tmp_path / "test" / "a").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "test" / "a" / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="data.val_fraction"):  # one image: no val can be carved
        load_data(stream_cfg(tmp_path).data)
    for i in range(9):
        cv2.imwrite(str(tmp_path / "train" / "a" / f"y{i}.png"), np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "test" / "a" / "broken.png"
    bad.write_bytes(b"not an image")
    data = load_data(stream_cfg(tmp_path, "data.stats_images=1").data)
    batcher = StreamBatcher(data.mean, data.std, workers=2)
    with pytest.raises(UserError, match=f"cannot read image {bad}") as info:
        list(batcher.batches(data.test, 4))
    assert "\n" not in str(info.value)
