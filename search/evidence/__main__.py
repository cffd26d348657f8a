"""python -m search.evidence: run (or resume) the study, or `--report` what finished."""

from __future__ import annotations

import argparse
import os
import sys

from search.evidence import __doc__ as DOC
from search.evidence.cells import ARMS, DEFAULT_SPACE, SCHEDULES, base_overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DOC.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/evidence", help="study folder (resumable)")
    p.add_argument("--space", default=DEFAULT_SPACE, help="space file of the recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a space key (repeatable)")
    p.add_argument("--bases", nargs="+", default=["mobilenetv2@0.1", "mobilenetv2_tiny"],
                   help="base models: a model name, or name@width_mult")
    p.add_argument("--epochs", nargs="+", type=int, default=[2, 6, 18], help="schedule lengths")
    p.add_argument("--curve-epochs", nargs="*", type=int, default=[30],
                   help="extra baseline-only schedules (one seed) that show where train top-1 plateaus")
    p.add_argument("--curve-bases", nargs="*", default=None, help="bases of the curve runs (default: --bases)")
    p.add_argument("--arms", nargs="+", default=[a for a in ARMS if a != "baseline_equal"], choices=ARMS,
                   help="arms to train (baseline_equal needs --equal-epochs)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--arm-seeds", nargs="*", default=[], metavar="ARM=N",
                   help="seeds of one arm when not --seeds, e.g. netaug_sortaug=3")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--supernet-epochs", type=int, default=2, help="SPOS supernet epochs of the a* arm")
    p.add_argument("--paths", type=int, default=8, help="paths the a* search evaluates")
    p.add_argument("--schedule", choices=tuple(SCHEDULES), default="issue17",
                   help="issue17 (deprecated, kept for the finished cells): the warm-up and min_w span the convergence "
                        "study began with (training.warmup=linear, netaug.min_w_of=all), so new arms pair with its "
                        "finished cells; official: the space's own")
    p.add_argument("--equal-epochs", type=int, default=None,
                   help="epochs of the baseline_equal arm: plain training at NetAug's cost (bench/equal_compute.py)")
    p.add_argument("--full-teacher", default="sampled", choices=("max", "max_fwd", "sampled"),
                   help="rkd.teacher of the netaug_full arm (NetAug + RKD + SPOS a* + share-then-unshare)")
    p.add_argument("--jobs", type=int, default=2, help="cells trained in parallel")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)")
    p.add_argument("--backfill", action="store_true",
                   help="also rerun finished cells that stored no test predictions (after the must-cells), to "
                        "recover them; a rerun must reproduce the cell's numbers exactly (OUT/reruns)")
    p.add_argument("--report", action="store_true", help="only report what has finished")
    args = p.parse_args(argv)
    arm_seeds = {}
    for item in args.arm_seeds:
        arm, _, n = item.partition("=")
        if arm not in args.arms or not n.isdigit() or int(n) < 1:
            p.error(f"--arm-seeds {item}: expected ARM=N with ARM one of --arms and N >= 1")
        arm_seeds[arm] = int(n)
    args.arm_seeds = arm_seeds
    if "baseline_equal" in args.arms and not args.equal_epochs and not args.report:
        p.error("--arms baseline_equal needs --equal-epochs N (python bench/equal_compute.py measures N)")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    return args


def main(argv: list[str] | None = None) -> None:
    from netaug.config import load_space
    from netaug.errors import UserError

    args = parse_args(argv)
    try:
        for base in args.bases:
            load_space(args.space, [*args.overrides, *base_overrides(base)])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.report:
        from search.evidence.report import report

        report(args)
    else:
        from search.evidence.runner import run

        run(args)


if __name__ == "__main__":
    main()
