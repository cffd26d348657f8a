"""The run's Parquet files, built from Tune's results and the trials' fragments in the storage path.

trials.parquet (one row per sweep trial), epochs.parquet (one row per trial and epoch),
predictions.parquet (per-sample top-K of the base and a*, val and test), archs.parquet (SPOS).
Each is written to a temporary name and renamed, so readers never see half a file.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from netaug.config import SWEPT_PARAMS, read_params
from netaug.io import write_parquet
from netaug.records import (
    COST_KEYS,
    EPOCH_METRICS,
    EPOCHS_SCHEMA,
    KS,
    PREDICTIONS_SCHEMA,
    TEST_METRICS,
    TRIALS_SCHEMA,
    best_trial,
    current_names,
)
from search.archs import ARCHS_FILE
from search.archs import SCHEMA as ARCHS_SCHEMA
from search.sweep_stage import EXPERIMENT
from search.trials import error_text, trial_id_of

FILES = ("trials.parquet", "epochs.parquet", "predictions.parquet", ARCHS_FILE)


def cost_of(metrics: dict) -> dict:
    """The cost columns (netaug.records.COST_COLUMNS) of a trial's last report; nulls where it has none."""
    out = {}
    for key in COST_KEYS:
        value = metrics.get(key)
        out[key] = None if value is None or (isinstance(value, float) and value != value) else value
    if out["epochs_planned"] is not None:
        out["epochs_planned"] = int(out["epochs_planned"])
    return out


def epoch_row(trial_id: str, stage: str, report: dict, arm: str | None = None, seed: int | None = None) -> dict:
    """One epochs.parquet row from a trial's per-epoch report (metrics it did not report are null)."""
    def number(value):
        return None if value is None or value != value else float(value)  # NaN (not reported) -> null

    report = current_names(report)  # a trial reported before the renaming (resumed across it)
    return {"trial_id": trial_id, "stage": stage, "arm": arm, "seed": seed, "epoch": int(report["epoch"]),
            **{k: number(report.get(k)) for k in EPOCH_METRICS}}


def epoch_rows_of(df, trial_id: str, stage: str, arm: str | None = None, seed: int | None = None) -> list[dict]:
    """epochs.parquet rows from a trial's metrics dataframe: one per epoch, the last report of a retried one."""
    if df is None or not len(df) or "epoch" not in df:
        return []
    df = df.dropna(subset=["epoch"]).drop_duplicates(subset=["epoch"], keep="last").sort_values("epoch")
    return [epoch_row(trial_id, stage, rec, arm, seed) for rec in df.to_dict("records")]


def trial_rows(grid, epochs: int, default_mode: str, extra: dict[str, dict] | None = None
               ) -> tuple[list[dict], list[dict]]:
    """(trials rows, epochs rows) from a Tune ResultGrid; `extra` adds the late evaluation of stopped trials."""
    trials, epoch_rows = [], []
    for result in grid:
        m = dict(result.metrics or {})
        tid = trial_id_of(result)
        m.update((extra or {}).get(tid, {}))
        config = result.config or {}
        run = int(m.get("epoch", 0) or 0)
        planned = m.get("epochs_planned")
        planned = int(planned) if planned is not None and planned == planned else epochs
        status = "ERROR" if result.error is not None else "TERMINATED" if run >= planned else "STOPPED"
        row = {"trial_id": tid, "status": status, "error": error_text(result.error),
               **{k: config.get(k) for k in SWEPT_PARAMS}, "arch": m.get("arch"), "base_macs": m.get("base_macs"),
               "aug_macs": m.get("aug_macs"), "epochs_run": run, "val_top1": m.get("val_top1"),
               "val_loss": m.get("val_loss"), "test_top1": m.get("test_top1"), **{k: m.get(k) for k in TEST_METRICS},
               "aug_test_top1": m.get("aug_test_top1"), "search_s": m.get("search_s"),
               "step_s": m.get("step_s"), "wall_s": m.get("time_total_s"), **cost_of(m)}
        row["mode"] = row["mode"] or m.get("mode") or default_mode
        row.update(read_params({k: row[k] for k in SWEPT_PARAMS}, row["mode"]))  # what the trial trained with
        if row["arch"] == "null":
            row["arch"] = None
        df = result.metrics_dataframe
        if df is not None and "started_at" in df and df["started_at"].notna().any():
            row["started_at"] = float(df["started_at"].min())  # the first attempt's start
        trials.append(row)
        epoch_rows += epoch_rows_of(df, tid, "sweep")
    trials.sort(key=lambda r: (r.get("started_at") is None, r.get("started_at") or 0, r["trial_id"]))
    return trials, epoch_rows


def merge_archs(run_dir: Path) -> None:
    """archs.parquet = the search stage's rows plus every sweep trial's search (once each)."""
    tables = []
    main = run_dir / ARCHS_FILE
    if main.exists():
        tables.append(pq.read_table(main, schema=ARCHS_SCHEMA))
    for f in sorted((run_dir / EXPERIMENT / "archs").glob("*.parquet")):
        tables.append(pq.read_table(f, schema=ARCHS_SCHEMA))
    if not tables:
        return
    table = pa.concat_tables(tables)
    seen, keep = set(), []
    for i, (sid, cid) in enumerate(zip(table["search_id"].to_pylist(), table["candidate_id"].to_pylist())):
        if (sid, cid) not in seen:
            seen.add((sid, cid))
            keep.append(i)
    write_parquet(table.take(keep), main)


def write_results(grid, run_dir: Path, epochs: int, default_mode: str, extra: dict[str, dict] | None = None
                  ) -> tuple[dict[str, Path], list[dict]]:
    """Write the four Parquet files; returns their paths and the trials rows."""
    trials, epoch_rows = trial_rows(grid, epochs, default_mode, extra)
    paths = {name: run_dir / name for name in FILES}
    write_parquet(pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA), paths["trials.parquet"])
    write_parquet(pa.Table.from_pylist(epoch_rows, schema=EPOCHS_SCHEMA), paths["epochs.parquet"])
    ids = {t["trial_id"] for t in trials}
    fragments = [pq.read_table(f, schema=PREDICTIONS_SCHEMA)
                 for f in sorted((run_dir / EXPERIMENT / "predictions").glob("*.parquet")) if f.stem in ids]
    predictions = pa.concat_tables(fragments) if fragments else PREDICTIONS_SCHEMA.empty_table()
    write_parquet(predictions, paths["predictions.parquet"])
    merge_archs(run_dir)
    return paths, trials


def summary_lines(trials: list[dict], metric: str) -> list[str]:
    """The end-of-run summary: the best trial (records.best_trial, the final stage's winner), its parameters and
    test metrics."""
    errored = sum(t["status"] == "ERROR" for t in trials)
    lines = [f"trials: {len(trials)} ({sum(t['status'] == 'TERMINATED' for t in trials)} finished, "
             f"{sum(t['status'] == 'STOPPED' for t in trials)} stopped early, {errored} errored)"]
    best = best_trial(trials, metric)
    if best is None:
        return lines + ["no trial produced a result"]
    params = ", ".join(f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                       for k in SWEPT_PARAMS if best.get(k) is not None)
    lines.append(f"best trial {best['trial_id']} ({best['status']}): {params}")
    if best.get("compute") is not None and best.get("unit"):
        lines.append(f"  trained {best['epochs_run']} epochs = {best['compute']:.1f} plain epochs of compute "
                     f"({best['unit']}; budget {best['budget']:g}), one epoch = {best['cost_width']:.2f} plain epochs; "
                     f"{best['train_s']:.0f} s of training steps, {best['train_flops'] / 1e12:.3g} TFLOP")
    lines.append(f"  base MACs {best['base_macs'] / 1e6:.2f}M, largest augmented (a*) {best['aug_macs'] / 1e6:.2f}M"
                 if best.get("base_macs") else "  (no MACs recorded)")
    val = [f"val top-1 {best['val_top1']:.4f}"] if best.get("val_top1") is not None else []
    if best.get("val_loss") is not None:
        val.append(f"val loss {best['val_loss']:.4f}")
    if best.get("test_top1") is not None:
        val.append(f"test top-1 {best['test_top1']:.4f}")
    lines.append(f"  {' | '.join(val)} (ranked by {metric}, {'min' if metric == 'val_loss' else 'max'})")
    if best.get("test_top1") is not None:
        header = "  k  precision@k  recall@k  F1@k  (macro, test)"
        lines.append(header)
        for k in KS:
            lines.append(f"  {k}  {best[f'test_precision_at_{k}']:11.4f}  {best[f'test_recall_at_{k}']:8.4f}"
                         f"  {best[f'test_f1_at_{k}']:.4f}")
    if best.get("arch"):
        lines.append(f"  a* = {best['arch']}")
    return lines
