"""Resident memory of streaming: does it grow with the dataset? Prints JSON, one object per size.

For each --sizes N it writes a folder of N JPEGs (if absent), then in a fresh process indexes it,
streams one shuffled, augmented epoch through `StreamBatcher` and samples the resident set size
(VmRSS) of the process and its DataLoader workers. It reports the RSS after indexing, the peak
over the epoch, and what the decoded split would take in memory (`data.loader: memory`).

    python bench/stream_rss.py --dir /tmp/rss --sizes 3000 30000 --resolution 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_tree(pid: int) -> int:
    """VmRSS in bytes of `pid` and all its descendants (shared pages count once per process)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def make_folder(root: Path, images: int, classes: int = 10) -> None:
    import cv2

    if (root / "done").exists():
        return
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        img = np.clip(rng.normal(25 * (i % classes), 30, (72, 96, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:07d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    (root / "test" / "c0").mkdir(parents=True, exist_ok=True)
    (root / "done").touch()


def measure(root: Path, resolution: int, workers: int, batch: int) -> dict:
    """Run in the child: index, stream one epoch, sample RSS every few batches."""
    import os

    import torch

    from netaug.data.stream import StreamBatcher, StreamSet, index_folder

    torch.set_num_threads(1)
    source, labels = index_folder(root, "train", [f"c{i}" for i in range(10)])
    data = StreamSet(source, labels, resolution)
    pid = os.getpid()
    indexed = rss_tree(pid)
    batcher = StreamBatcher((0.5,) * 3, (0.25,) * 3, workers=workers)
    gen = torch.Generator().manual_seed(0)
    peak, seen, samples = 0, 0, []
    for step, (x, _) in enumerate(batcher.batches(data, batch, shuffle=True, augment=True, generator=gen)):
        seen += len(x)
        if step % 10 == 0:
            samples.append(rss_tree(pid))
            peak = max(peak, samples[-1])
    half = len(samples) // 2
    return {"images": len(data), "seen": seen, "rss_indexed_mb": indexed / 2**20, "rss_peak_mb": peak / 2**20,
            "rss_first_half_peak_mb": max(samples[:half] or samples) / 2**20,
            "rss_second_half_peak_mb": max(samples[half:]) / 2**20,
            "decoded_in_memory_mb": len(data) * 3 * resolution * resolution / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/netaug-stream-rss")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child), args.resolution, args.workers, args.batch)))
        return
    for size in args.sizes:
        root = Path(args.dir) / str(size)
        make_folder(root, size)
        out = subprocess.run([sys.executable, __file__, "--child", str(root), "--resolution", str(args.resolution),
                              "--workers", str(args.workers), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
