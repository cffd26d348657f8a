"""The sweep stage with a real local Ray, Optuna and pyarrow: Parquet schemas and values, errored trials."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from conftest import TINY_PIPELINE
from torchmetrics.functional.classification import multiclass_precision

from netaug.config import load_space
from netaug.metrics import precision_recall_f1_at_k
from netaug.records import EPOCHS_SCHEMA, PREDICTIONS_SCHEMA, TRIALS_SCHEMA
from netaug.train.calibrate import plan_epochs, with_epochs
from netaug.train.cost import PhaseCost
from search.archs import SCHEMA as ARCHS_SCHEMA
from search.results import write_results
from search.sweep_stage import FAULT_ENV, finalize_stopped, read_setup, run_sweep, trial_space

TINY = TINY_PIPELINE + ["sweep.concurrency=2", "sweep.sampler=random"]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_the_sweep_writes_four_parquet_files_that_agree(pipeline_run):
    """On the shared run (conftest.SHARED_RUN): 3 trials at a budget of 5 plain epochs, modes netaug and
    netaug_rkd."""
    cfg_shared, run_dir, _ = pipeline_run
    paths = {name: run_dir / name for name in ("trials.parquet", "epochs.parquet", "predictions.parquet",
                                               "archs.parquet")}
    trials = pd.read_parquet(paths["trials.parquet"])
    epochs = pd.read_parquet(paths["epochs.parquet"])
    preds = pd.read_parquet(paths["predictions.parquet"])
    archs = pd.read_parquet(paths["archs.parquet"])
    assert list(trials.columns) == TRIALS_SCHEMA.names and list(epochs.columns) == EPOCHS_SCHEMA.names
    assert list(preds.columns) == PREDICTIONS_SCHEMA.names and list(archs.columns) == ARCHS_SCHEMA.names
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all() and trials["error"].isna().all()
    metric_cols = ["val_top1", "test_top1", "base_macs", "aug_macs", "wall_s"] + [
        f"test_{m}_at_{k}" for m in ("precision", "recall", "f1") for k in (1, 3, 5)]
    assert trials[metric_cols].notna().all().all()
    assert trials["mode"].isin(["netaug", "netaug_rkd"]).all()
    assert trials["r"].between(1.2, 2).all() and trials["s"].isin([1, 2]).all()
    # each trial trained what sweep.budget (5 plain epochs) buys at its own calibrated cost
    assert (trials["unit"] == "seconds").all() and (trials["budget"] == 5).all() and (trials["cost_width"] > 1).all()
    assert (trials["epochs_run"] == trials["epochs_planned"]).all()
    for t in trials.itertuples():
        cfg = with_epochs(trial_space(cfg_shared, {k: getattr(t, k) for k in ("r", "s", "aug_loss_weight",
                                                                               "lambda_kd", "mode")}), 1)
        assert t.epochs_planned == plan_epochs(cfg, PhaseCost(t.cost_width, t.cost_min_w), 5.0)
    epochs = epochs[epochs.stage == "sweep"]
    assert sorted(epochs.groupby("trial_id")["epoch"].apply(list).tolist()) == sorted(
        list(range(1, n + 1)) for n in trials["epochs_planned"])
    assert epochs[["train_loss", "base_loss", "aug_loss", "distill_loss", "val_top1", "lr"]].notna().all().all()
    # both cost units per epoch, cumulative: they grow every epoch, and the trial's row holds the last epoch's
    for tid, group in epochs.groupby("trial_id"):
        group = group.sort_values("epoch")
        for key in ("compute", "train_s", "train_flops"):
            assert (group[key].diff().dropna() > 0).all() and group[key].iloc[0] > 0
            assert trials.set_index("trial_id").loc[tid, key] == group[key].iloc[-1]
    rkd = epochs.trial_id.isin(trials[trials["mode"] == "netaug_rkd"]["trial_id"])  # only NetAug+RKD distils
    assert (epochs[rkd]["distill_loss"] > 0).all() and (epochs[~rkd]["distill_loss"] == 0).all()

    for trial in trials.itertuples():
        # a* of the trial is the chosen path of its own search, on its own (r, s) grid
        own = archs[archs["search_id"] == f"sweep-{trial.trial_id}"]
        assert own["chosen"].sum() == 1 and json.loads(own[own["chosen"]]["arch"].iloc[0]) == json.loads(trial.arch)
        assert np.allclose(own["r"], trial.r) and (own["s"] == trial.s).all()
        assert trial.base_macs < trial.aug_macs <= trial.macs_limit * trial.base_macs  # a* under its swept limit
        assert 2.0 <= trial.macs_limit <= 4.0
        # what a resume before its first epoch reuses: the same a* and the same plan
        setup = read_setup(run_dir, trial.trial_id)
        assert json.loads(json.dumps(setup["largest"])) == json.loads(own[own["chosen"]]["arch"].iloc[0])
        assert setup["plan"]["epochs_planned"] == trial.epochs_planned
        assert (setup["plan"]["cost_width"], setup["search_s"]) == (trial.cost_width, trial.search_s)
        # the final val top-1 reported to Tune is the last epoch's
        last = (epochs.trial_id == trial.trial_id) & (epochs.epoch == trial.epochs_planned)
        assert trial.val_top1 == epochs[last]["val_top1"].item()
        # test metrics recomputed from predictions.parquet equal the trial's row
        test = preds[(preds.trial_id == trial.trial_id) & (preds.model == "base") & (preds.split == "test")]
        topk = np.stack(test["topk"].to_numpy())
        labels = test["label"].to_numpy()
        assert (test["sample_index"].to_numpy() == np.arange(len(test))).all()
        assert trial.test_top1 == pytest.approx(float((topk[:, 0] == labels).mean()), abs=1e-12)
        for k in (1, 3, 5):
            ours = precision_recall_f1_at_k(topk, labels, k, 10, "macro")
            assert getattr(trial, f"test_precision_at_{k}") == pytest.approx(ours["precision"], abs=1e-9)
            assert getattr(trial, f"test_recall_at_{k}") == pytest.approx(ours["recall"], abs=1e-9)
        # and agree with torchmetrics at k = 1 on probabilities rebuilt from the top-K
        probs = np.zeros((len(test), 10), dtype=np.float32)
        np.put_along_axis(probs, topk, np.stack(test["topk_prob"].to_numpy()), axis=1)
        tm = multiclass_precision(torch.from_numpy(probs), torch.from_numpy(labels.copy()), 10, average="macro",
                                  top_k=1)
        assert trial.test_precision_at_1 == pytest.approx(float(tm), abs=1e-6)
        models = set(preds[preds.trial_id == trial.trial_id]["model"])
        assert models == {"base", f"aug:{own[own['chosen']]['candidate_id'].iloc[0]}"}
    # every trial wrote its TensorBoard events into the storage path
    for tid in trials["trial_id"]:
        assert list((run_dir / "sweep" / "tb" / tid).glob("events.out.tfevents.*"))


def test_a_failing_trial_is_recorded_as_errored_while_the_other_finishes(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "0")
    cfg = load_space(None, TINY + ["sweep.trials=2", "sweep.epochs=1", "sweep.largest=fixed",
                                   "sweep.max_failures=1"])
    grid = run_sweep(cfg, tmp_path)
    paths, _ = write_results(grid, tmp_path, cfg.sweep.epochs, "netaug_rkd", finalize_stopped(grid, cfg))
    trials = pd.read_parquet(paths["trials.parquet"])
    assert len(trials) == 2 and trials["trial_id"].is_unique
    errored = trials[trials["status"] == "ERROR"]
    assert len(errored) == 1 and "injected failure" in errored["error"].item()
    assert errored["test_top1"].isna().all()
    ok = trials[trials["status"] == "TERMINATED"]
    assert len(ok) == 1 and ok["test_top1"].notna().all() and ok["error"].isna().all()
    assert ok["arch"].notna().all()  # fixed: every layer at r
    assert set(pd.read_parquet(paths["predictions.parquet"])["trial_id"]) == set(ok["trial_id"])


def test_a_trial_that_fails_after_its_setup_resumes_with_the_same_plan(ray_local, tmp_path, monkeypatch):
    """A trial stopped between measuring its cost and its first checkpoint (here: an injected failure right after
    sweep/setup/<trial>.json is written, and Tune's retry) resumes with the plan it measured: the same epochs and
    the same calibration, not measured again."""
    from search.sweep_stage import setup_path

    monkeypatch.setenv(FAULT_ENV, "0@setup")
    cfg = load_space(None, TINY + ["sweep.trials=1", "sweep.largest=fixed", "sweep.max_failures=1",
                                   "sweep.mode=[netaug]", "compute.unit=seconds", "sweep.budget=3",
                                   "compute.calibration_steps=2"])
    grid = run_sweep(cfg, tmp_path)
    (result,) = list(grid)
    assert result.error is None
    tid = result.metrics["trial_id"]
    assert setup_path(tmp_path, tid).with_suffix(".failed").exists()  # the first attempt failed after its setup
    setup = read_setup(tmp_path, tid)
    assert setup["largest"] is None and setup["search_s"] == 0.0
    for key in ("epochs_planned", "cost_width", "cost_min_w", "calibration_s", "plain_step_s"):
        assert result.metrics[key] == setup["plan"][key], key  # measured once: a second measurement would differ
    assert result.metrics["epoch"] == setup["plan"]["epochs_planned"]


def test_a_sweep_over_reparam_trains_and_records_its_k(ray_local, tmp_path):
    """Mode reparam in the sweep, reparam.k swept: each trial trains the branched model (no a*, no augmented
    loss), reports its k, and a wider k costs more FLOPs per epoch than the same steps of plain training."""
    from netaug.train.cost import BACKWARD_FACTOR, FlopCounter
    from netaug.train.trainer import Trainer, build_base

    cfg = load_space(None, TINY + ["sweep.trials=2", "sweep.epochs=1", "sweep.largest=fixed", "compute.unit=epochs",
                                   "sweep.mode=[reparam]", "sweep.reparam_k={choices: [0, 2]}"])
    grid = run_sweep(cfg, tmp_path)
    paths, _ = write_results(grid, tmp_path, cfg.sweep.epochs, "reparam", finalize_stopped(grid, cfg))
    trials = pd.read_parquet(paths["trials.parquet"])
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all() and (trials["mode"] == "reparam").all()
    assert trials["reparam_k"].isin([0, 2]).all() and trials["arch"].isna().all() and trials["test_top1"].notna().all()
    epochs = pd.read_parquet(paths["epochs.parquet"])
    assert (epochs["aug_loss"] == 0).all() and (epochs["distill_loss"] == 0).all()
    for t in trials.itertuples():  # the FLOPs of one epoch: the branched model's, counted independently here
        space = trial_space(cfg, {"r": t.r, "s": t.s, "aug_loss_weight": t.aug_loss_weight, "lambda_kd": t.lambda_kd,
                                  "mode": "reparam", "reparam_k": t.reparam_k})
        trainer = Trainer(space, load_data_for(space))
        shape = (trainer.data.in_channels, trainer.data.resolution, trainer.data.resolution)
        per_image = FlopCounter(trainer.model, shape).forward_flops()
        plain = FlopCounter(build_base(space, trainer.data), shape).forward_flops()
        images = trainer.steps_per_epoch * trainer.global_batch
        assert t.train_flops == per_image * images * BACKWARD_FACTOR and per_image > plain
        if t.reparam_k == 2:  # two more copies of every conv: at least twice the plain model's conv FLOPs more
            assert per_image > 2.5 * plain


def load_data_for(space):
    from netaug.data import load_data

    return load_data(space.data)


def test_summary_ranks_and_prints_by_the_sweep_metric():
    """With sweep.metric=val_loss the best trial is the lowest val loss (not the best top-1), and its line shows it."""
    from search.results import summary_lines

    base = {"status": "TERMINATED", "base_macs": None, "test_top1": None, "arch": None}
    trials = [{**base, "trial_id": "a", "val_top1": 0.90, "val_loss": 0.40},
              {**base, "trial_id": "b", "val_top1": 0.85, "val_loss": 0.30},
              {**base, "trial_id": "c", "status": "ERROR", "val_top1": None, "val_loss": None}]
    by_loss = summary_lines(trials, "val_loss")
    assert by_loss[0] == "trials: 3 (2 finished, 0 stopped early, 1 errored)"
    assert by_loss[1].startswith("best trial b (TERMINATED)")
    assert by_loss[3] == "  val top-1 0.8500 | val loss 0.3000 (ranked by val_loss, min)"
    by_top1 = summary_lines(trials, "val_top1")
    assert by_top1[1].startswith("best trial a (TERMINATED)")
    assert by_top1[3] == "  val top-1 0.9000 | val loss 0.4000 (ranked by val_top1, max)"


def test_the_study_file_lists_trials_in_the_order_tune_made_them():
    """Tune names a trial's folder `<stage>_trial_<random id>_<n>_...`: the study (and so fANOVA's importances) is
    written in the order n, which a rerun with the same seeds repeats, not in the random ids' order."""
    from types import SimpleNamespace

    from search.trials import trial_number

    names = ["sweep_trial_ebc04d9e_2_aug_loss_weight=0.95", "sweep_trial_6278be53_10_r=2.35",
             "sweep_trial_e9540e4f_1_s=2", "final_trial_3abcd_00004_5_arm=baseline"]
    results = [SimpleNamespace(path=f"/runs/x/sweep/{n}") for n in names]
    assert [trial_number(r) for r in results] == [2, 10, 1, 5]
    assert trial_number(SimpleNamespace(path="/runs/x/elsewhere")) == 0


def test_the_sweep_never_trains_a_configuration_twice(ray_local, tmp_path, capfd):
    """Plain training and reparam at one k are two configurations in all: of 5 trials asked for, Tune trains
    each once, the repeats Optuna drew are told their first trial's result, and the sweep ends early."""
    from netaug.study import load_study
    from search.sweep_stage import exhausted_path, record_study, study_path

    cfg = load_space(None, TINY + ["sweep.trials=5", "sweep.epochs=1", "sweep.largest=fixed", "compute.unit=epochs",
                                   "sweep.mode=[baseline, reparam]", "sweep.reparam_k={choices: [1]}"])
    grid = run_sweep(cfg, tmp_path)
    configs = sorted((r.config["mode"], r.config.get("reparam_k")) for r in grid)
    assert configs == [("baseline", None), ("reparam", 1)] and all(r.error is None for r in grid)
    out = capfd.readouterr().out
    assert "configuration(s) that trials already ran" in out and "the sweep ends with 2 trial(s)" in out
    assert json.loads(exhausted_path(tmp_path).read_text())["trials"] == 2  # run.py: the sweep is complete
    live = load_study(study_path(tmp_path))  # as Tune's searcher left it: the repeats too, each told a value
    value = {r.config["mode"]: r.metrics["val_top1"] for r in grid}
    assert len(live.trials) > 2 and all(t.value == value[t.params["mode"]] for t in live.trials)
    assert record_study(grid, cfg, tmp_path) == 2  # the study file keeps one Optuna trial per Tune trial
