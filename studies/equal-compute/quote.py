"""Print what docs/results/equal-compute.md quotes for one cell, from its committed final.parquet: the
answer block (fp32 and int8, the lines tests/test_findings.py recomputes), the per-arm table,
precision/recall/F1 at 1 and 3 per arm, and the sweep's importances (over the trials that ran their whole
budget, and over every trial at ASHA's first rung; from the committed sweep/optuna.journal).

    python studies/equal-compute/quote.py studies/equal-compute/cell-b
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's netaug and analysis

from netaug.stats import answer_lines  # noqa: E402

RANKED = [f"test_{m}_at_{k}" for k in (1, 3) for m in ("precision", "recall", "f1")]


def finished(path: Path) -> pd.DataFrame:
    f = pd.read_parquet(path)
    return f[f.status == "TERMINATED"].dropna(subset=["test_top1"])


def answer_block(ok: pd.DataFrame, source: str) -> list[str]:
    rows = ok.to_dict("records")
    lines = answer_lines(rows, 0.95)
    if "int8_test_top1" in ok:
        lines += [x for x in answer_lines(rows, 0.95, "int8_test_top1", int8=True) if not x.startswith("no paired")]
    return [f"<!-- answers: {source} -->", "```text", *lines, "```"]


def arm_table(ok: pd.DataFrame) -> list[str]:
    g = ok.groupby("arm", sort=False)
    int8 = g.int8_test_top1.mean() if "int8_test_top1" in ok else pd.Series(float("nan"), index=list(g.groups))
    out = ["| arm | mode | seeds | epochs | compute (plain epochs) | training s (median) | train top-1 | val top-1 "
           "| test top-1 | int8 test top-1 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, part in g:
        out.append(f"| {arm} | {part['mode'].iloc[0]} | {len(part)} | {part.epochs.median():g} | "
                   f"{part.compute.mean():.1f} | {part.train_s.median():.0f} | {part.train_top1.mean():.4f} | "
                   f"{part.val_top1.mean():.4f} ± {part.val_top1.std():.4f} | "
                   f"{part.test_top1.mean():.4f} ± {part.test_top1.std():.4f} | {int8[arm]:.4f} |")
    return out


def ranked_table(ok: pd.DataFrame) -> list[str]:
    means = ok.groupby("arm", sort=False)[RANKED].mean()
    out = ["| arm | P@1 | R@1 | F1@1 | P@3 | R@3 | F1@3 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    return out + [f"| {arm} | " + " | ".join(f"{r[c]:.4f}" for c in RANKED) + " |" for arm, r in means.iterrows()]


def importance_lines(cell: Path) -> list[str]:
    from analysis.load import load_run
    from analysis.report import first_rung, sweep_study
    from netaug.study import importances, revalued

    run = load_run(cell)
    study, source = sweep_study(run, "val_top1")
    found, note = importances(study)
    lines = [f"Importances ({source}): " + (note if found is None else
                                             f"{note}: " + ", ".join(f"`{k}` {v:.3f}" for k, v in found.items()))]
    rung = first_rung(run, "val_top1") if study is not None else None
    if rung is not None:
        found, note = importances(revalued(study, rung[0]), noun="trials")
        lines.append(f"At ASHA's first rung ({rung[1]}): " + (note if found is None else f"{note}: " + ", ".join(
            f"`{k}` {v:.3f}" for k, v in found.items())))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cell", type=Path, help="a cell's folder, holding final.parquet")
    args = parser.parse_args(argv)
    path = args.cell / "final.parquet"
    if not path.is_file():
        print(f"{path}: no such file (the cell's final stage has not finished)", file=sys.stderr)
        return 2
    ok = finished(path)
    if ok.empty:
        print(f"{path}: no finished final trial", file=sys.stderr)
        return 2
    print("\n".join([*answer_block(ok, path.as_posix()), "", *arm_table(ok), "", *ranked_table(ok), "",
                     *importance_lines(args.cell)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
