"""Cost of NetAug's dynamic (weight-sharing) layers against plain static layers of the same widths.

One NetAug step runs forward+backward of the base and of one sampled augmented sub-network. This
script times that on the augmented model, and the same two passes on plain static networks of
exactly those widths (built with `export`), interleaved so that machine noise hits both alike.

    python bench/step_overhead.py            # short run (< 5 min on 2 cores): CPU, MobileNetV2-Tiny, batch 128, 32 px
    python bench/step_overhead.py --full     # every mode, more repeats, SGD before/after (about 16 min, > 10 GB)

It then times one full trainer step (all passes plus the optimizer step) of baseline, netaug and
netaug_rkd (every mode with --full), with a row per cheaper online teacher of netaug_rkd
(`rkd.teacher`: max_fwd, sampled), interleaved in one run, relative to baseline and to netaug.
--full also times each mode before (SGD's per-parameter loop) and after (foreach SGD) the step
changes of issue 11.
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


TEACHER_VARIANTS = ("max_fwd", "sampled")  # cheaper online teachers (rkd.teacher), each its own row


def variants_of(modes: list[str]) -> list[tuple[str, str, list[str]]]:
    """(row label, mode, extra overrides): every mode, plus netaug_rkd with each cheaper teacher."""
    rows = [(mode, mode, []) for mode in modes]
    if "netaug_rkd" in modes:
        rows += [(f"netaug_rkd[{t}]", "netaug_rkd", [f"rkd.teacher={t}"]) for t in TEACHER_VARIANTS]
    return rows


def mode_step_times(args, modes: list[str], before_after: bool) -> dict[tuple[str, str], float]:
    """Median seconds of one `Trainer.step` per row of `variants_of(modes)`, on random images of the
    benchmark's shape; with `before_after`, also with SGD's per-parameter loop ("before")."""
    from netaug.train import Trainer

    gen = torch.Generator().manual_seed(0)
    n = args.batch * 2

    def images(k: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (k, 3, args.res, args.res), dtype=torch.uint8, generator=gen),
                        torch.randint(0, 10, (k,), generator=gen))

    data = DataSplits("random", images(n), images(args.batch), images(args.batch), 10, (0.5,) * 3, (0.25,) * 3, False)

    def space(extra: list[str]):
        return load_space(None, [f"model.name={args.model}", f"data.resolution={args.res}",
                                 f"training.batch_size={args.batch}", f"netaug.r={args.r}", f"netaug.s={args.s}",
                                 f"training.channels_last={str(args.channels_last).lower()}", *args.overrides, *extra])

    rows = variants_of(modes)
    trainers = {label: {"after": Trainer(space(extra), data, mode=mode)} for label, mode, extra in rows}
    if before_after:
        for label, mode, extra in rows:  # the step before issue 11: SGD's per-parameter Python loop
            trainer = Trainer(space(extra), data, mode=mode)
            for group in trainer.optimizer.param_groups:
                group["foreach"] = False
            trainers[label]["before"] = trainer
    first = trainers[rows[0][0]]["after"]
    x, y = next(first.batcher.batches(data.train, args.batch))
    times: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats + 1):  # round-robin, so machine noise hits every row and variant alike
        for label, _, _ in rows:
            for variant, trainer in trainers[label].items():
                start = time.perf_counter()
                trainer.step(x, y)
                if rep:  # the first round is warm-up
                    times.setdefault((label, variant), []).append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true",
                   help="the full run (6 sub-networks x 5 repeats, every mode, SGD before/after): about 16 min and "
                        "over 10 GB on 2 cores; the default is the short run (under 5 min)")
    p.add_argument("--model", default="mobilenetv2_tiny")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--r", type=float, default=3.0)
    p.add_argument("--s", type=int, default=2)
    p.add_argument("--configs", type=int, default=None, help="sampled augmented sub-networks (default 2; full 6)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, median kept (default 3; full 5)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="space overrides of the per-mode step timing, e.g. --set netaug.expand_r=2.8")
    p.add_argument("--only-modes", action="store_true", help="skip the dynamic-layer comparison")
    p.add_argument("--modes", nargs="*", default=None, choices=MODES,
                   help="training modes to time relative to baseline (none: skip; default baseline netaug "
                        "netaug_rkd, full: all); netaug_rkd adds a row per cheaper teacher")
    args = p.parse_args()
    args.configs = args.configs or (6 if args.full else 2)
    args.repeats = args.repeats or (5 if args.full else 3)
    if args.modes is None:
        args.modes = list(MODES) if args.full else ["baseline", "netaug", "netaug_rkd"]

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
    warmups = 2 if args.full else 1
    for config in configs:
        static_aug = aug.export(config).to(memory_format=fmt).train()
        for _ in range(warmups):  # warm-up of both paths
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
    del static_aug

    t_dyn, t_static = statistics.mean(dynamic), statistics.mean(static)
    print(f"setup: {args.model}, batch {args.batch}, {args.res}px, r={args.r:g} s={args.s}, "
          f"{args.configs} sampled sub-networks x {args.repeats} repeats, {threads} threads, "
          f"channels_last={args.channels_last}, torch {torch.__version__}")
    print(f"netaug step (dynamic layers, base + 1 augmented, fwd+bwd): {t_dyn * 1000:.1f} ms")
    print(f"same passes on static modules of those widths:            {t_static * 1000:.1f} ms")
    print(f"ratio: {t_dyn / t_static:.2f}", flush=True)
    del aug, static_base

    report_modes(args, threads)


def report_modes(args, threads: int) -> None:
    modes = ["baseline"] + [m for m in args.modes if m != "baseline"] if args.modes else []
    if not modes:
        return
    before_after = args.full
    step_s = mode_step_times(args, modes, before_after)
    print(f"full trainer step per mode (all passes + optimizer step), median of {args.repeats}; "
          f"{args.model}, batch {args.batch}, {args.res}px, r={args.r:g} s={args.s}, {threads} threads, "
          f"overrides {args.overrides}:")
    a0 = step_s[("baseline", "after")]
    n0 = step_s.get(("netaug", "after"))
    head = f"  {'mode':>20}  {'ms':>10}  {'x baseline':>10}  {'x netaug':>8}"
    if before_after:
        head += f"  {'before ms':>10}  {'after/before':>12}  {'before x base':>13}"
    print(head)
    b0 = step_s.get(("baseline", "before"))
    for label, _, _ in variants_of(modes):
        a = step_s[(label, "after")]
        line = f"  {label:>20}  {a * 1000:10.1f}  {a / a0:10.2f}  " + (f"{a / n0:8.2f}" if n0 else f"{'-':>8}")
        if before_after:
            b = step_s[(label, "before")]
            line += f"  {b * 1000:10.1f}  {a / b:12.3f}  {b / b0:13.2f}"
        print(line)


if __name__ == "__main__":
    main()
