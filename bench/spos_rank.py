"""Does the supernet's inherited-weight accuracy predict a path's accuracy when trained alone?

    python bench/spos_rank.py [--space spaces/mbv2.yaml] [--paths 12] [--standalone-epochs 5] [--set k=v ...]

Trains the SPOS supernet in-process (the trainer's supernet mode, supernet.epochs), samples M
distinct paths uniformly from the (r, s) search grid, scores each with inherited weights after BN
recalibration on val, then trains each path from scratch as a static network for a short schedule
and measures val top-1. Prints the table, Kendall's tau (and Spearman's rho) between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.config import load_space  # noqa: E402
from netaug.errors import exit_on_user_error  # noqa: E402


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[2])
    p.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "spaces" / "mbv2.yaml"))
    p.add_argument("--paths", type=int, default=12, help="M, the number of paths compared (>= 8 for the issue)")
    p.add_argument("--standalone-epochs", type=int, default=5, help="epochs of each path's stand-alone training")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = load_space(args.space, args.overrides)

    import torch
    from scipy.stats import kendalltau, spearmanr

    from netaug.data import load_data
    from netaug.models import profile_macs
    from netaug.spos import path_id
    from netaug.spos.astar import find_astar
    from netaug.spos.supernet import supernet_scorer
    from netaug.train.runtime import configure_threads
    from netaug.train.trainer import Trainer

    threads = configure_threads()
    data = load_data(cfg.data)
    r, s = cfg.search_grid()
    print(f"data {data.name} {data.resolution}px train {len(data.train)} val {len(data.val)} | {threads} threads | "
          f"supernet r_max {cfg.r_max():g} e_max {cfg.supernet.e_max:g} s {cfg.supernet.s} "
          f"{cfg.supernet.epochs} epochs | search grid r {r:g} s {s} | M {args.paths} | "
          f"stand-alone {args.standalone_epochs} epochs", flush=True)

    start = time.perf_counter()
    trainer = Trainer(cfg, data, mode=Trainer.SUPERNET)
    for rec in trainer.fit():
        print(f"supernet epoch {rec.epoch + 1}: loss {rec.train_loss:.4f} base val {rec.val['top1']:.4f} "
              f"{rec.epoch_s:.1f}s", flush=True)
    supernet_s = time.perf_counter() - start
    scorer = supernet_scorer(cfg, data, trainer.state_dict())
    supernet = scorer.supernet
    shape = (data.in_channels, data.resolution, data.resolution)
    inherited = find_astar(supernet, scorer, shape, cfg.netaug, args.paths, cfg.search.seed, r=r, s=s).table

    alone_cfg = dataclasses.replace(cfg, training=dataclasses.replace(
        cfg.training, epochs=args.standalone_epochs,
        warmup_epochs=min(cfg.training.warmup_epochs, args.standalone_epochs)))
    rows = []
    for i, cand in enumerate(inherited):
        torch.manual_seed(cfg.training.seed)
        shaped = supernet.export(cand.path)  # the path's structure, freshly initialised below
        net = type(shaped)(shaped.spec)
        t0 = time.perf_counter()
        alone = Trainer(alone_cfg, data, mode="baseline", base=net)
        alone.fit()
        top1 = alone.evaluate("val")["base"].top1
        macs = profile_macs(net, shape)[0]
        assert macs == cand.macs  # the exported path and the dynamic path count the same MACs
        rows.append((path_id(cand.path), cand.macs, cand.val_top1, top1))
        print(f"path {i + 1}/{len(inherited)} {path_id(cand.path)} {cand.macs / 1e6:6.2f}M MACs: inherited "
              f"{cand.val_top1:.4f} stand-alone {top1:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    tau = kendalltau([x[2] for x in rows], [x[3] for x in rows])
    rho = spearmanr([x[2] for x in rows], [x[3] for x in rows])
    tau_macs = kendalltau([x[1] for x in rows], [x[3] for x in rows])
    print(f"\n{'path':<12}{'MACs (M)':>10}{'inherited':>11}{'alone':>9}")
    for pid, macs, inh, alone_top1 in sorted(rows, key=lambda x: -x[2]):
        print(f"{pid:<12}{macs / 1e6:>10.2f}{inh:>11.4f}{alone_top1:>9.4f}")
    print(f"\nKendall tau (inherited vs stand-alone val top-1): {tau.statistic:.4f} "
          f"(p = {tau.pvalue:.4f}, M = {len(rows)})")
    print(f"Spearman rho: {rho.statistic:.4f} (p = {rho.pvalue:.4f})")
    print(f"for reference, Kendall tau (MACs vs stand-alone): {tau_macs.statistic:.4f} (p = {tau_macs.pvalue:.4f})")
    print(f"supernet {supernet_s:.0f}s, total {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
