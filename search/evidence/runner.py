"""The study's worker side (one cell, a rerun, the a* search, in spawned processes) and its driver loop."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from search.evidence.cells import ARM_TIER, ASTAR_ARMS, BACKFILL_TIER, TEACHERS, Cell, arm_of, plan, study_space
from search.evidence.report import PRF_KS, report


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

    root = Path(__file__).resolve().parents[2]
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


# a study epoch row: the epoch's metrics (netaug.records.epoch_metrics) the study has kept since it began, and
# step_s (the mean seconds of one training step)
EPOCH_ROW = ("epoch", "train_loss", "base_loss", "aug_loss", "distill_loss", "lr", "train_top1", "val_top1", "val_loss",
             "epoch_s")


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
    init = weights_digest(trainer.base_layers())
    epoch_rows: list[dict] = []
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        trainer.load_state_dict(state["trainer"])
        epoch_rows = state["epoch_rows"]
    subset = train_eval_subset(data, cfg.final.train_eval_size, cfg.data.split_seed)

    def on_epoch(result) -> None:
        m = result.metrics
        epoch_rows.append({**asdict(cell), **{k: m[k] for k in EPOCH_ROW}, "step_s": result.record.step_s})
        _atomic_torch({"trainer": trainer.state_dict(), "epoch_rows": epoch_rows}, ckpt)
        print(f"{ckpt.stem}: epoch {trainer.epoch}/{cell.schedule} train top-1 {m['train_top1']:.4f} "
              f"val top-1 {m['val_top1']:.4f} ({m['epoch_s']:.0f}s)", flush=True)

    trainer.run_epochs(on_epoch, evals=(("val", "val", "min"), ("train", subset, "min")))
    test = trainer.evaluate("test")["base"]
    last = epoch_rows[-1]
    shape = (data.in_channels, data.resolution, data.resolution)
    base_net = trainer.base_layers()
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

