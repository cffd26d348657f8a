"""Streaming loader throughput: images/s per worker process, and which decoder to use.

Generates a folder of JPEGs (ImageNet-like sizes by default) under --dir, then prints:

1. per-process decode + train-transform rates (one process, no DataLoader): netaug.data.stream's
   OpenCV path (area resampling when shrinking, anti-aliased), OpenCV bilinear, and Pillow
   bilinear (anti-aliased), the alternatives it was chosen against;
2. the end-to-end rate of `StreamBatcher` (DataLoader workers, train transform, normalised
   batches) for each --workers count, and that rate divided by the worker count.

    python bench/loader.py --images 2000 --size 400 --resolution 144 --workers 1 2
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.data.stream import StreamBatcher, StreamSet, decode, index_folder, random_resized_box  # noqa: E402


def make_folder(root: Path, images: int, size: int, classes: int = 10) -> None:
    """JPEGs of smooth random content (JPEG-typical), `size` x 0.75 `size` pixels, quality 90."""
    from PIL import Image

    if (root / "done").exists():
        return
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size // 16, size // 12, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size * 3 // 4), Image.BICUBIC)
        img.save(folder / f"{i:07d}.jpg", quality=90)
    (root / "done").touch()


def decode_pil(data: bytes, resolution: int, seed: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rng = np.random.default_rng(seed)
        left, top, w, h = random_resized_box(img.width, img.height, rng)
        out = img.convert("RGB").resize((resolution, resolution), Image.BILINEAR, box=(left, top, left + w, top + h))
        return np.array(out).transpose(2, 0, 1)


def decode_cv2(data: bytes, resolution: int, seed: int) -> np.ndarray:
    import cv2

    cv2.setNumThreads(1)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    rng = np.random.default_rng(seed)
    left, top, w, h = random_resized_box(img.shape[1], img.shape[0], rng)
    crop = cv2.resize(img[top:top + h, left:left + w], (resolution, resolution), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1))


def per_process_rates(blobs: list[bytes], resolution: int) -> dict[str, float]:
    decoders = {"netaug (opencv, area)": lambda b, s: decode(b, resolution, s, flip=True),
                "opencv, bilinear": lambda b, s: decode_cv2(b, resolution, s),
                "pillow, bilinear": lambda b, s: decode_pil(b, resolution, s)}
    rates = {}
    for name, fn in decoders.items():
        fn(blobs[0], 0)
        start = time.perf_counter()
        for seed, blob in enumerate(blobs):
            fn(blob, seed)
        rates[name] = len(blobs) / (time.perf_counter() - start)
    return rates


def loader_rate(data: StreamSet, workers: int, batch: int) -> float:
    batcher = StreamBatcher((0.5,) * 3, (0.25,) * 3, workers=workers)
    gen = torch.Generator().manual_seed(0)
    for _ in zip(range(2), batcher.batches(data, batch, shuffle=True, augment=True, generator=gen)):
        pass  # start the workers
    start, seen = time.perf_counter(), 0
    for x, _ in batcher.batches(data, batch, shuffle=True, augment=True, generator=gen):
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/netaug-loader-bench")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=400, help="JPEG width in pixels (height 3/4 of it)")
    parser.add_argument("--resolution", type=int, default=144)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    root = Path(args.dir) / f"{args.images}x{args.size}"
    make_folder(root, args.images, args.size)
    source, labels = index_folder(root, "train", [f"c{i}" for i in range(10)])
    data = StreamSet(source, labels, args.resolution)
    blobs = [source.read(i) for i in range(min(500, len(data)))]
    torch.set_num_threads(1)
    print(f"{len(data)} JPEGs of {args.size}x{args.size * 3 // 4} px -> train transform at {args.resolution} px")
    print("per process (no DataLoader), images/s:")
    for name, rate in per_process_rates(blobs, args.resolution).items():
        print(f"  {name:22s} {rate:8.1f}")
    print("StreamBatcher (DataLoader workers, shuffled, normalised batches):")
    for w in args.workers:
        rate = loader_rate(data, w, args.batch)
        print(f"  workers {w:2d}: {rate:8.1f} images/s, {rate / max(1, w):8.1f} per worker")


if __name__ == "__main__":
    main()
