"""Data-parallel trials in the tiny pipeline: every stage's trial on 2 Ray Train workers (gloo, CPU).

Supernet, sweep (ASHA on) and final trials each launch a TorchTrainer of 2 workers from their Tune
trial; the Parquet results, the early-stopped trials' test predictions (from the Train checkpoints)
and the delivered model must come out as with 1 worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import TINY_PIPELINE

from netaug.config import load_space
from netaug.train.export import load_exported
from search.final_stage import run_final_stage
from search.results import write_results
from search.supernet_stage import latest_checkpoint, run_supernet
from search.sweep_stage import finalize_stopped, run_sweep

# 2 workers x 0.9 CPU (+ 0.01 for the Tune trial that drives them) fit the 2 CPUs of CI.
TINY = TINY_PIPELINE + [
    "supernet.workers=2", "supernet.resources.cpu=0.9",
    "sweep.workers=2", "sweep.resources.cpu=0.9", "sweep.concurrency=1", "sweep.trials=2", "sweep.epochs=2",
    "sweep.mode=[netaug]",  # NetAug+RKD on 2 gloo workers: tests/test_data_parallel.py
    "sweep.scheduler=asha", "sweep.grace_period=1", "sweep.reduction_factor=2", "sweep.sampler=random",
    "sweep.metric=val_loss",  # after 1 epoch at 8 px both trials tie on val top-1; val loss lets ASHA stop the second
    "final.workers=2", "final.resources.cpu=0.9", "final.seeds=1", "final.arms=[winner]",  # one Train run: the winner
    "deploy.int8=false",  # int8 has its own tests
    # a sampler seed whose second trial has the clearly worse epoch-1 val loss with optuna 5.1 (2.353 vs 2.222),
    # so that ASHA's stop and the stopped trial's scoring from its Train checkpoint are exercised; the test
    # itself checks ASHA's rule against the recorded losses, so another sampler version cannot break it
    "sweep.seed=4"]


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    # With the dashboard: Ray Train's placement-group cleaner asks its State API whether the Train run of a
    # trial that Tune stopped (ASHA, or the last epoch) is gone, and frees the workers' resources then.
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False, configure_logging=False)
    run_dir = tmp_path_factory.mktemp("dp")
    cfg = load_space(None, TINY)
    try:
        run_supernet(cfg, run_dir)
        # (the search stage is skipped: it reports on the supernet; each sweep trial searches its own a*)
        grid = run_sweep(cfg, run_dir)
        write_results(grid, run_dir, cfg.sweep.epochs, cfg.sweep.modes()[0], finalize_stopped(grid, cfg))
        lines = run_final_stage(cfg, run_dir)
    finally:
        ray.shutdown()
    return cfg, run_dir, grid, lines


def test_supernet_trained_on_two_workers_and_its_checkpoint_is_found(dp_run):
    _, run_dir, _, _ = dp_run
    checkpoint, metrics = latest_checkpoint(run_dir)
    assert metrics["workers"] == 2 and metrics["epoch"] == 1
    assert Path(checkpoint.path).is_relative_to(run_dir / "supernet" / "train")  # Train's storage


def test_two_worker_sweep_trials_report_to_tune_and_asha(dp_run):
    cfg, run_dir, grid, _ = dp_run
    assert len(grid) == 2 and grid.num_errors == 0
    assert all(r.metrics["workers"] == 2 for r in grid)
    trials = pd.read_parquet(run_dir / "trials.parquet").sort_values("started_at", ignore_index=True)
    assert trials["test_top1"].notna().all()
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    first = epochs[(epochs["stage"] == "sweep") & (epochs["epoch"] == 1)].set_index("trial_id")["val_loss"]
    # ASHA's rule at its one rung (epoch 1; concurrency 1, so trials reach it in order): a trial stops iff its
    # -val loss is below the (1 - 1/rf) quantile of the -val losses that reached the rung, its own included
    quantile = (1 - 1 / cfg.sweep.reduction_factor) * 100
    for k, trial in trials.iterrows():
        seen = -first[trials["trial_id"][: k + 1]].to_numpy()
        stops = bool(-first[trial["trial_id"]] < np.nanpercentile(seen, quantile))
        assert (trial["status"], trial["epochs_run"]) == (("STOPPED", 1) if stops else ("TERMINATED", 2)), k
    # every trial's predictions are there, also the stopped one's (evaluated from its Train checkpoint)
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert set(trials["trial_id"]) <= set(preds["trial_id"])
    assert set(epochs[epochs["stage"] == "sweep"]["trial_id"]) == set(trials["trial_id"])


def test_a_stopped_trial_is_scored_once_and_read_back_on_a_resume(dp_run):
    """finalize_stopped again (as a resumed run calls it): the stopped trial's metrics come
    back from sweep/late/<trial>.json, equal to its row in trials.parquet, and nothing is evaluated or written
    again (without Ray running: an evaluation would need it)."""
    from search.sweep_stage import late_path, predictions_fragment

    cfg, run_dir, grid, _ = dp_run
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    stopped = trials.index[trials["status"] == "STOPPED"].tolist()
    assert stopped and not ray.is_initialized()
    files = [f(run_dir, tid) for tid in stopped for f in (late_path, predictions_fragment)]
    before = [f.stat().st_mtime_ns for f in files]
    again = finalize_stopped(grid, cfg)
    assert sorted(again) == sorted(stopped) and [f.stat().st_mtime_ns for f in files] == before
    for tid, metrics in again.items():
        for key in ("test_top1", "test_f1_at_1", "test_precision_at_3", "aug_test_top1"):
            assert metrics[key] == trials.loc[tid, key], (tid, key)


def test_two_worker_final_trials_deliver_the_model(dp_run):
    cfg, run_dir, _, lines = dp_run
    final = pd.read_parquet(run_dir / "final.parquet")
    assert final["arm"].tolist() == ["winner"] and (final["status"] == "TERMINATED").all()
    assert (final["epochs"] == cfg.final.epochs).all() and final["test_top1"].notna().all()
    for row in final.itertuples():
        model, payload = load_exported(run_dir / row.model_file)
        assert payload["arm"] == row.arm
    assert any(line.startswith("delivered:") for line in lines)
