"""Stage 2: SPOS search on the trained supernet, candidates scored in parallel by Ray actors.

Each actor reads the supernet checkpoint from the run's storage path (so a multi-node cluster with
shared storage works), recalibrates BatchNorm for each path and measures val top-1 and loss with
inherited weights. MACs and params are counted on the driver. Results land in archs.parquet and the
chosen path a* in search.json.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.util import ActorPool

from netaug.config import SpaceConfig, from_dict
from netaug.errors import UserError
from netaug.io import atomic_path
from netaug.spos import Candidate, path_id
from search.archs import append_archs, archs_table
from search.cluster import resources_for
from search.supernet_stage import latest_checkpoint

SEARCH_FILE = "search.json"


@ray.remote
class PathScoringWorker:
    """Loads the data and the supernet checkpoint once, then scores paths (BN recalibration + val)."""

    def __init__(self, space: dict, checkpoint) -> None:
        from netaug.data import load_data
        from netaug.spos.supernet import supernet_scorer
        from netaug.train.runtime import configure_threads
        from search.checkpoints import load_trainer_state

        configure_threads()
        cfg = from_dict(SpaceConfig, space)
        self.scorer = supernet_scorer(cfg, load_data(cfg.data), load_trainer_state(checkpoint))

    def score(self, path: list) -> tuple[float, float]:
        from netaug.spos.supernet import paths_from_json

        return self.scorer(paths_from_json([path]))[0]

    def recalibrations(self) -> int:
        return self.scorer.recalibrations


@dataclass
class SearchOutcome:
    search_id: str
    method: str
    r: float
    s: int
    chosen: Candidate
    table: list[Candidate]
    base_macs: int
    archs_path: Path
    named: dict[str, float]  # a* as {group name: multiplier}

    def summary(self) -> dict:
        return {"search_id": self.search_id, "method": self.method, "r": self.r, "s": self.s,
                "arch": self.chosen.path, "arch_named": self.named, "candidate_id": path_id(self.chosen.path),
                "val_top1": self.chosen.val_top1, "val_loss": self.chosen.val_loss, "macs": self.chosen.macs,
                "params": self.chosen.params, "base_macs": self.base_macs, "evaluated": len(self.table)}


class RayScorer:
    """Scores a batch of paths on a pool of `PathScoringWorker` actors, in order."""

    def __init__(self, cfg: SpaceConfig, checkpoint) -> None:
        res = resources_for(cfg.search.resources)
        self.workers = [PathScoringWorker.options(num_cpus=res["cpu"], num_gpus=res["gpu"]).remote(
            cfg.to_dict(), checkpoint) for _ in range(cfg.search.workers)]
        self.pool = ActorPool(self.workers)

    def __call__(self, paths: Sequence) -> list[tuple[float, float]]:
        return list(self.pool.map(lambda actor, path: actor.score.remote(path), list(paths)))

    def recalibrations(self) -> int:
        return sum(ray.get([w.recalibrations.remote() for w in self.workers]))

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker)


def run_search(cfg: SpaceConfig, run_dir: Path, grid: tuple[float, int] | None = None,
               method: str | None = None) -> SearchOutcome:
    """Search the (r, s) grid of the supernet in `run_dir`; append archs.parquet; write search.json."""
    from netaug.augment.supernet import build_supernet
    from netaug.data import load_data
    from netaug.spos.astar import find_astar
    from netaug.spos.supernet import same_supernet
    from netaug.train.trainer import build_base

    r, s = grid or cfg.search_grid()
    method = method or cfg.search.method
    checkpoint, _ = latest_checkpoint(run_dir)
    with checkpoint.as_directory() as folder:
        trained = from_dict(SpaceConfig, json.loads((Path(folder) / "space.json").read_text()))
    if diff := same_supernet(cfg, trained):
        raise UserError(f"{diff[0]}: differs from the space the supernet in {run_dir} was trained with")
    if r > trained.r_max():
        raise UserError(f"search.r: {r:g} exceeds the trained supernet's r_max {trained.r_max():g}")

    data = load_data(cfg.data)
    supernet = build_supernet(trained, build_base(cfg, data))  # structure only: MACs are counted here
    shape = (data.in_channels, data.resolution, data.resolution)
    scorer = RayScorer(cfg, checkpoint)  # inherited weights on Ray actors
    search_id = f"{method}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    sc = cfg.search
    try:
        found = find_astar(supernet, scorer, shape, cfg.netaug, sc.num_paths, sc.seed, sc.macs_limit, r, s, method,
                           {"population": sc.population, "generations": sc.generations, "parents": sc.parents,
                            "mutation_prob": sc.mutation_prob})
    except ValueError as exc:
        raise UserError(f"search.macs_limit: {exc}") from None
    finally:
        scorer.close()
    chosen, table, base_macs = found.chosen, found.table, found.base_macs
    archs = append_archs(run_dir, archs_table(table, chosen, search_id, method, r, s))
    outcome = SearchOutcome(search_id, method, r, s, chosen, table, base_macs, archs, supernet.named(chosen.path))
    with atomic_path(run_dir / SEARCH_FILE) as tmp:
        tmp.write_text(json.dumps({**outcome.summary(), "seconds": time.perf_counter() - start}, indent=2) + "\n")
    return outcome


def print_outcome(outcome: SearchOutcome, top: int = 5) -> None:
    print(f"search {outcome.search_id}: {len(outcome.table)} paths evaluated on the (r={outcome.r:g}, "
          f"s={outcome.s}) grid; base {outcome.base_macs / 1e6:.2f}M MACs")
    best = sorted(outcome.table, key=lambda c: (-c.val_top1, c.val_loss))[:top]
    print(f"  {'candidate':<12}{'gen':>4}{'MACs (M)':>10}{'x base':>8}{'val top1':>10}{'val loss':>10}")
    for c in best:
        mark = " <- a*" if c.path == outcome.chosen.path else ""
        print(f"  {path_id(c.path):<12}{c.generation:>4}{c.macs / 1e6:>10.2f}{c.macs / outcome.base_macs:>8.2f}"
              f"{c.val_top1:>10.4f}{c.val_loss:>10.4f}{mark}")
    print("a* = " + ", ".join(f"{name} x{mult:g}" for name, mult in outcome.named.items()))
    print(f"archs -> {outcome.archs_path}; a* -> {outcome.archs_path.parent / SEARCH_FILE}")
