"""Trainer step time per training mode on one device, with and without bf16 and channels_last.

Times `Trainer.step` (all passes + optimizer step) on batches from the in-memory batcher (on the
device when it is CUDA), synchronising only around the timed block, and prints ms per step and
images/s per mode and setting, plus each mode relative to baseline in the same setting.

    python bench/gpu_steps.py --device cuda --res 144 --batch 128          # the paper's MBV2-Tiny setting
    python bench/gpu_steps.py --device cpu --res 32 --batch 64 --steps 3   # a smoke run without a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.config import load_space  # noqa: E402
from netaug.data import DataSplits, ImageSet  # noqa: E402

MODES = ["baseline", "netaug", "netaug_rkd", "supernet"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_ms(args, mode: str, bf16: bool, channels_last: bool) -> float:
    from netaug.train.trainer import Trainer

    gen = torch.Generator().manual_seed(0)

    def images(k: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (k, 3, args.res, args.res), dtype=torch.uint8, generator=gen),
                        torch.randint(0, 1000, (k,), generator=gen))

    n = args.batch * (args.steps + args.warmup)
    data = DataSplits("random", images(n), images(args.batch), images(args.batch), 1000, (0.5,) * 3, (0.25,) * 3,
                      True)
    cfg = load_space(args.space, [f"model.name={args.model}", f"data.resolution={args.res}",
                                  f"training.batch_size={args.batch}", f"training.device={args.device}",
                                  f"training.bf16={str(bf16).lower()}",
                                  f"training.channels_last={str(channels_last).lower()}", *args.overrides,
                                  "data.loader=memory"])  # random images held in memory: the step alone
    trainer = Trainer(cfg, data, mode=mode)
    batches = trainer.batcher.batches(trainer.data.train, args.batch, shuffle=True, augment=True,
                                      generator=torch.Generator().manual_seed(1), drop_last=True)
    times = []
    for i, (x, y) in enumerate(batches):
        sync(trainer.device)
        start = time.perf_counter()
        trainer.step(x, y)
        sync(trainer.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--space", default=None, help="space file whose recipe to time (default: built-in defaults)")
    p.add_argument("--model", default="mobilenetv2_tiny")
    p.add_argument("--res", type=int, default=144)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median kept)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    settings = [(False, False), (False, True), (True, True)] if args.device == "cuda" else [(False, True)]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}: {args.model} {args.res}px batch {args.batch}, "
          f"median of {args.steps} steps, overrides {args.overrides}")
    print(f"  {'mode':>10}  {'bf16':>5}  {'ch_last':>7}  {'ms/step':>9}  {'img/s':>8}  {'x baseline':>10}")
    for bf16, channels_last in settings:
        base = None
        for mode in args.modes:
            ms = step_ms(args, mode, bf16, channels_last)
            base = ms if mode == "baseline" else base
            ratio = f"{ms / base:10.2f}" if base else f"{'':>10}"
            print(f"  {mode:>10}  {bf16!s:>5}  {channels_last!s:>7}  {ms:9.1f}  {args.batch / ms * 1000:8.0f}  {ratio}",
                  flush=True)


if __name__ == "__main__":
    main()
