"""How many sweep trials train a configuration already trained, with the flat space (before) and with the
conditional space and its repeat check (now)?

    python bench/sweep_repeats.py                                     # cell B of studies/equal-compute
    python bench/sweep_repeats.py --space spaces/mbv2.yaml --set "sweep.mode=[baseline, netaug]" --seeds 50

No training: each sweep is driven as Tune drives it (suggest, then complete, one trial at a time) with a
made-up val_top1 that depends on the mode and a little on the parameters. A trial repeats an earlier one
when its mode and the parameters that mode reads are equal (plain training reads none, reparam only
reparam_k), so it would train the same model again. "flat" is the searcher before the conditional space:
OptunaSearch on every swept parameter, TPE with Optuna's defaults. "conditional" is search/sweep_search.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.errors import UserError, exit_on_user_error  # noqa: E402

DEFAULT_SPACE = "studies/equal-compute/cell-b.yaml"


def made_up_val(params: dict) -> float:
    """A val_top1 with the ordering cell B's sweep saw (NetAug+RKD a little above plain training)."""
    base = {"baseline": 0.815, "reparam": 0.812, "netaug": 0.810, "netaug_rkd": 0.820}[params["mode"]]
    return base + 0.002 * float(params.get("aug_fraction", 0.5)) - 0.001 * float(params.get("r", 2.0))


def effective(params: dict, modes: list[str]) -> str:
    """What the trial trains: its mode and the parameters that mode reads."""
    from netaug.config import params_of_mode

    mode = params.get("mode", modes[0])
    return json.dumps({"mode": mode, **{k: params[k] for k in params_of_mode(mode) if k in params}}, sort_keys=True)


def run_sweep(searcher, trials: int, modes: list[str]) -> tuple[int, list[str]]:
    """(trials that repeat an earlier trial's configuration, each trial's mode)."""
    from ray.tune.search import Searcher

    seen, repeats, trained = set(), 0, []
    for i in range(trials):
        params = searcher.suggest(f"t{i:04d}")
        if params == Searcher.FINISHED:
            break
        params = {"mode": modes[0], **params}
        key = effective(params, modes)
        repeats += key in seen
        seen.add(key)
        trained.append(params["mode"])
        searcher.on_trial_complete(f"t{i:04d}", {"val_top1": made_up_val(params)})
    return repeats, trained


def flat_searcher(cfg):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from search.sweep_stage import distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(space=distributions(cfg), metric="val_top1", mode="max",
                        sampler=optuna.samplers.TPESampler(seed=cfg.sweep.seed))


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_SPACE, help=f"space file (default: {DEFAULT_SPACE})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a space key")
    parser.add_argument("--seeds", type=int, default=20, help="sweeps per searcher, sweep.seed 0, 1, ... (default 20)")
    args = parser.parse_args(argv)
    return report(args)


def report(args) -> int:
    from netaug.config import load_space
    from search.sweep_stage import make_searcher

    if args.seeds < 1:
        raise UserError(f"--seeds: at least 1, got {args.seeds}")
    cfg = load_space(args.space, args.set)
    sw = cfg.sweep
    modes = sw.modes()
    print(f"{args.space}: {sw.trials} trials over modes {', '.join(modes)}, sampler {sw.sampler}, {args.seeds} sweeps "
          f"per searcher (sweep.seed 0-{args.seeds - 1})")
    for name in ("flat", "conditional"):
        counts, answered, per_mode = [], [], {m: 0 for m in modes}
        for seed in range(args.seeds):
            seeded = load_space(args.space, [*args.set, f"sweep.seed={seed}"])
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
                searcher = flat_searcher(seeded) if name == "flat" else make_searcher(seeded, Path(tmp)).searcher
                repeats, trained = run_sweep(searcher, sw.trials, modes)
            counts.append(repeats)
            answered.append(getattr(searcher, "repeats", 0))
            for m in trained:
                per_mode[m] += 1
        mix = ", ".join(f"{m} {n / args.seeds:.2f}" for m, n in per_mode.items())
        print(f"  {name:11s} trials repeating a trained configuration: mean {statistics.mean(counts):.2f} of "
              f"{sw.trials} (min {min(counts)}, max {max(counts)}); trials per sweep by mode: {mix}")
        if name == "conditional":
            print(f"  {'':11s} repeated draws answered from an earlier trial's result instead: mean "
                  f"{statistics.mean(answered):.2f} per sweep")
    return 0


if __name__ == "__main__":
    sys.exit(main())
