"""Read a run directory into pandas, also while it is still running or after it was copied elsewhere.

The driver writes trials/epochs/predictions.parquet at the end of a sweep (and final.parquet at the
end of the final stage); before that, the same data is read from what has landed: each trial's Tune
result log (`sweep/*/result.json`, `final/*/result.json`) and its fragments
(`sweep/predictions/*.parquet`, `final/predictions/*.parquet`, `sweep/archs/*.parquet`). Only
relative paths are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from netaug.config import SWEPT_PARAMS, params_of_mode
from netaug.errors import UserError
from netaug.records import (
    EPOCH_METRICS,
    EPOCHS_SCHEMA,
    FINAL_SCHEMA,
    RENAMED,
    TRIALS_SCHEMA,
    best_trial,
    current_names,
)


@dataclass
class Run:
    path: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    predictions: pd.DataFrame
    archs: pd.DataFrame
    space: dict
    complete: bool  # the driver has written trials.parquet
    final: pd.DataFrame  # one row per final arm x seed (final.parquet, or what has landed of the final stage)
    model: dict | None = None  # final/model.json: the delivered model

    def swept(self) -> list[str]:
        """Swept parameters that vary in this run."""
        return [c for c in SWEPT_PARAMS if c in self.trials and self.trials[c].nunique(dropna=True) > 1]

    def best_trial(self) -> pd.Series | None:
        """The sweep's best trial by the one rule the final stage picks its winner by (records.best_trial)."""
        metric = self.space.get("sweep", {}).get("metric", "val_top1")
        if metric not in self.trials:
            return None
        rows = self.trials.to_dict("records")
        best = best_trial([{**r, "_row": i} for i, r in enumerate(rows)], metric)
        return None if best is None else self.trials.iloc[best["_row"]]


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _reports(result_json: Path) -> list[dict]:
    rows = []
    for line in result_json.read_text().splitlines():
        try:
            rows.append(current_names(json.loads(line)))  # a run written before the renaming: today's names
        except json.JSONDecodeError:  # a line being written right now
            break
    return rows


def _first_start(reports: list[dict]) -> float | None:
    starts = [r["started_at"] for r in reports if r.get("started_at") is not None]
    return min(starts) if starts else None  # the first attempt's start, as trials.parquet records it


def _from_result_logs(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) rebuilt from the trials' Tune result logs: a run still in progress.

    The columns are trials.parquet's and epochs.parquet's (netaug/records.py); a trial's report carries
    the same names, so only what the driver adds (status, error, the trial's parameters) is filled in here.
    """
    trials, epochs = [], []
    for log in sorted((run_dir / "sweep").glob("*/result.json")):
        reports = [r for r in _reports(log) if "epoch" in r]
        if not reports:
            continue
        last = reports[-1]
        config = last.get("config", {})
        tid = last.get("trial_id", log.parent.name)
        row = {k: last.get(k) for k in TRIALS_SCHEMA.names}
        row.update({k: config.get(k) for k in SWEPT_PARAMS}, trial_id=tid, error=None,
                   status="TERMINATED" if last.get("done") or last.get("test_top1") is not None else "RUNNING",
                   mode=config.get("mode") or last.get("mode"), arch=None if last.get("arch") == "null" else
                   last.get("arch"), epochs_run=last["epoch"], wall_s=last.get("time_total_s"),
                   started_at=_first_start(reports))
        trials.append(row)
        seen = {}
        for r in reports:
            seen[r["epoch"]] = r
        for epoch, r in sorted(seen.items()):
            epochs.append({"trial_id": tid, "stage": "sweep", "arm": None, "seed": None, "epoch": epoch,
                           **{k: r.get(k) for k in EPOCH_METRICS}})
    return (pd.DataFrame(trials, columns=TRIALS_SCHEMA.names) if trials else pd.DataFrame(),
            pd.DataFrame(epochs, columns=EPOCHS_SCHEMA.names) if epochs else pd.DataFrame())


def _final_from_result_logs(run_dir: Path) -> pd.DataFrame:
    """One row per final trial (final.parquet's columns) from its Tune result log: a final stage still running."""
    rows = []
    for log in sorted((run_dir / "final").glob("*/result.json")):
        reports = [r for r in _reports(log) if "epoch" in r and "arm" in r]
        if not reports:
            continue
        last = reports[-1]
        arm = (last.get("config", {}).get("arms") or {}).get(last["arm"], {})
        row = {k: last.get(k) for k in FINAL_SCHEMA.names}
        row.update({k: arm[k] for k in ("r", "s", "aug_loss_weight", "lambda_kd", "share_fraction", "description")
                    if k in arm})
        row.update(arm=last["arm"], mode=arm.get("mode") or last.get("mode"), epochs=last["epoch"],
                   status="TERMINATED" if last.get("test_top1") is not None else "RUNNING",
                   trial_id=last.get("trial_id", log.parent.name), wall_s=last.get("time_total_s"))
        rows.append(row)
    return pd.DataFrame(rows, columns=FINAL_SCHEMA.names) if rows else pd.DataFrame()


def _as_read(trials: pd.DataFrame) -> pd.DataFrame:
    """trials with each row's swept parameters that its mode did not read blanked (as netaug.config.read_params
    does): a sweep run before the space was conditional on mode recorded every parameter for every mode."""
    if trials.empty or "mode" not in trials:
        return trials
    trials = trials.copy()
    for col in (c for c in SWEPT_PARAMS if c != "mode" and c in trials):
        unread = [isinstance(m, str) and col not in params_of_mode(m) for m in trials["mode"]]
        if any(unread):
            trials[col] = trials[col].astype(object).where(~pd.Series(unread, index=trials.index), None)
    return trials


def load_run(run_dir: str | Path) -> Run:
    """Everything that has landed in `run_dir`; a missing or empty run directory is a UserError."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"RUN_DIR: no such directory: {run_dir}")
    space = {}
    if (path / "space.json").is_file():
        try:
            space = json.loads((path / "space.json").read_text())
        except json.JSONDecodeError:
            raise UserError(f"{path / 'space.json'}: not valid JSON") from None
    complete = (path / "trials.parquet").is_file()
    if complete:
        trials = read_parquet(path / "trials.parquet")
        epochs = read_parquet(path / "epochs.parquet") if (path / "epochs.parquet").is_file() else pd.DataFrame()
        epochs = epochs.rename(columns={old: new for old, new in RENAMED.items() if new not in epochs})
    else:
        trials, epochs = _from_result_logs(path)
    trials = _as_read(trials)
    if (path / "predictions.parquet").is_file():
        predictions = read_parquet(path / "predictions.parquet")
    else:
        fragments = [*sorted((path / "sweep" / "predictions").glob("*.parquet")),
                     *sorted((path / "final" / "predictions").glob("*.parquet"))]
        predictions = _concat([read_parquet(f) for f in fragments])
    archs = _concat(([read_parquet(path / "archs.parquet")] if (path / "archs.parquet").is_file() else [])
                    + ([] if complete else
                       [read_parquet(f) for f in sorted((path / "sweep" / "archs").glob("*.parquet"))]))
    if not len(archs) == 0 and {"search_id", "candidate_id"} <= set(archs):
        archs = archs.drop_duplicates(["search_id", "candidate_id"]).reset_index(drop=True)
    final = (read_parquet(path / "final.parquet") if (path / "final.parquet").is_file()
             else _final_from_result_logs(path))
    model = None
    if (path / "final" / "model.json").is_file():
        try:
            model = json.loads((path / "final" / "model.json").read_text())
        except json.JSONDecodeError:
            raise UserError(f"{path / 'final' / 'model.json'}: not valid JSON") from None
    if trials.empty and predictions.empty and archs.empty and final.empty:
        raise UserError(f"RUN_DIR: {run_dir} holds no results yet (no trials.parquet, sweep/*/result.json, "
                        "predictions or archs)")
    return Run(path, trials, epochs, predictions, archs, space, complete, final, model)
