"""`python search/run.py --space spaces/mbv2.yaml [--stage supernet|search|sweep] [--out DIR] [--resume]`.

Runs the whole search on Ray Tune: the SPOS supernet (one trial, checkpointed every epoch), the
SPOS search for the largest augmented model (candidates scored in parallel by Ray actors), and the
Optuna sweep of r, s, alpha and lambda_KD that trains the base with NetAug+RKD, each trial using
the a* of its own (r, s) grid. Results land in Parquet in the run directory. Watch it in the Ray
dashboard (its URL is printed) and in TensorBoard; join a cluster with --address.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from a checkout

from netaug.config import SpaceConfig, load_space  # noqa: E402
from netaug.errors import UserError, exit_on_user_error  # noqa: E402
from netaug.io import atomic_path  # noqa: E402

STAGES = ("supernet", "search", "sweep")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python search/run.py", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", required=True, help="space file (YAML), e.g. spaces/mbv2.yaml")
    p.add_argument("--stage", choices=(*STAGES, "all"), default="all",
                   help="one stage, or all of them in order (supernet and search are skipped with "
                        "sweep.largest: fixed)")
    p.add_argument("--out", default=None, help="run directory, also Ray Tune's storage path (default: runs/<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a space key, e.g. --set sweep.trials=4 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (finished stages are kept, the sweep's searcher "
                        "state is restored)")
    p.add_argument("--address", default=None, help="join a Ray cluster: auto or ray://host:port (default: local)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    return p.parse_args(argv)


def stages_of(args: argparse.Namespace, cfg: SpaceConfig) -> tuple[str, ...]:
    if args.stage != "all":
        return (args.stage,)
    return STAGES if cfg.sweep.largest == "searched" else ("sweep",)


def prepare(args: argparse.Namespace) -> tuple[SpaceConfig, Path, tuple[str, ...]]:
    """Validate everything that can be checked before Ray starts."""
    cfg = load_space(args.space, args.overrides)
    if cfg.data.root is not None:  # trials run in their own working directories
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    stages = stages_of(args, cfg)
    if "search" in stages:
        cfg.search_grid()
    if args.resume and args.out is None:
        raise UserError("--resume: needs --out, the run directory to continue")
    run_dir = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}").expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out: {run_dir} exists and is not a folder")
    if args.resume and not run_dir.is_dir():
        raise UserError(f"--out: no run to resume at {run_dir}")
    needs_supernet = args.stage == "search" or (args.stage == "sweep" and cfg.sweep.largest == "searched")
    if needs_supernet and not (run_dir / "supernet").is_dir():
        raise UserError(f"--out: no supernet run under {run_dir}; run --stage supernet first")
    for stage in ("supernet", "sweep"):
        if stage in stages and (run_dir / stage).exists() and not args.resume:
            raise UserError(f"--out: {run_dir} already holds a {stage} run; pass --resume to continue it "
                            "or choose a new --out")
    return cfg, run_dir, stages


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, run_dir, stages = prepare(args)

    from search.cluster import start_ray

    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "space.json") as tmp:
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    start = time.perf_counter()
    start_ray(args.address, dashboard=not args.no_dashboard)
    print(f"run: {run_dir} | stages: {' -> '.join(stages)} | TensorBoard: tensorboard --logdir {run_dir}",
          flush=True)
    if "supernet" in stages:
        from search.supernet_stage import run_supernet

        checkpoint = run_supernet(cfg, run_dir, resume=args.resume)
        print(f"supernet checkpoint -> {checkpoint.path}", flush=True)
    if "search" in stages:
        from search.search_stage import SEARCH_FILE, print_outcome, run_search

        if args.resume and args.stage == "all" and (run_dir / SEARCH_FILE).exists():
            print(f"search: kept {run_dir / SEARCH_FILE} from before the interruption", flush=True)
        else:
            print_outcome(run_search(cfg, run_dir))
    if "sweep" in stages:
        from search.results import summary_lines, write_results
        from search.sweep_stage import finalize_stopped, metric_mode, run_sweep

        grid = run_sweep(cfg, run_dir, resume=args.resume)
        late = finalize_stopped(grid, cfg)
        if late:
            print(f"evaluated {len(late)} trial(s) stopped early on test, from their last checkpoints", flush=True)
        paths, trials = write_results(grid, run_dir, cfg.sweep.epochs, cfg.sweep.modes()[0], late)
        print("\n" + "\n".join(summary_lines(trials, *metric_mode(cfg))))
        print("results: " + ", ".join(str(p) for p in paths.values() if p.exists()))
    print(f"done in {time.perf_counter() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
