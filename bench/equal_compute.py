"""How many epochs of plain training cost what NetAug's schedule costs? (the equal-compute baseline)

    python bench/equal_compute.py --set data.subset=27000 --bases mobilenetv2@0.1 --epochs 40

On the study cell of bench/evidence.py (same space, data and overrides), one process times a
baseline step, a NetAug step in its width-augmented phase and one in its min_w phase (base widths,
random expands), round-robin on the same real training batches so the machine's noise hits all
three alike, plus each trainer's end-of-epoch evaluation (val and the train subset; NetAug's
includes its BN recalibration). NetAug's schedule cost is the sum over its epochs, each at its
phase's step; the equal-compute baseline gets that cost divided by one baseline epoch, rounded.
`--astar studies/convergence/astar/mobilenetv2-w0.1.json` also times NetAug whose largest model is
that SPOS a* (the `netaug_astar` arm), in the same round-robin.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="spaces/netaug-official.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--bases", nargs=1, default=["mobilenetv2@0.1"], help="one base, as bench/evidence.py")
    p.add_argument("--epochs", type=int, default=40, help="NetAug's schedule length")
    p.add_argument("--steps", type=int, default=30, help="timed steps per trainer (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the study's jobs use 1)")
    p.add_argument("--astar", type=Path, metavar="JSON",
                   help="also time NetAug whose largest model is this SPOS a* (bench/evidence.py's astar/*.json)")
    args = p.parse_args(argv)
    largest = None
    if args.astar is not None:
        try:
            largest = json.loads(args.astar.read_text())["arch"]
        except (OSError, ValueError, KeyError) as e:
            why = "no key 'arch'" if isinstance(e, KeyError) else str(e)
            print(f"error: --astar {args.astar}: not an a* file of bench/evidence.py ({why})", file=sys.stderr)
            sys.exit(2)

    import torch

    from bench.evidence import study_space
    from netaug.train.trainer import Trainer, min_w_start
    from search.evaluation import cached_data
    from search.final_stage import train_eval_subset

    torch.set_num_threads(args.threads)
    space = study_space(args, args.bases[0], args.epochs)
    data = cached_data(space)
    subset = train_eval_subset(data, space.final.train_eval_size, space.data.split_seed)
    base = Trainer(_mode(space, "baseline"), data)
    aug = Trainer(_mode(space, "netaug"), data)
    min_w = Trainer(_mode(space, "netaug"), data)
    min_w.epoch = args.epochs - 1  # its aug_kind() is min_w
    assert aug.aug_kind() == "random" and min_w.aug_kind() == "min_w"
    trainers = {"baseline": base, "netaug (width phase)": aug, "netaug (min_w phase)": min_w}
    evaluated = [("baseline", base), ("netaug", aug)]
    if largest is not None:
        star, star_min_w = (Trainer(_mode(space, "netaug"), data, largest=largest) for _ in range(2))
        star_min_w.epoch = args.epochs - 1
        trainers |= {"netaug a* (width phase)": star, "netaug a* (min_w phase)": star_min_w}
        evaluated.append(("netaug a*", star))
    step = median_steps(trainers, data, space, args.steps)
    evals = {}
    for name, trainer in evaluated:
        start = time.perf_counter()
        trainer.evaluate("val")
        trainer.evaluate(subset)
        evals[name] = time.perf_counter() - start
    steps = base.steps_per_epoch
    n_min_w = sum(1 for e in range(args.epochs) if e >= min_w_start(space))

    def schedule_s(name: str) -> float:  # core-seconds of a NetAug schedule: each epoch at its phase's step
        return ((args.epochs - n_min_w) * steps * step[f"{name} (width phase)"]
                + n_min_w * steps * step[f"{name} (min_w phase)"] + args.epochs * evals[name])

    base_epoch = steps * step["baseline"] + evals["baseline"]
    print(f"study cell: {args.bases[0]}, {len(data.train)} training images, {steps} steps per epoch, "
          f"{args.threads} thread(s), median of {args.steps} steps each")
    for name, s in step.items():
        print(f"  {name:>25}: {s * 1000:8.1f} ms per step ({s / step['baseline']:.2f} x baseline)")
    print("  end-of-epoch evaluation: " + ", ".join(f"{k} {v:.1f} s" for k, v in evals.items()))
    netaug_s = schedule_s("netaug")
    print(f"NetAug, {args.epochs} epochs ({args.epochs - n_min_w} width-augmented, {n_min_w} min_w): "
          f"{netaug_s:.0f} core-s; one baseline epoch: {base_epoch:.1f} core-s")
    print(f"equal-compute baseline: {netaug_s / base_epoch:.1f} epochs -> --equal-epochs "
          f"{round(netaug_s / base_epoch)}")
    if largest is not None:
        star_s = schedule_s("netaug a*")
        print(f"NetAug with a* as the largest model, {args.epochs} epochs: {star_s:.0f} core-s "
              f"({star_s / netaug_s:.2f} x NetAug's, {star_s / base_epoch:.1f} baseline epochs), "
              f"not counting the supernet and search that found a*")


def median_steps(trainers: dict, data, space, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of `Trainer.step` per trainer, round-robin on the same real training batches."""
    import torch

    first = next(iter(trainers.values()))
    batches = first.batcher.batches(data.train, space.training.batch_size, shuffle=True, augment=space.data.augment,
                                    generator=torch.Generator().manual_seed(0), drop_last=True)
    return round_robin(trainers, batches, steps, warmup)


def round_robin(trainers: dict, batches, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of `Trainer.step` per trainer, each batch of `batches` stepped by all in turn."""
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


def _mode(space, mode: str):
    return with_keys(space, training={"mode": mode})


if __name__ == "__main__":
    main()
