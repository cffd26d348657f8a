"""What does scoring val and the train subset cost against an epoch of training (why `final.eval_every` exists)?

    python bench/eval_cost.py                                           # cell B of studies/equal-compute
    python bench/eval_cost.py --space spaces/mbv2.yaml --repeats 5 --threads 2

For plain training and NetAug on the same space, each repeat times one training epoch (`Trainer.train_epoch`)
and then one evaluation as the final stage does it (val, and the fixed train subset of `final.train_eval_size`
images). Printed per recipe: every repeat's seconds, the medians, and evaluation against that recipe's own
training epoch and against a plain training epoch. Evaluation is not training compute: it costs wall time only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.errors import UserError, exit_on_user_error  # noqa: E402

RECIPES = ("baseline", "netaug")


def time_recipe(space_file: str, overrides: list[str], mode: str, repeats: int) -> tuple[list[float], list[float]]:
    """(training epoch seconds, evaluation seconds) for each repeat of one recipe."""
    from netaug.config import load_space
    from netaug.train.trainer import Trainer
    from search.evaluation import cached_data
    from search.final_stage import train_eval_subset

    space = load_space(space_file, [*overrides, f"training.mode={mode}"])
    data = cached_data(space)
    trainer = Trainer(space, data)
    subset = train_eval_subset(data, space.final.train_eval_size, space.data.split_seed)
    train, score = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.train_epoch()
        trained = time.perf_counter()
        trainer.evaluate("val")
        trainer.evaluate(subset)
        train.append(trained - start)
        score.append(time.perf_counter() - trained)
    return train, score


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="studies/equal-compute/cell-b.yaml", help="space file (default: cell B)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a space key (repeatable)")
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per recipe (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a final-stage trial uses 1 per CPU)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise UserError(f"--repeats: must be >= 1, got {args.repeats}")
    import torch

    torch.set_num_threads(args.threads)
    timed = {mode: time_recipe(args.space, args.overrides, mode, args.repeats) for mode in RECIPES}
    plain_epoch = statistics.median(timed["baseline"][0])
    print(f"{args.space}: {args.threads} thread(s), {args.repeats} repeat(s) per recipe; seconds")
    for mode, (train, score) in timed.items():
        t, s = statistics.median(train), statistics.median(score)
        print(f"  {mode:<9} train epoch {' '.join(f'{x:.2f}' for x in train)} (median {t:.2f}) | evaluation "
              f"{' '.join(f'{x:.2f}' for x in score)} (median {s:.2f}) | evaluation / own epoch {s / t:.2f}, "
              f"/ plain epoch {s / plain_epoch:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
