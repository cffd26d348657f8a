"""analysis/: metrics@k against torchmetrics, the report on a tiny real run, runs in progress, bad RUN_DIRs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_precision, multiclass_recall

from netaug.study import STUDY_FILE, TrialRecord, load_study, write_study

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


topk_cli, report_cli, compare_cli = _load("topk"), _load("report"), _load("compare")

@pytest.fixture(scope="module")
def tiny_run(pipeline_run):
    """The shared four-stage run (conftest.SHARED_RUN: modes netaug and netaug_rkd, 3 sweep trials)."""
    return pipeline_run[1]


def _torchmetrics(topk: np.ndarray, probs: np.ndarray, labels: np.ndarray, k: int, average: str, n: int) -> dict:
    scores = np.zeros((len(labels), n), dtype=np.float32)
    np.put_along_axis(scores, topk, probs, axis=1)
    preds, target = torch.from_numpy(scores), torch.from_numpy(labels.astype(np.int64))
    kw = {"num_classes": n, "average": average, "top_k": k}
    return {"precision": multiclass_precision(preds, target, **kw).numpy(),
            "recall": multiclass_recall(preds, target, **kw).numpy(),
            "f1": multiclass_f1_score(preds, target, **kw).numpy()}


@pytest.mark.parametrize("average", ["macro", "micro", "none"])
def test_topk_equals_torchmetrics_on_the_runs_predictions(tiny_run, capsys, average):
    assert topk_cli.main([str(tiny_run), "--k", "1", "3", "5", "--average", average]) == 0
    assert "precision" in capsys.readouterr().out
    table = pd.read_parquet(tiny_run / "topk.parquet")
    preds = pd.read_parquet(tiny_run / "predictions.parquet")
    test = preds[preds.split == "test"]
    assert len(table) == test.groupby(["trial_id", "model"]).ngroups * 3 * (10 if average == "none" else 1)
    for (trial, model), group in test.groupby(["trial_id", "model"]):
        group = group.sort_values("sample_index")
        topk, labels = np.stack(group["topk"].to_numpy()), group["label"].to_numpy()
        probs = np.stack(group["topk_prob"].to_numpy())
        for k in (1, 3, 5):
            ref = _torchmetrics(topk, probs, labels, k, average, 10)
            ours = table[(table.trial_id == trial) & (table.model == model) & (table.k == k)]
            if average == "none":
                ours = ours.sort_values("class")
            for name in ("precision", "recall", "f1"):
                np.testing.assert_allclose(ours[name].to_numpy(), np.atleast_1d(ref[name]), atol=1e-6)


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8000


def test_report_makes_every_plot_and_names_the_best_trial(tiny_run, capsys):
    out = tiny_run / "report"
    out.mkdir(exist_ok=True)  # an earlier report's importance plots, which this one does not draw: removed
    for stale in ("param_importance.png", "param_importance_rung.png"):
        (out / stale).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(9000))
    assert report_cli.main([str(tiny_run)]) == 0
    expected = ["val_top1_per_epoch.png", "best_so_far.png", "params_vs_metric.png",
                "spos_macs_vs_accuracy.png", "precision_recall_at_k.png", "per_class_recall.png"]
    for name in expected:
        assert _png_ok(out / name), name
    text = (out / "report.md").read_text()
    # three trials are too few for importances, and the report says so (test below: enough trials)
    assert not (out / "param_importance.png").exists() and not (out / "param_importance_rung.png").exists()
    assert ("Hyperparameter importance: needs at least 4 finished trials; 3 finished (from the run's study "
            "sweep/optuna.journal).") in text
    assert "first rung" not in text  # sweep.scheduler: none, so no rung to value the trials at
    trials = pd.read_parquet(tiny_run / "trials.parquet")
    best = trials.sort_values(["val_top1", "started_at", "trial_id"], ascending=[False, True, True]).iloc[0]["trial_id"]
    assert f"**Best trial: {best}**" in text and f"best trial {best}" in capsys.readouterr().out
    assert all(f"({name})" in text for name in expected)
    assert "## Modes compared" in text and "netaug_rkd" in text and "| netaug |" in text
    # the final stage's answer comes first, with its figure
    assert text.index("## Did NetAug help here?") < text.index("## Best trial")
    assert "winner (" in text and "vs baseline: test top-1" in text and "Answer:" in text
    assert "**In short**" in text and text.index("**In short**") < text.index("Answer:")  # each answer, up front
    assert _png_ok(out / "final_arms.png") and "(final_arms.png)" in text
    assert "### The delivered model" in text
    # precision, recall and F1 at 1 and 3 per arm: the seeds' mean of final.parquet's columns
    final = pd.read_parquet(tiny_run / "final.parquet")
    cols = [f"test_{m}_at_{k}" for k in (1, 3) for m in ("precision", "recall", "f1")]
    assert "| arm | " + " | ".join(cols) + " |" in text
    for arm, part in final.groupby("arm"):
        assert "| " + " | ".join([arm, *(f"{part[c].mean():.4g}" for c in cols)]) + " |" in text
    if final["int8_test_top1"].notna().any():
        assert "help at int8? (int8 models, paired by seed" in text


def test_report_and_compare_name_the_most_important_hyperparameter_of_the_study(tiny_run, tmp_path, capsys):
    """With enough finished trials in the run's study file, the report plots Optuna's importances
    and compare names the first; here a study whose metric follows r alone."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    study = load_study(run / "sweep" / STUDY_FILE)
    assert len(study.trials) == 3  # the sweep wrote one Optuna trial per Tune trial
    dists = study.trials[0].distributions
    rng = np.random.default_rng(0)
    records = []
    for i in range(10):
        params = {name: (float(d.low + (d.high - d.low) * rng.random()) if isinstance(d, FloatDistribution)
                         else int(rng.integers(d.low, d.high + 1)) if isinstance(d, IntDistribution)
                         else d.choices[i % len(d.choices)])
                  for name, d in dists.items() if name != "lambda_kd"}  # all NetAug trials: no teacher
        params["mode"] = "netaug"
        records.append(TrialRecord(f"x{i}", params, 0.5 + 0.1 * params["r"], {}, "COMPLETE"))
    write_study(run / "sweep" / STUDY_FILE, records, dists, "maximize")
    assert report_cli.main([str(run)]) == 0
    text = (run / "report" / "report.md").read_text()
    assert _png_ok(run / "report" / "param_importance.png") and "(param_importance.png)" in text
    assert "fANOVA on 10 finished trials, from the run's study sweep/optuna.journal; most important: r (" in text
    capsys.readouterr()
    assert compare_cli.main([str(run)]) == 0
    assert "r (0." in capsys.readouterr().out


def test_compare_lists_the_final_arms_with_the_paired_difference(tiny_run, capsys):
    assert compare_cli.main([str(tiny_run)]) == 0
    table = capsys.readouterr().out
    final = pd.read_parquet(tiny_run / "final.parquet")
    for arm in final["arm"].unique():
        assert f"{arm} (" in table
    assert table.count(" final ") == final["arm"].nunique() and "pts" in table


def test_scripts_read_a_run_in_progress_copied_elsewhere(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copied"
    shutil.copytree(tiny_run, copy)
    for name in ("trials.parquet", "epochs.parquet", "predictions.parquet", "topk.parquet", "final.parquet"):
        (copy / name).unlink(missing_ok=True)
    shutil.rmtree(copy / "report", ignore_errors=True)
    assert topk_cli.main([str(copy), "--k", "1"]) == 0
    landed = pd.read_parquet(copy / "topk.parquet")
    full = topk_cli.topk_table(pd.read_parquet(tiny_run / "predictions.parquet"), [1])
    pd.testing.assert_frame_equal(landed.sort_values(["trial_id", "model"]).reset_index(drop=True),
                                  full.sort_values(["trial_id", "model"]).reset_index(drop=True))
    assert "run in progress" in capsys.readouterr().out
    assert report_cli.main([str(copy)]) == 0
    text = (copy / "report" / "report.md").read_text()
    assert "Run in progress" in text and "**Best trial:" in text
    assert "## Did NetAug help here?" in text and "still running" in text  # final rows from Tune's result logs
    assert set(full["model"]) >= {m for m in full["model"] if m.startswith("final:")} and any(
        m.startswith("final:") for m in landed["model"])
    capsys.readouterr()
    assert compare_cli.main([str(tiny_run), str(copy)]) == 0
    table = capsys.readouterr().out
    assert "sweep (in progress)" in table and table.count("best ") == 2


def test_a_run_in_progress_reads_as_the_same_tables_as_the_finished_run(tiny_run, tmp_path):
    """analysis/load.py rebuilds trials, final and sweep epochs from Tune's result logs with the Parquet files'
    columns (netaug/records.py) and, for trials that have finished, their values."""
    from analysis.load import load_run
    from netaug.records import EPOCH_METRICS, FINAL_SCHEMA, TRIALS_SCHEMA

    copy = tmp_path / "copied"
    shutil.copytree(tiny_run, copy)
    for name in ("trials.parquet", "epochs.parquet", "predictions.parquet", "final.parquet"):
        (copy / name).unlink()
    full, part = load_run(tiny_run), load_run(copy)
    assert full.complete and not part.complete
    assert list(part.trials.columns) == list(full.trials.columns) == TRIALS_SCHEMA.names
    assert list(part.final.columns) == list(full.final.columns) == FINAL_SCHEMA.names
    assert list(part.epochs.columns) == list(full.epochs.columns)

    def same(a: pd.DataFrame, b: pd.DataFrame, key: list[str], columns: list[str]) -> None:
        a, b = a.set_index(key).sort_index(), b.set_index(key).sort_index()
        assert list(a.index) == list(b.index)
        for c in columns:
            x, y = a[c].tolist(), b[c].tolist()
            assert all((pd.isna(p) and pd.isna(q)) or p == q for p, q in zip(x, y)), (c, x, y)

    same(full.trials, part.trials, ["trial_id"], [c for c in TRIALS_SCHEMA.names if c != "trial_id"])
    same(full.final, part.final, ["arm", "seed"], [c for c in FINAL_SCHEMA.names if c not in ("arm", "seed")])
    sweep_epochs = full.epochs[full.epochs["stage"] == "sweep"]
    same(sweep_epochs, part.epochs, ["trial_id", "epoch"], list(EPOCH_METRICS))
    assert part.trials["val_loss"].notna().all() and part.final["val_loss"].notna().all()


def test_a_run_written_before_the_metric_renaming_loads_under_todays_names(tiny_run, tmp_path):
    """Runs on disk from before 2026-12-06 say rkd_loss (today distill_loss) in epochs.parquet and in the
    trials' result logs: both load under today's names with the same values."""
    import json

    import pyarrow.parquet as pq

    from analysis.load import load_run

    today = load_run(tiny_run).epochs
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    table = pq.read_table(old / "epochs.parquet").drop_columns(["teacher_loss"])
    table = table.rename_columns(["rkd_loss" if c == "distill_loss" else c for c in table.column_names])
    pq.write_table(table, old / "epochs.parquet")
    loaded = load_run(old).epochs
    assert "rkd_loss" not in loaded and loaded["distill_loss"].tolist() == today["distill_loss"].tolist()
    for log in (old / "sweep").glob("*/result.json"):  # the result logs of a run in progress
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        log.write_text("".join(json.dumps({("rkd_loss" if k == "distill_loss" else k): v for k, v in r.items()})
                               + "\n" for r in lines))
    (old / "trials.parquet").unlink()
    in_progress = load_run(old).epochs.set_index(["trial_id", "epoch"]).sort_index()
    sweep = today[today["stage"] == "sweep"].set_index(["trial_id", "epoch"]).sort_index()
    assert in_progress["distill_loss"].tolist() == sweep["distill_loss"].tolist()


@pytest.mark.parametrize("script", ["topk", "report", "compare"])
def test_bad_run_dir_exits_2_with_one_line(tmp_path, script):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "trials.parquet").write_bytes(b"not parquet")
    for target, needle in ((tmp_path / "missing", "missing"), (empty, "no results"), (broken, "trials.parquet")):
        proc = subprocess.run([sys.executable, str(ROOT / "analysis" / f"{script}.py"), str(target)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (script, target, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_in_short_puts_each_answer_first_equal_compute_leading():
    """On cell A's committed final stage (studies/equal-compute): one bullet per question that netaug.stats
    answers, its "Answer:" sentence verbatim, ordered equal compute, equal epochs, then the same two at int8."""
    from analysis.report import in_short
    from netaug.stats import answer_lines

    final = pd.read_parquet(Path(__file__).parents[1] / "studies" / "equal-compute" / "cell-a" / "final.parquet")
    rows = final[final["status"] == "TERMINATED"].to_dict("records")
    answers = answer_lines(rows, 0.95) + answer_lines(rows, 0.95, "int8_test_top1", int8=True)
    titles = [line for line in answers if line.startswith("At equal")]
    sentences = [line.removeprefix("Answer: ") for line in answers if line.startswith("Answer:")]
    assert [t.split(" (")[0] for t in titles] == ["At equal epochs", "At equal compute"] * 2  # netaug.stats' order
    assert in_short(answers) == [f"- At equal compute: {sentences[1]}", f"- At equal epochs: {sentences[0]}",
                                 f"- At equal compute, at int8: {sentences[3]}",
                                 f"- At equal epochs, at int8: {sentences[2]}"]


def test_a_committed_run_without_its_predictions_still_gets_its_report(tmp_path):
    """A study's committed run folder keeps its Parquet files but not the 24 MB predictions.parquet
    (studies/equal-compute/cell-b): the report is written, says which plots need the predictions, and leads
    with the final stage's answers."""
    import shutil

    run = tmp_path / "cell-b"
    shutil.copytree(Path(__file__).parents[1] / "studies" / "equal-compute" / "cell-b", run)
    assert not (run / "predictions.parquet").exists()
    assert report_cli.main([str(run)]) == 0
    text = (run / "report" / "report.md").read_text()
    assert "this run folder holds no predictions" in text and "**In short**" in text
    assert "- At equal compute: not shown. No arm differs significantly" in text
    assert not (run / "report" / "per_class_recall.png").exists() and _png_ok(run / "report" / "compute.png")
