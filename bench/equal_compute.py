"""What does NetAug cost against plain training, and what do its cheaper variants save? (equal compute)

    python bench/equal_compute.py --set data.subset=27000 --bases mobilenetv2@0.1 --epochs 40
    python bench/equal_compute.py --space spaces/mbv2.yaml --set model.module=spaces/models/resnet8.py:resnet8

One process runs the product's own calibration (netaug/train/calibrate.py, what the sweep and the
final stage run before training): plain training, NetAug, NetAug with `netaug.aug_every` 2 and 4
and with `netaug.aug_fraction` 0.5 and 0.25 (and NetAug with an SPOS a* with `--astar`), each in
its width-augmented and its min_w phase, step round-robin on the same real training batches, so
the machine's noise hits all of them alike. It prints per recipe the median seconds and the counted
training FLOPs of a step, both against plain training, each knob's cost above plain as a fraction of
full NetAug's ((step - plain) / (netaug - plain)), and what NetAug's `--epochs` schedule costs in
plain epochs: the equal-compute baseline's length.

Without a model override it runs on the study cell of the study runner (search/evidence) (`--bases`); with
`--set model.module=...`, `model.spec=...` or `model.name=...` it runs on that model as given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.errors import UserError, exit_on_user_error  # noqa: E402

KNOBS = {"netaug": {}, "aug_every=2": {"aug_every": 2}, "aug_every=4": {"aug_every": 4},
         "aug_fraction=0.5": {"aug_fraction": 0.5}, "aug_fraction=0.25": {"aug_fraction": 0.25}}
MODEL_KEYS = ("model.name", "model.spec", "model.module")


def bench_space(args):
    """The space timed: the study cell's (search/evidence) unless the overrides name a model."""
    from netaug.config import load_space, parse_override

    named = any(".".join(parse_override(o)[0]) in MODEL_KEYS for o in args.overrides)
    if named:
        return load_space(args.space, [*args.overrides, f"training.epochs={args.epochs}"])
    from search.evidence.cells import study_space

    return study_space(args, args.bases[0], args.epochs)


def read_astar(path: Path) -> list:
    try:
        return json.loads(path.read_text())["arch"]
    except (OSError, ValueError, KeyError) as e:
        why = "no key 'arch'" if isinstance(e, KeyError) else str(e)
        raise UserError(f"--astar {path}: not an a* file of the study runner (search/evidence) ({why})") from None


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="spaces/netaug-official.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--bases", nargs=1, default=["mobilenetv2@0.1"], help="one base, as search/evidence")
    p.add_argument("--epochs", type=int, default=40, help="NetAug's schedule length")
    p.add_argument("--steps", type=int, default=24, help="timed steps per recipe and phase (after 4 warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the study's jobs use 1)")
    p.add_argument("--astar", type=Path, metavar="JSON",
                   help="also time NetAug whose largest model is this SPOS a* (search/evidence's astar/*.json)")
    args = p.parse_args(argv)
    largest = read_astar(args.astar) if args.astar is not None else None
    space = bench_space(args)

    import torch

    from netaug.train.calibrate import calibrate
    from netaug.train.trainer import min_w_epochs
    from search.evaluation import cached_data

    torch.set_num_threads(args.threads)
    data = cached_data(space)
    netaug = with_keys(space, training={"mode": "netaug"})
    recipes = {name: (with_keys(netaug, netaug=keys), None) for name, keys in KNOBS.items()}
    if largest is not None:
        recipes["netaug a*"] = (netaug, largest)
    timed = calibrate(recipes, data, "seconds", args.steps, 4)  # every step's seconds and FLOPs, round-robin
    plain = timed["baseline"].width
    print(f"{space.model.label}: {len(data.train)} training images, {args.threads} thread(s), median of "
          f"{args.steps} steps per recipe and phase, round-robin")
    print(f"  {'recipe':<20}{'phase':<7}{'ms/step':>9}{'x plain':>9}{'GFLOP/step':>12}{'x plain':>9}"
          f"{'cost above plain, / netaug':>28}")
    full = timed["netaug"]
    for name, cost in timed.items():
        for phase in ("width", "min_w"):
            step = getattr(cost, phase)
            above = ""
            if name not in ("baseline", "netaug"):
                ref = getattr(full, phase)
                above = f"{(step.seconds - plain.seconds) / (ref.seconds - plain.seconds):.3f}"
            print(f"  {name:<20}{phase:<7}{step.seconds * 1e3:9.1f}{step.seconds / plain.seconds:9.2f}"
                  f"{step.flops / 1e9:12.4f}{step.flops / plain.flops:9.2f}{above:>28}")
            if name == "baseline":
                break
    late = min_w_epochs(netaug, args.epochs)
    for name in recipes:
        c = timed[name].cost
        schedule = c.schedule(args.epochs, late)
        flops = timed[name]
        flop_schedule = ((args.epochs - late) * flops.width.flops + late * flops.min_w.flops) / plain.flops
        print(f"{name}, {args.epochs} epochs ({args.epochs - late} width-augmented, {late} min_w): "
              f"{schedule:.1f} plain epochs by seconds, {flop_schedule:.1f} by FLOPs")
    return 0


def median_steps(trainers: dict, data, space, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of `Trainer.step` per trainer, round-robin on the same real training batches."""
    import torch

    first = next(iter(trainers.values()))
    batches = first.batcher.batches(data.train, space.training.batch_size, shuffle=True, augment=space.data.augment,
                                    generator=torch.Generator().manual_seed(0), drop_last=True)
    return round_robin(trainers, batches, steps, warmup)


def round_robin(trainers: dict, batches, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of `Trainer.step` per trainer, each batch of `batches` stepped by all in turn."""
    import statistics
    import time

    times: dict[str, list[float]] = {k: [] for k in trainers}
    for i in range(steps + warmup):
        x, y = next(batches)
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.step(x, y)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def with_keys(space, **sections: dict):
    """A copy of `space` with keys replaced, section by section, e.g. training={"mode": "baseline"}."""
    from netaug.config import SpaceConfig, from_dict

    raw = space.to_dict()
    for section, values in sections.items():
        raw[section].update(values)
    return from_dict(SpaceConfig, raw)


if __name__ == "__main__":
    sys.exit(main())
