"""The sweep's searcher (search/sweep_search.py), driven as Tune drives it (suggest, then on_trial_complete)
with real Optuna samplers and the run's journal file: a space conditional on the mode, and no configuration
trained twice."""

from __future__ import annotations

import json

import optuna
import pytest
from ray.tune.search import Searcher

from netaug.config import SWEPT_PARAMS, load_space, params_of_mode
from netaug.study import load_study
from search.sweep_search import MAX_REPEATS, SweepSearch
from search.sweep_stage import (
    distributions,
    exhausted_path,
    make_sampler,
    make_searcher,
    study_path,
    trial_space,
)

MODES = "sweep.mode=[baseline, netaug, netaug_rkd, reparam]"
FULL = [MODES, "sweep.reparam_k={choices: [0, 1]}", "sweep.aug_every={choices: [1, 2]}",
        "sweep.aug_fraction={low: 0.25, high: 1.0}", "sweep.share_fraction={low: 0.0, high: 0.5}"]


def objective(params: dict) -> float:
    """A made-up val_top1 that depends on the mode and on r."""
    return {"baseline": 0.80, "reparam": 0.79}.get(params.get("mode", "netaug"), 0.70 + 0.05 * params.get("r", 0.0))


def drive(searcher, n: int, prefix: str = "t") -> list[tuple[str, dict]]:
    """Tune's loop, one trial at a time: `n` suggestions, each completed with `objective` before the next."""
    done = []
    for i in range(n):
        tid = f"{prefix}{i:03d}"
        params = searcher.suggest(tid)
        if params == Searcher.FINISHED:
            break
        searcher.on_trial_complete(tid, {"val_top1": objective(params)})
        done.append((tid, params))
    return done


def test_each_mode_samples_only_the_parameters_it_reads(tmp_path):
    cfg = load_space(None, FULL + ["sweep.trials=40", "sweep.sampler=random"])
    ran = drive(make_searcher(cfg, tmp_path).searcher, 40)
    swept = set(distributions(cfg))
    assert swept == {"mode", "r", "s", "aug_loss_weight", "lambda_kd", "share_fraction", "aug_every", "aug_fraction",
                     "reparam_k"}
    modes = set()
    for _, params in ran:
        modes.add(params["mode"])
        assert set(params) == {"mode", *params_of_mode(params["mode"])} & swept
        # a trial's space applies what it sampled and keeps the space's values for the rest
        space = trial_space(cfg, params)
        assert space.training.mode == params["mode"]
        assert space.netaug.r == params.get("r", cfg.netaug.r)
        assert space.rkd.lambda_kd == params.get("lambda_kd", cfg.rkd.lambda_kd)
        assert space.reparam.k == params.get("reparam_k", cfg.reparam.k)
    assert modes == {"baseline", "netaug", "netaug_rkd", "reparam"}
    assert params_of_mode("baseline") == () and params_of_mode("reparam") == ("reparam_k",)
    assert set(params_of_mode("netaug_rkd")) == set(SWEPT_PARAMS) - {"mode", "reparam_k"}


def test_no_configuration_is_trained_twice(tmp_path):
    """Plain training is one point and reparam two: random draws repeat them often. Each repeat is told the
    first trial's result and drawn again, so 12 Tune trials are 12 different configurations."""
    cfg = load_space(None, FULL + ["sweep.trials=12", "sweep.sampler=random"])
    searcher = make_searcher(cfg, tmp_path).searcher
    ran = drive(searcher, 12)
    keys = [json.dumps(p, sort_keys=True) for _, p in ran]
    assert len(ran) == 12 and len(set(keys)) == 12
    assert sum(p["mode"] == "baseline" for _, p in ran) == 1 and sum(p["mode"] == "reparam" for _, p in ran) <= 2
    assert searcher.repeats > 0
    # the journal holds the Tune trials and the repeats, each repeat told the value its first trial got
    study = load_study(study_path(tmp_path))
    assert len(study.trials) == 12 + searcher.repeats
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        assert t.value == pytest.approx(objective(t.params))
    first = {json.dumps(t.params, sort_keys=True) for t in study.trials}
    assert first == set(keys)


def test_a_repeat_drawn_while_its_trial_runs_gets_that_result_later(tmp_path):
    """Only plain training swept: one configuration. The second suggestion repeats the first while it runs;
    the space is then exhausted (FINISHED), and the repeats are told the result once the first trial ends."""
    cfg = load_space(None, ["sweep.mode=[baseline]", "sweep.trials=4", "sweep.sampler=random"])
    searcher = make_searcher(cfg, tmp_path).searcher
    assert searcher.suggest("a") == {}  # nothing to sample: sweep.mode names one mode, which reads nothing
    assert searcher.suggest("b") == Searcher.FINISHED
    assert json.loads(exhausted_path(tmp_path).read_text()) == {"trials": 1, "repeats": MAX_REPEATS}
    study = load_study(study_path(tmp_path))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING] * (1 + MAX_REPEATS)
    searcher.on_trial_complete("a", {"val_top1": 0.81})
    study = load_study(study_path(tmp_path))
    assert [t.value for t in study.trials] == [0.81] * (1 + MAX_REPEATS)


def test_repeats_are_said_in_one_line_per_suggestion(tmp_path, capsys):
    cfg = load_space(None, ["sweep.mode=[baseline, reparam]", "sweep.reparam_k={choices: [1]}", "sweep.trials=4",
                            "sweep.sampler=random"])
    searcher = make_searcher(cfg, tmp_path).searcher
    drive(searcher, 4)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[sweep]")]
    assert len(lines) == 1 and lines[0].startswith("[sweep] Optuna drew 25 configuration(s) that trials already ran")
    assert '{"mode": "baseline"}' in lines[0] and lines[0].endswith("the sweep ends with 2 trial(s)")
    assert json.loads(exhausted_path(tmp_path).read_text())["trials"] == 2


def test_a_repeat_of_a_failed_trial_is_told_it_failed(tmp_path):
    cfg = load_space(None, ["sweep.mode=[baseline, reparam]", "sweep.reparam_k={choices: [1]}",
                            "sweep.trials=4", "sweep.sampler=random"])
    searcher = make_searcher(cfg, tmp_path).searcher
    first = searcher.suggest("a")
    searcher.on_trial_complete("a", None, error=True)
    second = searcher.suggest("b")
    assert second != first and searcher.suggest("c") == Searcher.FINISHED  # two points in all
    states = {json.dumps(t.params, sort_keys=True): set() for t in load_study(study_path(tmp_path)).trials}
    for t in load_study(study_path(tmp_path)).trials:
        states[json.dumps(t.params, sort_keys=True)].add(t.state.name)
    assert states[json.dumps(first, sort_keys=True)] == {"FAIL"}


@pytest.mark.parametrize(("trials", "startup", "expected"), [(12, None, 4), (3, None, 2), (60, None, 10),
                                                             (12, 7, 7)])
def test_startup_trials_default_to_a_third_of_the_sweep(trials, startup, expected):
    over = [f"sweep.trials={trials}"] + ([f"sweep.startup_trials={startup}"] if startup else [])
    sampler = make_sampler(load_space(None, over))
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == expected


def test_tpe_models_the_space_after_its_startup_trials(tmp_path):
    """With 4 random trials first, TPE then draws the NetAug trials toward the large r the objective rewards."""
    cfg = load_space(None, ["sweep.mode=[netaug]", "sweep.trials=16", "sweep.r={low: 1.0, high: 3.0}"])
    ran = drive(make_searcher(cfg, tmp_path).searcher, 16)
    r = [p["r"] for _, p in ran]
    assert sum(r[4:]) / 12 > sum(r[:4]) / 4 and sum(r[4:]) / 12 > 2.0


def test_the_searcher_survives_tunes_save_and_restore(tmp_path):
    cfg = load_space(None, FULL + ["sweep.trials=12", "sweep.sampler=random"])
    searcher = make_searcher(cfg, tmp_path).searcher
    ran = drive(searcher, 5)
    searcher.save(str(tmp_path / "searcher.pkl"))
    again = SweepSearch(space=searcher._space, metric="val_top1", mode="max", sampler=make_sampler(cfg))
    again.restore(str(tmp_path / "searcher.pkl"))
    rest = [p for _, p in drive(again, 7, prefix="u")]
    keys = [json.dumps(p, sort_keys=True) for p in [p for _, p in ran] + rest]
    assert len(keys) == 12 and len(set(keys)) == 12


def test_netaug_fixed_takes_the_best_netaug_trial_when_plain_training_wins(tmp_path):
    """A plain winner samples no r, s or alpha: netaug_fixed takes them from the best NetAug trial, and from the
    space's netaug section when no trial has them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from search.arms import arms_for, augmented_of, winner_of

    cfg = load_space(None, [MODES, "final.arms=[winner, netaug_fixed, baseline_equal]"])
    nothing = {"r": None, "s": None, "aug_loss_weight": None, "share_fraction": None, "reparam_k": None}
    rows = [{"trial_id": "a", "status": "TERMINATED", "val_top1": 0.90, "mode": "baseline", **nothing},
            {"trial_id": "b", "status": "STOPPED", "val_top1": 0.85, "mode": "netaug", **nothing,
             "r": 2.5, "s": 3, "aug_loss_weight": 0.5, "share_fraction": 0.2},
            {"trial_id": "c", "status": "TERMINATED", "val_top1": 0.88, "mode": "netaug_rkd", **nothing,
             "r": 1.5, "s": 2, "aug_loss_weight": 1.5},
            {"trial_id": "d", "status": "ERROR", "val_top1": 0.99, "mode": "netaug", **nothing,
             "r": 3.0, "s": 1, "aug_loss_weight": 1.0},
            {"trial_id": "e", "status": "TERMINATED", "val_top1": 0.89, "mode": "reparam", **nothing, "reparam_k": 1}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trials.parquet")
    winner, augmented = winner_of(tmp_path, cfg), augmented_of(tmp_path, cfg)
    assert winner["trial_id"] == "a" and augmented["trial_id"] == "c"  # d errored
    arms = {a.name: a for a in arms_for(cfg, winner, augmented)}
    assert arms["winner"].mode == "baseline" and arms["baseline_equal"].mode == "baseline"
    fixed = arms["netaug_fixed"]
    assert (fixed.mode, fixed.r, fixed.s, fixed.aug_loss_weight, fixed.share_fraction) == ("netaug", 1.5, 2, 1.5, None)
    assert fixed.description == "netaug, every layer at r=1.5 (r, s, alpha of the best NetAug trial)"
    fixed = {a.name: a for a in arms_for(cfg, winner, None)}["netaug_fixed"]
    assert (fixed.r, fixed.s, fixed.aug_loss_weight) == (cfg.netaug.r, cfg.netaug.s, cfg.netaug.aug_loss_weight)
    # a NetAug winner keeps its own parameters, as before
    fixed = {a.name: a for a in arms_for(cfg, rows[1], augmented)}["netaug_fixed"]
    assert (fixed.r, fixed.s, fixed.share_fraction, fixed.description) == (2.5, 3, 0.2, "netaug, every layer at r=2.5")


def test_the_winner_summary_and_report_name_one_best_trial_when_trials_tie(tmp_path):
    """Two trials with the same val top-1 (common on a small val set): the final stage's winner, the run's summary
    and the report's best trial are all the one that started first, whatever order the rows come in and whatever
    Tune's random ids say; an errored trial and a trial with no result yet (NaN) never win."""
    import math

    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis.load import load_run
    from netaug.records import best_trial
    from search.arms import winner_of
    from search.results import summary_lines

    cfg = load_space(None, [MODES])
    nothing = {"r": None, "s": None, "aug_loss_weight": None, "share_fraction": None, "reparam_k": None}
    rows = [{"trial_id": "1a", "started_at": 30.0, "status": "TERMINATED", "val_top1": 0.9, "val_loss": 0.3},
            {"trial_id": "0b", "started_at": 5.0, "status": "ERROR", "val_top1": 0.95, "val_loss": 0.1},
            {"trial_id": "0c", "started_at": 1.0, "status": "RUNNING", "val_top1": math.nan, "val_loss": math.nan},
            {"trial_id": "ff", "started_at": 20.0, "status": "STOPPED", "val_top1": 0.9, "val_loss": 0.3},
            {"trial_id": "00", "started_at": 10.0, "status": "TERMINATED", "val_top1": 0.8, "val_loss": 0.3}]
    rows = [{**nothing, "mode": "baseline", **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trials.parquet")
    assert winner_of(tmp_path, cfg)["trial_id"] == "ff"
    assert summary_lines(rows, "val_top1")[1].startswith("best trial ff (STOPPED)")
    assert load_run(tmp_path).best_trial()["trial_id"] == "ff"
    # by val loss the three-way tie at 0.3 goes to the first started of the three; no start time: the lowest id
    assert best_trial(rows, "val_loss")["trial_id"] == "00"
    unstarted = [{**r, "started_at": None} for r in rows]
    assert best_trial(unstarted, "val_top1")["trial_id"] == "1a"
    assert best_trial(unstarted, "val_loss")["trial_id"] == "00"
    assert best_trial(rows[1:3], "val_top1") is None and best_trial([], "val_loss") is None


def test_a_flat_sweeps_trials_record_only_what_their_mode_read(tmp_path):
    """A sweep started before the space was conditional on mode drew every parameter for every trial (cell A's):
    trials.parquet, the study file and the final arms keep only what each trial's mode read, so a plain trial's
    r never becomes netaug_fixed's r and lambda_kd is no importance of a NetAug trial."""
    from types import SimpleNamespace

    import pandas as pd

    from search.arms import arms_for, augmented_of, winner_of
    from search.results import write_results
    from search.sweep_stage import distributions, record_study, study_path

    cfg = load_space(None, [MODES, "final.arms=[winner, netaug_fixed]", "compute.unit=epochs", "sweep.epochs=2"])
    flat = {"r": 2.0, "s": 2, "aug_loss_weight": 0.5, "lambda_kd": 1.5, "share_fraction": 0.25, "aug_every": 2,
            "aug_fraction": 0.5, "reparam_k": 1}
    drawn = [("baseline", 0.91, 2.5), ("netaug", 0.90, 1.9), ("netaug_rkd", 0.89, 2.1), ("reparam", 0.85, 2.2)]
    grid = []
    for i, (mode, val, r) in enumerate(drawn):
        frame = pd.DataFrame({"epoch": [1, 2], "val_top1": [val - 0.1, val], "started_at": [100.0 + i, 100.0 + i]})
        grid.append(SimpleNamespace(
            config={**flat, "r": r, "mode": mode}, error=None, metrics_dataframe=frame,
            metrics={"trial_id": f"t{i}", "epoch": 2, "epochs_planned": 2, "val_top1": val, "mode": mode},
            path=str(tmp_path / "sweep" / f"sweep_trial_t{i}_{i + 1}_mode={mode}")))
    _, trials = write_results(grid, tmp_path, 2, "netaug")
    got = {t["mode"]: {k: t[k] for k in SWEPT_PARAMS if k != "mode" and t[k] is not None} for t in trials}
    assert got == {"baseline": {}, "reparam": {"reparam_k": 1},
                   "netaug": {**{k: v for k, v in flat.items() if k not in ("lambda_kd", "reparam_k")}, "r": 1.9},
                   "netaug_rkd": {**{k: v for k, v in flat.items() if k != "reparam_k"}, "r": 2.1}}
    assert all(set(v) <= set(params_of_mode(m)) for m, v in got.items())
    winner, augmented = winner_of(tmp_path, cfg), augmented_of(tmp_path, cfg)
    assert winner["mode"] == "baseline" and augmented["mode"] == "netaug" and augmented["r"] == 1.9
    fixed = {a.name: a for a in arms_for(cfg, winner, augmented)}["netaug_fixed"]
    assert (fixed.r, fixed.s, fixed.aug_loss_weight) == (1.9, 2, 0.5)
    # the study: one Optuna trial per Tune trial, each with the parameters its mode read and nothing else
    assert record_study(grid, cfg, tmp_path) == 4
    study = {t.params["mode"]: set(t.params) for t in load_study(study_path(tmp_path)).trials}
    swept = set(distributions(cfg))  # the study holds what the space sweeps
    assert study == {m: (set(params_of_mode(m)) | {"mode"}) & swept for m, _, _ in drawn}
    assert study["netaug"] == {"mode", "r", "s", "aug_loss_weight"} and study["reparam"] == {"mode"}


def test_a_trials_setup_round_trips_with_numpy_numbers_and_its_path(tmp_path):
    """sweep/setup/<trial>.json: a* back as the path's tuples, the plan's numbers as JSON numbers (numpy ones
    too: a plan holds what numpy computed), written to a temporary name and renamed; absent: None."""
    import numpy as np

    from search.sweep_stage import read_setup, setup_path, write_setup

    path = ((1.0, 1.8, 2.6), (1.0, 2.2))
    plan = {"unit": "seconds", "budget": 80.0, "cost_width": np.float64(1.25), "epochs_planned": np.int64(61)}
    assert read_setup(tmp_path, "t1") is None
    write_setup(tmp_path, "t1", {"largest": path, "search_s": 12.5, "plan": plan})
    assert [p.name for p in setup_path(tmp_path, "t1").parent.iterdir()] == ["t1.json"]  # no temporary left
    got = read_setup(tmp_path, "t1")
    assert got["largest"] == path and got["search_s"] == 12.5
    assert got["plan"] == {"unit": "seconds", "budget": 80.0, "cost_width": 1.25, "epochs_planned": 61}
    assert type(got["plan"]["epochs_planned"]) is int
    write_setup(tmp_path, "t2", {"largest": None, "search_s": 0.0, "plan": plan})  # plain training: no a*
    assert read_setup(tmp_path, "t2")["largest"] is None


@pytest.mark.parametrize(("over", "stages"), [
    (["sweep.mode=[baseline, reparam]"], ("sweep", "final")),  # nothing augments: no a* to search
    (["sweep.mode=[baseline, netaug]"], ("supernet", "search", "sweep", "final")),
    (["sweep.mode=[baseline, netaug]", "sweep.largest=fixed"], ("sweep", "final"))])
def test_the_supernet_runs_only_when_a_swept_mode_searches_its_a_star(over, stages):
    import argparse

    from search.run import stages_of

    cfg = load_space(None, over)
    assert cfg.sweep.searches_largest() == ("supernet" in stages)
    assert stages_of(argparse.Namespace(stage="all"), cfg) == stages
