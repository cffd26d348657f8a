"""Orchestration overhead of the main job: how much of the trial slots' time is training and evaluation.

    python bench/orchestration.py [--space spaces/mbv2.yaml] [--set key=value ...] [--out DIR]

Runs `python search/run.py --space ...` as a user would (dashboard on), times it end to end, then
reads the run's result logs and prints:

- the share of trial-slot time spent inside training and eval steps: for the sweep,
  sum over trials of their time inside train epochs, val/test evaluation and the per-trial SPOS
  search (candidate evaluation), divided by concurrency x the sweep's wall time (first trial start
  to last trial end), so idle slots, worker start-up, data loading, checkpoints and Tune's own work
  all count against it. The same share per trial (in-step / the trial's own time) is printed too.
- the end-to-end wall time of the command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def trial_windows(experiment: Path) -> list[dict]:
    """Per trial: start, end (unix seconds), in-step seconds, search seconds, Tune's time_total_s."""
    rows = []
    for result in sorted(experiment.glob("*/result.json")):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not reports:
            continue
        first, last = reports[0], reports[-1]
        start = first["timestamp"] - first["time_this_iter_s"] - first.get("setup_s", 0.0)
        rows.append({"trial": result.parent.name, "start": start, "end": last["timestamp"],
                     "step_s": last.get("step_s", sum(r.get("epoch_s", 0.0) for r in reports)),
                     "search_s": last.get("search_s", 0.0), "time_total_s": last["time_total_s"]})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default=str(ROOT / "spaces" / "mbv2.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="netaug-orchestration-")) / "run"
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", args.space, "--out", str(out),
           *[a for s in args.overrides for a in ("--set", s)]]
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"the run failed with exit code {proc.returncode}")
        return proc.returncode
    space = json.loads((out / "space.json").read_text())
    concurrency = space["sweep"]["concurrency"]
    sweep = trial_windows(out / "sweep")
    stage_wall = max(t["end"] for t in sweep) - min(t["start"] for t in sweep)
    in_step = sum(t["step_s"] + t["search_s"] for t in sweep)
    per_trial = in_step / sum(t["time_total_s"] for t in sweep)
    supernet = trial_windows(out / "supernet")
    trials = pd.read_parquet(out / "trials.parquet")
    print()
    print(f"sweep: {len(sweep)} trials, concurrency {concurrency}, wall {stage_wall:.1f}s, "
          f"in-step {in_step:.1f}s (of which SPOS search {sum(t['search_s'] for t in sweep):.1f}s)")
    print(f"share of trial-slot time inside training and eval steps: {in_step / (concurrency * stage_wall):.3f} "
          f"(slots x sweep wall); {per_trial:.3f} of the trials' own time")
    if supernet:
        s = supernet[0]
        print(f"supernet trial: {s['end'] - s['start']:.1f}s, epochs {s['step_s']:.1f}s inside steps")
    print(f"trials: {dict(trials['status'].value_counts())}; best base val top-1 {trials['val_top1'].max():.4f}")
    print(f"end-to-end wall time: {wall:.1f}s ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
