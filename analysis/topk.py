"""`python analysis/topk.py RUN_DIR [--k 1 3 5] [--split test] [--average macro|micro|none]`

Recomputes precision@k, recall@k and F1@k from predictions.parquet, per trial and model (the base
and the augmented sub-models "aug:<id>"), prints a table and writes RUN_DIR/topk.parquet. The
metric is netaug.metrics.precision_recall_f1_at_k, the one the trials use (torchmetrics 1.9
semantics). With --average none there is one row per class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from netaug.errors import UserError, exit_on_user_error  # noqa: E402


def num_classes_of(predictions: pd.DataFrame) -> int:
    """Classes seen in labels or predictions (classes never seen add nothing to macro or micro scores)."""
    top = max((int(np.max(t)) for t in predictions["topk"] if len(t)), default=0)
    return int(max(predictions["label"].max(), top)) + 1


def topk_table(predictions: pd.DataFrame, ks: list[int], split: str = "test", average: str = "macro") -> pd.DataFrame:
    """One row per (trial, model, k) — or per class too with average "none"."""
    from netaug.metrics import precision_recall_f1_at_k

    rows = []
    part = predictions[predictions["split"] == split]
    if part.empty:
        raise UserError(f"--split: no predictions for split '{split}' "
                        f"(present: {', '.join(sorted(predictions['split'].unique())) or 'none'})")
    num_classes = num_classes_of(predictions)
    for (trial, model), group in part.groupby(["trial_id", "model"], sort=True):
        group = group.sort_values("sample_index")
        topk = np.stack(group["topk"].to_numpy()).astype(np.int64)
        labels = group["label"].to_numpy().astype(np.int64)
        for k in ks:
            if k > topk.shape[1]:
                raise UserError(f"--k: {k} exceeds the stored top-K ({topk.shape[1]})")
            scores = precision_recall_f1_at_k(topk, labels, k, num_classes, average)
            base = {"trial_id": trial, "model": model, "split": split, "k": k, "average": average,
                    "n": len(labels)}
            if average == "none":
                for c in range(num_classes):
                    rows.append({**base, "class": c, **{m: float(v[c]) for m, v in scores.items()}})
            else:
                rows.append({**base, **{m: float(v) for m, v in scores.items()}})
    return pd.DataFrame(rows)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python analysis/topk.py", description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--average", default="macro", choices=("macro", "micro", "none"))
    args = p.parse_args(argv)
    if any(k < 1 for k in args.k):
        raise UserError("--k: every k must be >= 1")

    from analysis.load import load_run
    from netaug.io import write_parquet

    run = load_run(args.run_dir)
    if run.predictions.empty:
        raise UserError(f"RUN_DIR: no predictions in {args.run_dir} yet (predictions.parquet or sweep/predictions/)")
    table = topk_table(run.predictions, sorted(set(args.k)), args.split, args.average)
    write_parquet(table, Path(args.run_dir) / "topk.parquet")
    shown = table.copy()
    for col in ("precision", "recall", "f1"):
        shown[col] = shown[col].map(lambda v: f"{v:.4f}")
    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(shown.drop(columns=["average", "split"]).to_string(index=False))
    print(f"\n{args.average} precision/recall/F1@k on {args.split}; "
          f"{'complete run' if run.complete else 'run in progress: what has landed'}; "
          f"-> {Path(args.run_dir) / 'topk.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
