"""Where does NetAug help? Paired arms over seeds, schedule lengths and base sizes, on real data.

    python bench/evidence.py --out runs/evidence                 # run (or resume) the default grid
    python bench/evidence.py --out runs/evidence --report        # tables and plot of what finished

Arms: `baseline` (plain training), `netaug` (every layer at the largest width; channel sorting
`netaug.sort` of the space, `all` by default as the official code), `netaug_sortaug` (the same with
`sort: augmented`: the base's own channels never move, so it measures what sorting is worth),
`netaug_rkd` (NetAug with the largest model as online RKD teacher, trained on its own CE),
`netaug_rkd_sampled` / `netaug_rkd_fwd` (the cheaper teachers, `rkd.teacher: sampled | max_fwd`) and
`netaug_rkd_astar` (NetAug+RKD whose largest model is the SPOS a*: a supernet trained on the same
data, then a uniform search with inherited weights). Every cell (base size x schedule length x arm
x seed) trains from scratch with `training.epochs` = the schedule length, so the learning-rate
schedule is complete in each. For one seed the arms start from the same base weights and see the
same batches. `--arm-seeds ARM=N` gives an arm fewer (or more) seeds than `--seeds`; arms run in
tiers (baseline and netaug first), so the comparisons a budget must finish come first.

Resumable: every finished cell is a Parquet fragment under OUT/cells, every running one keeps a
checkpoint per epoch under OUT/checkpoints; a rerun with the same OUT skips finished cells and
continues the others. Cells run cheapest first (plain and NetAug before the teacher arms), so a
budget that ends early leaves whole comparisons. Ctrl+C stops the workers; rerun to continue.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("baseline", "netaug", "netaug_sortaug", "netaug_rkd_sampled", "netaug_rkd_fwd", "netaug_rkd",
        "netaug_rkd_astar", "netaug_astar", "netaug_share", "netaug_full", "baseline_equal")
ARM_COLOR = dict(zip(ARMS, [f"C{i}" for i in range(10)] + ["black"]))  # one colour per arm in both panels
TEACHERS = {"netaug_rkd_sampled": "sampled", "netaug_rkd_fwd": "max_fwd"}  # rkd.teacher of the cheaper-teacher arms
ASTAR_ARMS = ("netaug_rkd_astar", "netaug_astar", "netaug_full")  # arms whose largest model is the SPOS a*
# x baseline step, measured (docs/results/); the arms a study must finish first come first in `plan`
ARM_COST = {"baseline": 1, "netaug": 6, "netaug_sortaug": 6, "netaug_rkd_sampled": 6, "netaug_rkd_fwd": 9,
            "netaug_rkd": 25, "netaug_rkd_astar": 20, "netaug_astar": 6, "netaug_share": 6, "netaug_full": 6,
            "baseline_equal": 4.4}
# issue 27's order: the seed's full method, RKD, the equal-compute baseline, SPOS a*, then share and sortaug
ARM_TIER = {"baseline": 0, "netaug": 0, "netaug_full": 1, "netaug_rkd_sampled": 2, "baseline_equal": 3,
            "netaug_astar": 4, "netaug_share": 5, "netaug_sortaug": 6, "netaug_rkd_fwd": 7, "netaug_rkd": 8,
            "netaug_rkd_astar": 9}
BACKFILL_TIER = 4  # --backfill reruns come after the must-cells (issue 27: full, RKD, equal compute, a*)
DEFAULT_SPACE = "spaces/netaug-official.yaml"
RESULTS, EPOCHS, PLOT = "evidence.parquet", "evidence_epochs.parquet", "evidence.png"


@dataclass(frozen=True)
class Cell:
    """One training run of the study."""

    base: str  # "mobilenetv2_tiny" or "mobilenetv2@0.1" (model name @ width multiplier)
    epochs: int
    arm: str
    seed: int
    train_epochs: int | None = None  # baseline_equal: the epochs it trains (its schedule), not `epochs`

    @property
    def id(self) -> str:
        arm = self.arm if self.train_epochs is None else f"{self.arm}-t{self.train_epochs}"
        return f"{self.base.replace('@', '-w')}_e{self.epochs}_{arm}_s{self.seed}"

    @property
    def schedule(self) -> int:
        """Epochs this cell trains: the comparison's schedule, or its own for the equal-compute baseline."""
        return self.train_epochs or self.epochs

    def cost(self) -> float:
        unit = 1 if self.train_epochs else ARM_COST[self.arm]
        return self.schedule * unit * (1.4 if self.base == "mobilenetv2_tiny" else 1.0)


def base_overrides(base: str) -> list[str]:
    name, _, width = base.partition("@")
    return [f"model.name={name}"] + ([f"model.width_mult={width}"] if width else [])


# The schedule the convergence study began with (issue 17): warm-up from near 0, min_w over all epochs.
# Kept by default, so that every arm stays paired with the finished cells; --schedule official drops it.
SCHEDULES = {"issue17": ["training.warmup=linear", "netaug.min_w_of=all"], "official": []}


def study_space(args, base: str, epochs: int):
    """The study's space for one base and schedule: the official recipe's warm-up share (5 of 150 epochs)."""
    from netaug.config import load_space

    warmup = round(epochs * 5 / 150, 4)
    pins = SCHEDULES[getattr(args, "schedule", "issue17")]
    return load_space(args.space, [*pins, *args.overrides, *base_overrides(base), f"training.epochs={epochs}",
                                   f"final.epochs={epochs}", f"training.warmup_epochs={warmup}"])


def arm_of(name: str, space, astar: list | None, teacher: str = "sampled"):
    from search.final_stage import Arm

    n = space.netaug
    common = {"r": n.r, "s": n.s, "aug_loss_weight": n.aug_loss_weight}
    share = space.sharing.share_fraction
    if name == "baseline":
        return Arm("baseline", "baseline", "plain training")
    if name == "baseline_equal":
        return Arm("baseline_equal", "baseline", "plain training at NetAug's compute")
    if name == "netaug_astar":
        return Arm("netaug_astar", "netaug", "netaug, SPOS a*", largest=astar, **common)
    if name == "netaug_share":
        return Arm("netaug_share", "netaug", f"netaug, every layer at r={n.r:g}, share-then-unshare {share:g}",
                   share_fraction=share, **common)
    if name == "netaug_full":
        return Arm("netaug_full", "netaug_rkd", f"netaug_rkd (teacher {teacher}), SPOS a*, share-then-unshare "
                   f"{share:g}", lambda_kd=space.rkd.lambda_kd, largest=astar, share_fraction=share, **common)
    if name == "netaug":
        return Arm("netaug", "netaug", f"netaug, every layer at r={n.r:g}", **common)
    if name == "netaug_sortaug":
        return Arm("netaug_sortaug", "netaug", f"netaug, every layer at r={n.r:g}, sort: augmented", **common)
    if name in TEACHERS:
        return Arm(name, "netaug_rkd", f"netaug_rkd, every layer at r={n.r:g}, teacher {TEACHERS[name]}",
                   lambda_kd=space.rkd.lambda_kd, **common)
    if name == "netaug_rkd":
        return Arm("netaug_rkd", "netaug_rkd", f"netaug_rkd, every layer at r={n.r:g}",
                   lambda_kd=space.rkd.lambda_kd, **common)
    return Arm("netaug_rkd_astar", "netaug_rkd", "netaug_rkd, SPOS a*", lambda_kd=space.rkd.lambda_kd,
               largest=astar, **common)


# ---------------------------------------------------------------------------- worker side
def _atomic_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa

    from netaug.io import write_parquet

    write_parquet(pa.Table.from_pylist(rows), path)


def _atomic_torch(obj, path: Path) -> None:
    import torch

    from netaug.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _code_version() -> str:
    """The commit the cell was trained with (plus "+dirty" for uncommitted changes), or "unknown"."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def _machine() -> str:
    """What a cell's floating-point rounding depends on besides the code: CPU, torch's kernel level, torch
    and numpy."""
    import platform

    import numpy
    import torch

    model = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}; {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}; numpy {numpy.__version__}"


def _worker_init(threads: int) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the driver's: it terminates the workers
    torch.set_num_threads(threads)


def train_cell(args, cell: Cell, ckpt: Path) -> tuple[dict, list[dict], object]:
    """Train one cell, resuming from `ckpt` if it exists: its row, its epoch rows and its test evaluation."""
    import torch

    from netaug.models import profile_macs
    from netaug.train.trainer import Trainer
    from search.evaluation import cached_data
    from search.final_stage import arm_space, train_eval_subset, weights_digest

    out = Path(args.out)
    code = _code_version()  # what this cell trains with (read before training: the tree may change meanwhile)
    space = study_space(args, cell.base, cell.schedule)
    astar = None
    if cell.arm in ASTAR_ARMS:
        astar = json.loads((out / "astar" / f"{cell.base.replace('@', '-w')}.json").read_text())["arch"]
    arm = arm_of(cell.arm, space, astar, args.full_teacher)
    cfg = arm_space(space, arm, cell.seed)
    if cell.arm == "netaug_sortaug":  # what sorting the base's own channels is worth
        cfg.netaug.sort = "augmented"
    cfg.rkd.teacher = {**TEACHERS, "netaug_full": args.full_teacher}.get(cell.arm, cfg.rkd.teacher)
    data = cached_data(cfg)
    started = time.perf_counter()
    trainer = Trainer(cfg, data, largest=arm.largest)
    aug = trainer.augmented
    init = weights_digest(aug.export("min") if aug is not None else trainer.model)
    epoch_rows: list[dict] = []
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        trainer.load_state_dict(state["trainer"])
        epoch_rows = state["epoch_rows"]
    subset = train_eval_subset(data, cfg.final.train_eval_size, cfg.data.split_seed)
    while trainer.epoch < cell.schedule:
        rec = trainer.train_epoch()
        val = trainer.evaluate("val")["base"]
        train = trainer.evaluate(subset)["base"]
        epoch_rows.append({**asdict(cell), "epoch": trainer.epoch, "train_loss": rec.train_loss,
                           "base_loss": rec.base_loss, "aug_loss": rec.aug_loss, "distill_loss": rec.distill_loss,
                           "lr": rec.lr, "train_top1": train.top1, "val_top1": val.top1, "val_loss": val.loss,
                           "epoch_s": rec.epoch_s, "step_s": rec.step_s})
        _atomic_torch({"trainer": trainer.state_dict(), "epoch_rows": epoch_rows}, ckpt)
        print(f"{ckpt.stem}: epoch {trainer.epoch}/{cell.schedule} train top-1 {train.top1:.4f} "
              f"val top-1 {val.top1:.4f} ({rec.epoch_s:.0f}s)", flush=True)
    test = trainer.evaluate("test")["base"]
    last = epoch_rows[-1]
    shape = (data.in_channels, data.resolution, data.resolution)
    base_net = aug.export("min") if aug is not None else trainer.model
    row = {**asdict(cell), "mode": arm.mode, "description": arm.description, "r": arm.r, "s": arm.s,
           "expand_r": cfg.netaug.expand_r, "expand_s": cfg.netaug.expand_s, "mid_width": cfg.netaug.mid_width,
           "init": cfg.netaug.init, "aug_loss_weight": arm.aug_loss_weight, "lambda_kd": arm.lambda_kd,
           "largest": json.dumps(aug.named("max")) if aug is not None else None,
           "base_macs": profile_macs(base_net, shape)[0], "base_params": sum(p.numel() for p in base_net.parameters()),
           "aug_macs": profile_macs(aug.export("max"), shape)[0] if aug is not None else None,
           "train_top1": last["train_top1"], "val_top1": last["val_top1"], "val_loss": last["val_loss"],
           "test_top1": test.top1, "test_loss": test.loss, **test_prf(test, data.num_classes),
           "share_fraction": arm.share_fraction, "train_images": len(data.train),
           "mean_step_s": sum(r["step_s"] for r in epoch_rows) / len(epoch_rows),
           "cell_s": time.perf_counter() - started, "init_digest": init, "sort": cfg.netaug.sort,
           "sort_momentum": cfg.netaug.sort_momentum, "teacher": cfg.rkd.teacher if "rkd" in arm.mode else None,
           "code": code, "machine": _machine()}
    return row, epoch_rows, test


def _write_predictions(test, path: Path, cell_id: str) -> None:
    _atomic_parquet([{"cell": cell_id, "index": i, "label": int(label), "topk": [int(c) for c in top]}
                     for i, (label, top) in enumerate(zip(test.labels, test.topk))], path)


def run_cell(args, cell: Cell) -> str:
    """Train one cell (resuming from its checkpoint), write its row, its epoch rows and its test predictions."""
    out = Path(args.out)
    ckpt = out / "checkpoints" / f"{cell.id}.pt"
    row, epoch_rows, test = train_cell(args, cell, ckpt)
    _atomic_parquet(epoch_rows, out / "epochs" / f"{cell.id}.parquet")
    _write_predictions(test, out / "predictions" / f"{cell.id}.parquet", cell.id)
    _atomic_parquet([row], out / "cells" / f"{cell.id}.parquet")
    ckpt.unlink(missing_ok=True)
    return cell.id


REPRODUCED = ("train_top1", "val_top1", "test_top1", "test_loss")  # what a rerun must give again, exactly


def rerun_cell(args, cell: Cell) -> str:
    """Train a finished cell again to recover the test predictions it did not store (`--backfill`).

    The rerun's row goes to OUT/reruns with `reproduced` (train/val/test top-1 and test loss equal
    the stored cell's, bit for bit, and so does val top-1 at every epoch) and the largest differences.
    Its predictions are written only when it reproduced the cell: they are then the cell's own."""
    import pyarrow.parquet as pq

    out = Path(args.out)
    ckpt = out / "checkpoints" / f"{cell.id}.rerun.pt"
    row, epoch_rows, test = train_cell(args, cell, ckpt)
    stored = pq.read_table(out / "cells" / f"{cell.id}.parquet").to_pylist()[0]
    stored_epochs = {r["epoch"]: r["val_top1"]
                     for r in pq.read_table(out / "epochs" / f"{cell.id}.parquet").to_pylist()}
    diffs = {f"max_abs_diff_{k}": abs(row[k] - stored[k]) for k in REPRODUCED}
    diffs["max_abs_diff_epoch_val_top1"] = max(abs(r["val_top1"] - stored_epochs.get(r["epoch"], math.inf))
                                              for r in epoch_rows)
    reproduced = all(v == 0 for v in diffs.values())
    if reproduced:
        _write_predictions(test, out / "predictions" / f"{cell.id}.parquet", cell.id)
    _atomic_parquet([{**row, **diffs, "reproduced": reproduced, "stored_code": stored.get("code"),
                      "stored_machine": stored.get("machine")}],
                    out / "reruns" / f"{cell.id}.parquet")
    ckpt.unlink(missing_ok=True)
    said = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
    print(f"rerun {cell.id}: " + ("reproduced the stored cell exactly" if reproduced
                                  else f"differs from the stored cell: {said}"), flush=True)
    return cell.id


PRF_KS = (1, 3)  # the seed's precision/recall/F1@k on test (macro, torchmetrics' semantics)


def test_prf(test, num_classes: int) -> dict[str, float]:
    """test_{precision,recall,f1}@k for k in PRF_KS, from the test split's top-k classes."""
    from netaug.metrics import precision_recall_f1_at_k

    out = {}
    for k in PRF_KS:
        for name, value in precision_recall_f1_at_k(test.topk, test.labels, k, num_classes).items():
            out[f"test_{name}@{k}"] = value
    return out


def search_astar(args, base: str) -> str:
    """Train the SPOS supernet of `base` on the study's data, then pick a* by inherited val top-1."""
    from netaug.io import atomic_path
    from netaug.spos.astar import find_astar
    from netaug.spos.supernet import supernet_scorer
    from netaug.train.trainer import Trainer
    from search.evaluation import cached_data

    out = Path(args.out) / "astar" / f"{base.replace('@', '-w')}.json"
    space = study_space(args, base, args.supernet_epochs)
    space.supernet.epochs = args.supernet_epochs
    data = cached_data(space)
    started = time.perf_counter()
    trainer = Trainer(space, data, mode=Trainer.SUPERNET)
    for rec in trainer.fit():
        print(f"supernet {base}: epoch {rec.epoch + 1}/{args.supernet_epochs} base val {rec.val['top1']:.4f} "
              f"({rec.epoch_s:.0f}s)", flush=True)
    scorer = supernet_scorer(space, data, trainer.state_dict())
    found = find_astar(scorer.supernet, scorer, (data.in_channels, data.resolution, data.resolution), space.netaug,
                       args.paths, space.search.seed)
    best, table, base_macs = found.chosen, found.table, found.base_macs
    payload = {"base": base, "arch": found.named, "val_top1": best.val_top1,
               "macs": best.macs, "base_macs": base_macs, "supernet_epochs": args.supernet_epochs,
               "paths": [c.row() for c in table], "seconds": time.perf_counter() - started}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"a* of {base}: {payload['arch']} ({best.macs / base_macs:.1f}x base MACs, inherited val top-1 "
          f"{best.val_top1:.4f})", flush=True)
    return base


# ---------------------------------------------------------------------------- driver
def plan(args) -> list[Cell]:
    seeds = {a: args.seeds for a in args.arms}
    seeds.update(args.arm_seeds)
    cells = [Cell(b, e, a, args.seed + i, args.equal_epochs if a == "baseline_equal" else None)
             for b in args.bases for e in args.epochs for a in args.arms for i in range(seeds[a])]
    cells += [Cell(b, e, "baseline", args.seed) for b in (args.curve_bases or args.bases) for e in args.curve_epochs]
    return sorted(dict.fromkeys(cells), key=lambda c: (ARM_TIER[c.arm], c.cost(), c.seed))


def run(args) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl+C works even if started with SIGINT ignored
    out = Path(args.out)
    cells = [c for c in plan(args) if not (out / "cells" / f"{c.id}.parquet").is_file()]
    astar_needed = sorted({c.base for c in cells if c.arm in ASTAR_ARMS
                           and not (out / "astar" / f"{c.base.replace('@', '-w')}.json").is_file()})
    print(f"evidence: {len(plan(args))} cells, {len(cells)} to run ({args.jobs} workers x {args.threads} threads); "
          f"out {out}", flush=True)
    queue: list = [("cell", c) for c in cells]
    if args.backfill:  # finished cells without test predictions, rerun after the cells of tier BACKFILL_TIER
        reruns = [c for c in plan(args) if (out / "cells" / f"{c.id}.parquet").is_file()
                  and not (out / "predictions" / f"{c.id}.parquet").is_file()
                  and not (out / "reruns" / f"{c.id}.parquet").is_file()]
        at = next((i for i, (_, c) in enumerate(queue) if ARM_TIER[c.arm] > BACKFILL_TIER), len(queue))
        queue[at:at] = [("rerun", c) for c in reruns]
        print(f"backfill: {len(reruns)} finished cells without test predictions to rerun", flush=True)
    first_astar = next((i for i, (_, c) in enumerate(queue) if c.arm in ASTAR_ARMS), len(queue))
    queue[first_astar:first_astar] = [("astar", b) for b in astar_needed]
    def ready(cell: Cell) -> bool:  # an a* cell waits for its base's supernet search
        return cell.arm not in ASTAR_ARMS or (out / "astar" / f"{cell.base.replace('@', '-w')}.json").is_file()

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_worker_init,
                                initargs=(args.threads,)) as pool:
        running: dict = {}
        failed: list[str] = []
        try:
            while queue or running:
                while queue and len(running) < args.jobs:
                    pick = next((i for i, (kind, c) in enumerate(queue) if kind == "astar" or ready(c)), None)
                    if pick is None:
                        break
                    kind, item = queue.pop(pick)
                    fn = {"astar": search_astar, "rerun": rerun_cell}.get(kind, run_cell)
                    running[pool.submit(fn, args, item)] = (kind, item)
                if not running:
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    kind, item = running.pop(future)
                    try:
                        future.result()
                        print(f"done: {kind} {item if kind == 'astar' else item.id}", flush=True)
                    except Exception as exc:  # one failed cell must not stop the study
                        name = item if kind == "astar" else item.id
                        failed.append(name)
                        print(f"FAILED: {kind} {name}: {type(exc).__name__}: {exc}", flush=True)
        except KeyboardInterrupt:
            workers = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            print("interrupted; rerun the same command to continue (finished cells and epoch checkpoints are kept)",
                  file=sys.stderr)
            os._exit(130)
    report(args)
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}; rerun to retry them", file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------------------- report
def load_rows(out: Path) -> tuple[list[dict], list[dict], list[dict]]:
    import pyarrow.parquet as pq

    def read(folder: str) -> list[dict]:
        files = sorted((out / folder).glob("*.parquet"))
        return [r for f in files for r in pq.read_table(f).to_pylist()]

    reruns = read("reruns")
    return with_reruns(read("cells"), reruns), read("epochs"), reruns


KEY = tuple(f.name for f in fields(Cell))  # a cell's identity in its row


def cell_key(row: dict) -> tuple:
    """The identity (KEY) of the cell a cell's or rerun's row belongs to."""
    return tuple(row.get(k) for k in KEY)


def with_reruns(rows: list[dict], reruns: list[dict]) -> list[dict]:
    """The cells' rows, with test precision/recall/F1 filled in from the reruns that reproduced them
    exactly (`prf_from_rerun`); a rerun that did not reproduce its cell is ignored here and reported."""
    done = {cell_key(r): r for r in reruns if r["reproduced"]}
    out = []
    for row in rows:
        rerun = done.get(cell_key(row))
        if rerun is not None and (row.get(PRF_COLUMNS[0]) is None or _isnan(row[PRF_COLUMNS[0]])):
            row = {**row, **{c: rerun[c] for c in PRF_COLUMNS}, "prf_from_rerun": True}
        out.append(row)
    return out


def rerun_lines(reruns: list[dict]) -> list[str]:
    """The reruns of --backfill: how many reproduced their cell exactly, then a line for each that did not."""
    if not reruns:
        return []
    same = sum(r["reproduced"] for r in reruns)
    lines = [f"Reruns (--backfill, for the test predictions the first run did not store): {same} of {len(reruns)} "
             "reproduced their cell's train/val/test top-1, test loss and every epoch's val top-1 bit for bit."]
    for r in reruns:
        if not r["reproduced"]:
            diffs = ", ".join(f"{k.removeprefix('max_abs_diff_')} {v:.3g}" for k, v in r.items()
                              if k.startswith("max_abs_diff"))
            lines.append(f"- {r['arm']} seed {r['seed']} differs (code {r['code']} vs {r['stored_code']}): {diffs}; "
                         "its predictions are not the cell's (its own figures are in the table of reruns)")
    return lines


REFERENCES = ("baseline", "netaug")  # every arm is compared with both, paired by seed
PRF_COLUMNS = [f"test_{m}@{k}" for k in PRF_KS for m in ("precision", "recall", "f1")]


def comparisons(rows: list[dict]) -> dict[tuple, object]:
    """{(base, epochs, arm, reference): ArmComparison} of test top-1, paired by seed, against each of
    REFERENCES (netaug against baseline once), with Holm's p over every comparison that has a p-value."""
    from dataclasses import replace

    from netaug.stats import arm_comparisons, holm

    comps: dict[tuple, object] = {}
    for base, epochs in sorted({(r["base"], r["epochs"]) for r in rows}):
        mine = [r for r in rows if r["base"] == base and r["epochs"] == epochs]
        for ref in REFERENCES:
            for c in arm_comparisons(mine, baseline=ref):
                if c.arm not in REFERENCES[:REFERENCES.index(ref) + 1]:  # no reverse or self comparisons
                    comps[(base, epochs, c.arm, ref)] = c
    keys = list(comps)
    adjusted = holm([comps[k].result.p_value for k in keys])
    family = sum(not math.isnan(p) for p in adjusted)
    return {k: replace(comps[k], holm_p=p, family=family) for k, p in zip(keys, adjusted)}


def _delta(c) -> tuple[str, str]:
    """("+0.60 [−0.06, +1.26], p = 0.066 (n=5)", "0.2 *") for one comparison, or dashes."""
    from netaug.stats import format_points

    if c is None:
        return "—", "—"
    res = c.result
    ci = "" if math.isnan(res.low) else f" [{format_points(res.low)}, {format_points(res.high)}]"
    p = "" if math.isnan(res.p_value) else f", p = {res.p_value:.3g}"
    holm_p = "—" if math.isnan(c.holm_p) else f"{c.holm_p:.3g}" + (" *" if c.holm_p < 0.05 else "")
    return f"{format_points(res.mean)}{ci}{p} (n={res.n})", holm_p


def report_lines(rows: list[dict], reruns: list[dict] = ()) -> tuple[list[str], dict]:
    """The report's Markdown: per base and schedule, each arm's train/val/test top-1 at the end and its
    paired Δ test top-1 against baseline and netaug with Holm's p; then test precision/recall/F1@k; then
    the reruns that did not reproduce their cell, with their own test top-1 and P/R/F1@k."""
    comps = comparisons(rows)
    lines = ["| base | epochs | arm | seeds | train top-1 | val top-1 | test top-1 | Δ test vs baseline (pts) "
             "[95% CI], p | Holm p | Δ test vs netaug (pts) [95% CI], p | Holm p |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    prf = ["| base | epochs | arm | seeds with predictions | " + " | ".join(
        c.replace("test_", "") for c in PRF_COLUMNS) + " |", "|" + " --- |" * (4 + len(PRF_COLUMNS))]
    for base, epochs in sorted({(r["base"], r["epochs"]) for r in rows}):
        mine = [r for r in rows if r["base"] == base and r["epochs"] == epochs]
        for arm in [a for a in ARMS if any(r["arm"] == a for r in mine)]:
            rs = [r for r in mine if r["arm"] == arm]
            cells = [_mean_sd([r[k] for r in rs]) for k in ("train_top1", "val_top1", "test_top1")]
            vs = [x for ref in REFERENCES for x in _delta(comps.get((base, epochs, arm, ref)))]
            name = arm if arm != "baseline_equal" else f"baseline_equal ({rs[0]['train_epochs']} epochs)"
            lines.append(f"| {base} | {epochs} | {name} | {len(rs)} | " + " | ".join(cells + vs) + " |")
            have = [r for r in rs if r.get(PRF_COLUMNS[0]) is not None and not _isnan(r[PRF_COLUMNS[0]])]
            if have:
                rerun = sum(bool(r.get("prf_from_rerun")) for r in have)
                prf.append(f"| {base} | {epochs} | {name} | {len(have)} of {len(rs)}"
                           + (f" ({rerun} from reruns)" if rerun else "") + " | "
                           + " | ".join(_mean_sd([r[c] for r in have]) for c in PRF_COLUMNS) + " |")
    family = next(iter(comps.values())).family if comps else 0
    lines += ["", f"Holm p: adjusted over all {family} comparisons with a p-value in this table (both columns); "
              "* marks Holm p < 0.05. The intervals are the plain paired 95% intervals."]
    if len(prf) > 2:
        lines += ["", "Test precision / recall / F1 at k (macro, torchmetrics' definitions; docs/metrics.md), "
                  "mean ± sd over the seeds whose cell stored its test predictions (or whose rerun reproduced the cell "
                  "exactly and stored them):", "", *prf]
    lines += differing_reruns_table(rows, reruns)
    return lines, comps


def differing_reruns_table(rows: list[dict], reruns: list[dict]) -> list[str]:
    """Per arm, the reruns that did not reproduce their cell bit for bit (same seeds and recipe, another
    machine's rounding or another commit), so a second sample of the arm, not its table's cells. Their test top-1
    (beside the stored cells' of the same seeds) and their own test precision/recall/F1@k."""
    differ = [r for r in reruns if not r["reproduced"] and not _isnan(r.get(PRF_COLUMNS[0], math.nan))]
    if not differ:
        return []
    stored = {cell_key(r): r for r in rows}
    out = ["", "Reruns that did not reproduce their cell bit for bit (same seed and recipe; each one's code and the "
           "cell's are in the lines below). Their own test figures, beside the stored cells' test top-1 of the same "
           "seeds:",
           "", "| base | epochs | arm | seeds | stored test top-1 | rerun test top-1 | "
           + " | ".join(c.replace("test_", "") for c in PRF_COLUMNS) + " |", "|" + " --- |" * (6 + len(PRF_COLUMNS))]
    groups = sorted({(r["base"], r["epochs"], r["arm"]) for r in differ}, key=lambda k: (k[0], k[1], ARMS.index(k[2])))
    for key in groups:
        rs = sorted((r for r in differ if (r["base"], r["epochs"], r["arm"]) == key), key=lambda r: r["seed"])
        cells = [stored[cell_key(r)]["test_top1"] for r in rs]
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(str(r['seed']) for r in rs)} | {_mean_sd(cells)} | "
                   + " | ".join(_mean_sd([r[c] for r in rs]) for c in ["test_top1", *PRF_COLUMNS]) + " |")
    return out


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def report(args) -> None:
    import pyarrow as pa

    from netaug.io import atomic_path, write_parquet

    out = Path(args.out)
    rows, epoch_rows, reruns = load_rows(out)
    if not rows:
        print(f"no finished cells under {out / 'cells'}")
        return
    write_parquet(pa.Table.from_pylist(rows), out / RESULTS)
    write_parquet(pa.Table.from_pylist(epoch_rows), out / EPOCHS)
    lines, comps = report_lines(rows, reruns)
    notes = rerun_lines(reruns)
    lines += ["", *notes] if notes else []
    print("\n".join(lines))
    with atomic_path(out / "evidence.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    deltas = [(b, e, a, c.result) for (b, e, a, ref), c in comps.items() if ref == "baseline"]
    plot(out, deltas, epoch_rows)
    print(f"wrote {out / RESULTS}, {out / EPOCHS}, {out / 'evidence.md'}, {out / PLOT}")


def _mean_sd(values: list[float]) -> str:
    import numpy as np

    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def seed_band(rows) -> tuple[list[int], list[float], list[float], list[float], list[int]]:
    """Train top-1 per epoch over the seeds of one arm and schedule: epochs every seed has, then the
    mean, min and max over the seeds at each, and the seeds."""
    by_seed: dict[int, dict[int, float]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["epoch"]] = r["train_top1"]
    seeds = sorted(by_seed)
    xs = sorted(set.intersection(*(set(c) for c in by_seed.values())))
    vals = [[by_seed[s][e] for s in seeds] for e in xs]
    return xs, [sum(v) / len(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals], seeds


def plot(out: Path, deltas: list, epoch_rows: list[dict]) -> None:
    """Per base size: Δ test top-1 of each arm against baseline with its paired interval (against the
    schedule length when there are several, per arm when there is one), and train top-1 per epoch:
    every arm at its longest schedule plus baseline at every schedule (the plateau), the mean over
    the finished seeds with their min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from netaug.io import atomic_path

    bases = sorted({r["base"] for r in epoch_rows})
    fig, axes = plt.subplots(2, len(bases), figsize=(6.5 * len(bases), 8), squeeze=False)
    for j, base in enumerate(bases):
        ax = axes[0][j]
        mine = [(e, a, r) for b, e, a, r in deltas if b == base]
        schedules = sorted({e for e, _, _ in mine})
        arms = [a for a in ARMS[1:] if any(x == a for _, x, _ in mine)]
        for k, arm in enumerate(arms):
            pts = sorted((e, r) for e, a, r in mine if a == arm)
            xs = [e for e, _ in pts] if len(schedules) > 1 else [k]
            ys = [r.mean * 100 for _, r in pts]
            err = [[(r.mean - r.low) * 100 if not math.isnan(r.low) else 0 for _, r in pts],
                   [(r.high - r.mean) * 100 if not math.isnan(r.high) else 0 for _, r in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, color=ARM_COLOR[arm],
                        label=f"{arm} (n={pts[-1][1].n})")
        ax.axhline(0, color="black", lw=0.8)
        if len(schedules) > 1:
            ax.set_xlabel("schedule (epochs)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xticks(range(len(arms)), arms, fontsize=8)
            ax.set_xlim(-0.5, max(len(arms), 1) - 0.5)
            ax.set_xlabel(f"arm ({schedules[0]} epochs)" if schedules else "arm")
        if not mine:
            ax.text(0.5, 0.5, "no paired comparison has finished yet", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set(title=f"{base}: Δ test top-1 vs baseline, paired by seed", ylabel="Δ (pts), 95% CI")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax = axes[1][j]
        for arm in ARMS:
            rows = [r for r in epoch_rows if r["base"] == base and r["arm"] == arm]
            if not rows:
                continue
            longest = max(r["epochs"] for r in rows)
            schedules = sorted({r["epochs"] for r in rows}) if arm == "baseline" else [longest]
            for n, epochs in enumerate(schedules):
                xs, mean, low, high, seeds = seed_band(r for r in rows if r["epochs"] == epochs)
                # baseline's shorter schedules (the plateau curves) in greys, lighter the shorter
                grey = str(0.3 + 0.5 * (len(schedules) - 1 - n) / len(schedules))
                color = ARM_COLOR[arm] if epochs == longest else grey
                who = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of {len(seeds)} seeds, band min-max"
                trained = xs[-1] if xs else epochs  # baseline_equal trains its own schedule, longer than `epochs`
                ax.plot(xs, mean, marker=".", color=color, label=f"{arm}, {trained}-epoch schedule, {who}")
                if len(seeds) > 1:
                    ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
        ax.set(title=f"{base}: train top-1 per epoch (fixed train subset)", xlabel="epoch", ylabel="train top-1")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / PLOT) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
