"""Cost of NetAug's dynamic (weight-sharing) layers against plain static layers of the same widths.

One NetAug step runs forward+backward of the base and of one sampled augmented sub-network. This
script times that on the augmented model, and the same two passes on plain static networks of
exactly those widths (built with `export`), interleaved so that machine noise hits both alike.

    python bench/step_overhead.py            # CPU, MobileNetV2-Tiny, batch 128, 32 px

It then times one full trainer step (all passes plus the optimizer step) of every training mode,
before (SGD's per-parameter loop) and after (foreach SGD) the step changes of issue 11, interleaved
in one run, and prints each relative to `baseline`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.augment import augment, width_multipliers  # noqa: E402
from netaug.config import MODES, load_space  # noqa: E402
from netaug.data import DataSplits, ImageSet  # noqa: E402
from netaug.models import build_model  # noqa: E402
from netaug.train.runtime import configure_threads  # noqa: E402


def passes(models_and_inputs: list[nn.Module], x: torch.Tensor, y: torch.Tensor, configs=None) -> float:
    """Seconds for forward+backward of each model in turn (setting each config first, if given)."""
    start = time.perf_counter()
    for i, model in enumerate(models_and_inputs):
        if configs is not None:
            model.set_active(configs[i])
        nn.functional.cross_entropy(model(x), y).backward()
    return time.perf_counter() - start


def mode_step_times(args, modes: list[str]) -> dict[tuple[str, str], float]:
    """Median seconds of one `Trainer.step` per mode, on random images of the benchmark's shape."""
    from netaug.train import Trainer

    gen = torch.Generator().manual_seed(0)
    n = args.batch * 2

    def images(k: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (k, 3, args.res, args.res), dtype=torch.uint8, generator=gen),
                        torch.randint(0, 10, (k,), generator=gen))

    data = DataSplits("random", images(n), images(args.batch), images(args.batch), 10, (0.5,) * 3, (0.25,) * 3, False)
    cfg = load_space(None, [f"model.name={args.model}", f"data.resolution={args.res}",
                            f"training.batch_size={args.batch}", f"netaug.r={args.r}", f"netaug.s={args.s}",
                            f"training.channels_last={str(args.channels_last).lower()}", *args.overrides])
    trainers = {mode: Trainer(cfg, data, mode=mode) for mode in modes}
    before = {mode: Trainer(cfg, data, mode=mode) for mode in modes}
    for trainer in before.values():  # the step before issue 11: SGD's per-parameter Python loop
        for group in trainer.optimizer.param_groups:
            group["foreach"] = False
    x, y = next(trainers[modes[0]].batcher.batches(data.train, args.batch))
    times: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats + 1):  # round-robin, so machine noise hits every mode and variant alike
        for mode in modes:
            for variant, trainer in (("before", before[mode]), ("after", trainers[mode])):
                start = time.perf_counter()
                trainer.step(x, y)
                if rep:  # the first round is warm-up
                    times.setdefault((mode, variant), []).append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mobilenetv2_tiny")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--r", type=float, default=3.0)
    p.add_argument("--s", type=int, default=2)
    p.add_argument("--configs", type=int, default=6, help="sampled augmented sub-networks")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per sub-network (median kept)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="space overrides of the per-mode step timing, e.g. --set netaug.expand_r=2.8")
    p.add_argument("--only-modes", action="store_true", help="skip the dynamic-layer comparison")
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES,
                   help="training modes to time relative to baseline (none: skip)")
    args = p.parse_args()

    threads = configure_threads()
    if args.only_modes:
        return report_modes(args, threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    base = build_model(args.model, 10, 3, resolution=args.res)
    mults = width_multipliers(args.r, args.s)
    aug = augment(base, mults, mults, init="augmented").to(memory_format=fmt).train()
    x = torch.randn(args.batch, 3, args.res, args.res).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))
    gen = torch.Generator().manual_seed(0)
    configs = [aug.config("random", gen) for _ in range(args.configs)]
    static_base = aug.export("min").to(memory_format=fmt).train()

    dynamic, static = [], []
    for config in configs:
        static_aug = aug.export(config).to(memory_format=fmt).train()
        for _ in range(2):  # warm-up of both paths
            passes([aug, aug], x, y, ["min", config])
            passes([static_base, static_aug], x, y)
        d, s = [], []
        for _ in range(args.repeats):
            d.append(passes([aug, aug], x, y, ["min", config]))
            s.append(passes([static_base, static_aug], x, y))
        dynamic.append(statistics.median(d))
        static.append(statistics.median(s))
        aug.zero_grad(set_to_none=True)
        static_base.zero_grad(set_to_none=True)

    t_dyn, t_static = statistics.mean(dynamic), statistics.mean(static)
    print(f"setup: {args.model}, batch {args.batch}, {args.res}px, r={args.r:g} s={args.s}, "
          f"{args.configs} sampled sub-networks x {args.repeats} repeats, {threads} threads, "
          f"channels_last={args.channels_last}, torch {torch.__version__}")
    print(f"netaug step (dynamic layers, base + 1 augmented, fwd+bwd): {t_dyn * 1000:.1f} ms")
    print(f"same passes on static modules of those widths:            {t_static * 1000:.1f} ms")
    print(f"ratio: {t_dyn / t_static:.2f}")

    report_modes(args, threads)


def report_modes(args, threads: int) -> None:
    modes = ["baseline"] + [m for m in args.modes if m != "baseline"] if args.modes else []
    if modes:
        step_s = mode_step_times(args, modes)
        print(f"full trainer step per mode (all passes + optimizer step), median of {args.repeats}; "
              f"{args.model}, batch {args.batch}, {args.res}px, r={args.r:g} s={args.s}, {threads} threads, "
              f"overrides {args.overrides}:")
        print(f"  {'mode':>10}  {'before ms':>10}  {'after ms':>10}  {'after/before':>12}  "
              f"{'before x base':>13}  {'after x base':>12}")
        b0, a0 = step_s[("baseline", "before")], step_s[("baseline", "after")]
        for mode in modes:
            b, a = step_s[(mode, "before")], step_s[(mode, "after")]
            print(f"  {mode:>10}  {b * 1000:10.1f}  {a * 1000:10.1f}  {a / b:12.3f}  {b / b0:13.2f}  {a / a0:12.2f}")

if __name__ == "__main__":
    main()
