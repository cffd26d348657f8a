"""Small table helpers shared by the analysis scripts and bench/."""

from __future__ import annotations

import pandas as pd


def mean_std_table(df: pd.DataFrame, by: str, cols: list[str], digits: dict[str, int] | None = None) -> pd.DataFrame:
    """`mean ± std` (sample std, 0 for a single row) of `cols` per value of `by`, with a count column n."""
    grouped = df.groupby(by, sort=False)[cols]
    mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    table = mean.copy().astype(object)
    for c in cols:
        d = (digits or {}).get(c, 4)
        table[c] = [f"{m:.{d}f} ± {s:.{d}f}" for m, s in zip(mean[c], std[c])]
    table.insert(0, "n", grouped.size())
    return table
