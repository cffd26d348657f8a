"""`python analysis/compare.py RUN_DIR [RUN_DIR ...]`: a side-by-side table of several runs.

For a sweep run: trials, the best trial (by the sweep's metric), its parameters, the most important
hyperparameter (Optuna's fANOVA on the run's study), val and test top-1 and test
precision/recall/F1@1; then one row per final arm (mean ± std over seeds, and the paired difference
in test top-1 against baseline with its interval and p-value). For bench/ablation.py's
results.parquet (a file, or a folder holding one): mean ± std over seeds per mode. Works on runs in
progress and on copied run directories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from netaug.config import SWEPT_PARAMS  # noqa: E402
from netaug.errors import UserError, exit_on_user_error  # noqa: E402

ABLATION_METRICS = ("val_top1", "test_top1", "test_precision_at_1", "test_recall_at_1", "test_f1_at_1")


def ablation_rows(path: Path) -> list[dict]:
    from analysis.load import read_parquet

    df = read_parquet(path)
    if not {"mode", "seed"} <= set(df.columns):
        raise UserError(f"{path}: not an ablation results file (needs mode and seed columns)")
    from analysis.tables import mean_std_table

    table = mean_std_table(df, "mode", [m for m in ABLATION_METRICS if m in df])
    return [{"run": f"{path.parent.name}/{path.name}", "kind": "ablation", "what": mode, **row}
            for mode, row in table.to_dict("index").items()]


def final_rows(path: Path, run) -> list[dict]:
    """One row per final arm: mean ± std over seeds, and the paired difference against baseline."""
    from analysis.tables import mean_std_table
    from netaug.stats import arm_comparisons, format_points

    final = run.final
    if final.empty:
        return []
    if "status" in final:
        final = final[final["status"] == "TERMINATED"]
    final = final.dropna(subset=["test_top1"])
    if final.empty:
        return []
    metrics = [m for m in ("train_top1", *ABLATION_METRICS) if m in final]
    table = mean_std_table(final, "arm", metrics)
    confidence = run.space.get("final", {}).get("confidence", 0.95)
    diffs = {c.arm: c for c in arm_comparisons(final.to_dict("records"), "test_top1", "baseline", confidence)}
    rows = []
    for arm, row in table.to_dict("index").items():
        desc = final.loc[final["arm"] == arm, "description"].iloc[0] if "description" in final else arm
        out = {"run": f"{path.parent.name}/{path.name}", "kind": "final", "what": f"{arm} ({desc})", **row}
        if arm in diffs:
            c = diffs[arm]
            r = c.result
            interval = "" if np.isnan(r.low) else f" [{format_points(r.low)}, {format_points(r.high)}]"
            holm = f" (Holm {c.holm_p:.3g})" if c.family > 1 and not np.isnan(c.holm_p) else ""
            out["test_top1_vs_baseline"] = (f"{format_points(r.mean)} pts{interval}"
                                            + ("" if np.isnan(r.p_value) else f", p = {r.p_value:.3g}{holm}"))
        rows.append(out)
    return rows


def most_important(run) -> str:
    """The sweep's most important hyperparameter by Optuna's fANOVA on the run's study, with its share."""
    from netaug.study import STUDY_FILE, importances, load_study

    found, note = importances(load_study(run.path / "sweep" / STUDY_FILE))
    if found is None:
        return f"({note})" if (run.path / "sweep" / STUDY_FILE).exists() else "(no study file)"
    top = next(iter(found))
    return f"{top} ({found[top]:.2f})"


def sweep_row(path: Path, run=None) -> dict:
    from analysis.load import load_run

    run = run if run is not None else load_run(path)
    best = run.best_trial()
    row = {"run": f"{path.parent.name}/{path.name}", "kind": "sweep" if run.complete else "sweep (in progress)",
           "n": len(run.trials)}
    if best is None:
        return {**row, "what": "no finished trial"}
    params = ", ".join(f"{k}={best[k]:.3g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                       for k in SWEPT_PARAMS if k in best and pd.notna(best[k]))
    row["what"] = f"best {best['trial_id']}: {params}"
    row["most_important"] = most_important(run)
    for m in ABLATION_METRICS:
        if m in best and pd.notna(best[m]):
            row[m] = f"{best[m]:.4f}"
    return row


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python analysis/compare.py", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or ablation results.parquet files")
    args = p.parse_args(argv)
    rows = []
    for arg in args.runs:
        path = Path(arg)
        if path.is_file() and path.suffix == ".parquet":
            rows += ablation_rows(path)
        elif (path.is_dir() and (path / "results.parquet").is_file() and not (path / "trials.parquet").exists()
              and not (path / "sweep").is_dir()):
            rows += ablation_rows(path / "results.parquet")
        elif path.is_dir():
            from analysis.load import load_run

            run = load_run(path)
            if not run.trials.empty:
                rows.append(sweep_row(path, run))
            rows += final_rows(path, run)
        else:
            raise UserError(f"RUN_DIR: no such run directory or results file: {arg}")
    table = pd.DataFrame(rows).fillna("")
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
