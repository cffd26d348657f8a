"""`python search/run.py --space spaces/mbv2.yaml [--stage supernet|search|sweep|final] [--out DIR] [--resume]`.

Runs the whole search on Ray Tune: the SPOS supernet (one trial, checkpointed every epoch), the SPOS
search for the largest augmented model (candidates scored in parallel by Ray actors), the Optuna sweep
of r, s, alpha and lambda_KD (and the training mode: plain training, NetAug, NetAug+RKD, re-
parameterization) at equal compute, each NetAug trial using the a* of its own (r, s) grid, and the final
stage: the sweep's winner retrained from scratch against plain training, paired over seeds, with the
answer at equal epochs and at equal compute (is it better than training plain for the same time?) and
the best tiny model exported for deployment (final/model.pt, final/model.onnx, final/model.json).
Results land in Parquet in the run directory. Watch it in the Ray dashboard (its URL is printed) and in
TensorBoard; join a cluster with --address. Ctrl+C stops the run and prints the command that resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from a checkout

from netaug.config import SpaceConfig, load_space  # noqa: E402
from netaug.errors import StageIncomplete, UserError, exit_on_user_error  # noqa: E402
from netaug.io import atomic_path  # noqa: E402

STAGES = ("supernet", "search", "sweep", "final")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl+C
EXIT_INCOMPLETE = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python search/run.py", description=__doc__.split("\n\n")[1])
    p.add_argument("--space", required=True, help="space file (YAML), e.g. spaces/mbv2.yaml")
    p.add_argument("--stage", choices=(*STAGES, "all"), default="all",
                   help="one stage, or all of them in order (supernet and search are skipped with "
                        "sweep.largest: fixed, or when sweep.mode holds plain modes only); final needs a run "
                        "directory whose sweep has finished (default: all)")
    p.add_argument("--out", default=None, help="run directory, also Ray Tune's storage path (default: runs/<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a space key, e.g. --set sweep.trials=4 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (finished stages and finished trials are kept; "
                        "the sweep's searcher state is restored) with the space it ran with: only where it runs "
                        "(resources, workers, max_failures, data.root, data.workers, training.device) may change")
    p.add_argument("--address", default=None, help="join a Ray cluster: auto or ray://host:port (default: local)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    return p.parse_args(argv)


def stages_of(args: argparse.Namespace, cfg: SpaceConfig) -> tuple[str, ...]:
    if args.stage != "all":
        return (args.stage,)
    return STAGES if cfg.sweep.searches_largest() else ("sweep", "final")  # plain modes only: no a* to search



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
    needs_supernet = args.stage == "search" or (args.stage == "sweep" and cfg.sweep.searches_largest())
    if needs_supernet and not (run_dir / "supernet").is_dir():
        raise UserError(f"--out: no supernet run under {run_dir}; run --stage supernet first")
    from search.arms import NO_SWEEP_ARMS

    needs_sweep = not set(cfg.final.arms) <= set(NO_SWEEP_ARMS)  # the winner and netaug_fixed are the sweep's
    if args.stage == "final" and not (run_dir / "trials.parquet").is_file() and needs_sweep:
        raise UserError(f"--out: no finished sweep in {run_dir} (trials.parquet is missing); run the sweep first")
    check_data_and_model(cfg)
    parallel = [f"{s}.workers={getattr(cfg, s).workers}" for s in ("supernet", "sweep", "final")
                if s in stages and getattr(cfg, s).workers > 1]
    if parallel and args.no_dashboard and args.address is None:
        raise UserError(f"--no-dashboard: data-parallel trials ({', '.join(parallel)}) need the local dashboard: "
                        "Ray Train frees the workers of a trial Tune stopped through its State API")
    from netaug.data import CHEAP_TO_LOAD

    if "final" in stages and cfg.deploy.int8 and cfg.data.loader == "memory" and cfg.data.name in CHEAP_TO_LOAD:
        from netaug.train.int8 import calibration_set
        from search.evaluation import cached_data

        # the size, now; loaded through the cache, so the final stage's own check reuses these arrays
        calibration_set(cached_data(cfg), cfg.deploy.calib_images, cfg.data.split_seed)
    for stage in ("supernet", "sweep", "final"):
        if stage in stages and (run_dir / stage).exists() and not args.resume:
            raise UserError(f"--out: {run_dir} already holds a {stage} run; pass --resume to continue it "
                            "or choose a new --out")
    if args.resume:
        check_same_space(run_dir, cfg)
    return cfg, run_dir, stages


def check_same_space(run_dir: Path, cfg: SpaceConfig) -> None:
    """A resume trains what the run began with: a space that differs (but for where it executes: resources,
    workers, data.root, ...) is one line naming the keys, before space.json is rewritten."""
    from netaug.config import resume_conflicts

    stored = run_dir / "space.json"
    if not stored.is_file():
        return
    changes = resume_conflicts(json.loads(stored.read_text()), cfg)
    if changes:
        shown = ", ".join(f"{key} {json.dumps(old)} (now {json.dumps(new)})" for key, old, new in changes[:4])
        more = f" and {len(changes) - 4} more" if len(changes) > 4 else ""
        raise UserError(f"--resume: {stored} ran with {shown}{more}; resume with the same space file and --set "
                        "values, or choose a new --out")


def check_data_and_model(cfg: SpaceConfig) -> None:
    """What every trial would find wrong, found here once: the dataset is listed (decoded only when that is cheap)
    and the model is built and augmented on the CPU, so bad input is one line before Ray starts or anything is
    written, not a traceback per retried trial."""
    from netaug.data import CHEAP_TO_LOAD, probe_data
    from netaug.train.trainer import check_model
    from search.evaluation import cached_data

    if cfg.data.name in CHEAP_TO_LOAD and cfg.data.loader == "memory":  # loaded once: the final stage reuses it
        data = cached_data(cfg)
        num_classes, in_channels = data.num_classes, data.in_channels
    else:
        num_classes, in_channels = probe_data(cfg.data)
    check_model(cfg, num_classes, in_channels)


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command line that continues this run where it stopped."""
    cmd = ["python", "search/run.py", "--space", args.space, "--out", str(run_dir)]
    if args.stage != "all":
        cmd += ["--stage", args.stage]
    for override in args.overrides:
        cmd += ["--set", override]
    if args.address:
        cmd += ["--address", args.address]
    if args.no_dashboard:
        cmd.append("--no-dashboard")
    return shlex.join([*cmd, "--resume"])


def rerun_command(args: argparse.Namespace, extra: list[str]) -> str:
    """The command line that runs this job again in a new run directory, with `extra` overrides added."""
    cmd = ["python", "search/run.py", "--space", args.space]
    for override in [*args.overrides, *extra]:
        cmd += ["--set", override]
    if args.address:
        cmd += ["--address", args.address]
    return shlex.join(cmd)


def _quit(code: int, message: str) -> int:
    """Print one line and leave at once: Ray's own shutdown would print more after a Ctrl+C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not turn this into a traceback
    print(message, file=sys.stderr, flush=True)
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except BaseException:  # noqa: BLE001 - nothing more to say; the run's state is on disk already
        pass
    sys.stdout.flush()
    os._exit(code)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C (or kill -INT) stops the run resumably even where it was started with SIGINT ignored, as
    # `nohup ... &` from a non-interactive shell starts it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cfg, run_dir, stages = prepare(args)
    except KeyboardInterrupt:
        return _quit(EXIT_INTERRUPTED, "interrupted before the run started; nothing was written")
    # Ctrl+C must stop the whole run. Tune's own SIGINT handler only ends the current Tuner.fit(),
    # after which the next stage would start on an unfinished one: let KeyboardInterrupt through.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        return run_stages(args, cfg, run_dir, stages)
    except KeyboardInterrupt:
        return _quit(EXIT_INTERRUPTED, f"interrupted; resume with: {resume_command(args, run_dir)}")
    except StageIncomplete as exc:
        return _quit(EXIT_INCOMPLETE, f"{exc}; resume with: {resume_command(args, run_dir)}")


def run_stages(args: argparse.Namespace, cfg: SpaceConfig, run_dir: Path, stages: tuple[str, ...]) -> int:
    from search.cluster import check_fit, start_ray

    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "space.json") as tmp:
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    start = time.perf_counter()
    start_ray(args.address, dashboard=not args.no_dashboard)
    check_fit(cfg, stages)  # a request the cluster can never grant would wait forever
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
        import pyarrow.parquet as pq

        from netaug.study import first_rung_of, load_study, most_important_line, rung_line, rung_values
        from search.results import summary_lines, write_results
        from search.sweep_stage import (
            exhausted_path,
            finalize_stopped,
            record_study,
            run_sweep,
            study_path,
        )

        grid = run_sweep(cfg, run_dir, resume=args.resume)
        finished = grid.num_terminated + grid.num_errors
        if finished < len(grid) or (len(grid) < cfg.sweep.trials and not exhausted_path(run_dir).is_file()):
            raise StageIncomplete(f"sweep: {finished} of {cfg.sweep.trials} trials finished")
        late = finalize_stopped(grid, cfg)
        if late:
            print(f"{len(late)} trial(s) stopped early: scored on test from their last checkpoints "
                  f"({run_dir / 'sweep' / 'late'})", flush=True)
        paths, trials = write_results(grid, run_dir, cfg.sweep.epochs, cfg.sweep.modes()[0], late)
        record_study(grid, cfg, run_dir)
        print("\n" + "\n".join(summary_lines(trials, cfg.sweep.metric)))
        study = load_study(study_path(run_dir))
        print(most_important_line(study, cfg.sweep.metric))
        if (rung := first_rung_of(cfg.to_dict())) is not None and study is not None:
            rows = pq.read_table(paths["epochs.parquet"]).to_pylist()  # the sweep's epochs, just written
            print(rung_line(study, cfg.sweep.metric, rung_values(rows, *rung[:2], cfg.sweep.metric), rung[2]))
        print("results: " + ", ".join(str(p) for p in paths.values() if p.exists()))
        print(f"study: optuna-dashboard {study_path(run_dir)}")
    if "final" in stages:
        from search.final_stage import run_final_stage

        lines = run_final_stage(cfg, run_dir, resume=args.resume, rerun=lambda extra: rerun_command(args, extra))
        print("\n" + "\n".join(lines), flush=True)
    if "sweep" in stages or "final" in stages:
        print(f"report: {write_run_report(run_dir)}", flush=True)
    print(f"done in {time.perf_counter() - start:.0f}s", flush=True)
    return 0


def write_run_report(run_dir: Path) -> Path:
    """analysis/report.py on the finished run: report/report.md and its plots."""
    from analysis.load import load_run
    from analysis.report import write_report

    return write_report(load_run(run_dir))


if __name__ == "__main__":
    sys.exit(main())
