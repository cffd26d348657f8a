"""Ablation: the base model trained in each mode x N seeds, equal epochs, on real data.

    python bench/ablation.py --dataset fashion-mnist --subset 6000 --epochs 5 --seeds 3

Writes results.parquet (one row per mode and seed; rewritten after every run, to a temporary name
then renamed, and runs already in it are skipped, so an interrupted ablation resumes) and prints a
mean ± std table per mode. Uses CUDA when present.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.tables import mean_std_table  # noqa: E402
from netaug.config import MODES, load_space  # noqa: E402
from netaug.errors import exit_on_user_error  # noqa: E402
from netaug.io import atomic_path  # noqa: E402
from netaug.metrics import precision_recall_f1_at_k  # noqa: E402

KS = (1, 3, 5)
METRICS = ["val_top1", "test_top1"] + [f"test_{m}_at_{k}" for k in KS for m in ("precision", "recall", "f1")]


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


def run_one(cfg, data, mode: str, seed: int) -> dict:
    from netaug.train import Trainer

    cfg.training.seed = seed
    trainer = Trainer(cfg, data, mode=mode)
    start = time.perf_counter()
    history = trainer.fit()
    train_s = time.perf_counter() - start
    val = trainer.evaluate("val")["base"]
    test = trainer.evaluate("test")["base"]
    steps = len(history) * trainer.steps_per_epoch
    row = {"mode": mode, "seed": seed, "epochs": len(history), "val_top1": val.top1, "test_top1": test.top1,
           "train_s": train_s, "mean_step_s": sum(r.epoch_s for r in history) / steps}
    for k in KS:
        scores = precision_recall_f1_at_k(test.topk, test.labels, k, data.num_classes, "macro")
        for name, value in scores.items():
            row[f"test_{name}_at_{k}"] = value
    return row


def summary(df: pd.DataFrame) -> pd.DataFrame:
    return mean_std_table(df, "mode", METRICS + ["train_s", "mean_step_s"], {"train_s": 1, "mean_step_s": 3})


@exit_on_user_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", help="data.name (digits, fashion-mnist, idx, ...)")
    p.add_argument("--root", default=None, help="data.root (fashion-mnist defaults to the Debian package path)")
    p.add_argument("--subset", type=int, default=6000, help="training images kept (val and test stay whole)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--space", default=None, help="a space file to start from (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="results.parquet")
    args = p.parse_args()

    overrides = [f"data.name={args.dataset}", f"data.subset={args.subset}", f"training.epochs={args.epochs}"]
    if args.root:
        overrides.append(f"data.root={args.root}")
    cfg = load_space(args.space, overrides + args.overrides)

    from netaug.data import load_data
    from netaug.train.runtime import configure_threads

    threads = configure_threads()
    data = load_data(cfg.data)
    out = Path(args.out)
    done = pd.read_parquet(out) if out.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    print(f"{data.name}: train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)} at {data.resolution}px, "
          f"{cfg.model.name}, {args.epochs} epochs, batch {cfg.training.batch_size}, r={cfg.netaug.r:g} "
          f"s={cfg.netaug.s}, alpha={cfg.netaug.aug_loss_weight:g}, lambda_kd={cfg.rkd.lambda_kd:g}, "
          f"{threads} threads", flush=True)
    for seed in range(args.seeds):
        for mode in args.modes:
            if any(r["mode"] == mode and r["seed"] == seed and r["epochs"] == args.epochs for r in rows):
                continue
            row = run_one(cfg, data, mode, seed)
            row.update(dataset=data.name, subset=len(data.train), resolution=data.resolution, r=cfg.netaug.r,
                       s=cfg.netaug.s)
            rows.append(row)
            write_parquet_atomic(pd.DataFrame(rows), out)
            print(f"{mode:>10} seed {seed}: val {row['val_top1']:.4f} test {row['test_top1']:.4f} "
                  f"R@1 {row['test_recall_at_1']:.4f} train {row['train_s']:.0f}s", flush=True)
    df = pd.DataFrame(rows)
    df = df[df["mode"].isin(args.modes)]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(summary(df).to_string())
    print(f"results -> {out}")


if __name__ == "__main__":
    main()
