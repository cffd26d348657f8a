"""The sweep's Optuna study file: rewritten with exactly the given trials, and importances that find
the parameter the metric depends on."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from netaug.study import (
    TrialRecord,
    first_rung_of,
    importances,
    load_study,
    most_important_line,
    rung_line,
    write_study,
)

DISTS = {"r": optuna.distributions.FloatDistribution(1.0, 3.0),
         "aug_loss_weight": optuna.distributions.FloatDistribution(0.25, 2.0, log=True),
         "s": optuna.distributions.IntDistribution(1, 3)}


def records(n: int, seed: int = 0) -> list[TrialRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        params = {"r": float(rng.uniform(1, 3)), "aug_loss_weight": float(np.exp(rng.uniform(np.log(0.25), 0))),
                  "s": int(rng.integers(1, 4)), "space_json": "{}"}
        value = 0.5 + 0.2 * params["r"] + 1e-4 * params["s"]  # the metric follows r
        out.append(TrialRecord(f"t{i:05d}", params, value, {1: value - 0.1, 2: value}, "COMPLETE"))
    return out


def test_write_study_holds_exactly_the_given_trials(tmp_path):
    path = tmp_path / "optuna.journal"
    live = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))), study_name="sweep")
    for _ in range(5):
        live.ask()  # stale trials the rewrite must drop
    recs = records(3) + [TrialRecord("t00003", {"r": 2.0, "aug_loss_weight": 1.0, "s": 2}, None, {}, "FAIL"),
                         TrialRecord("t00004", {"r": 1.5, "aug_loss_weight": 0.5, "s": 1}, 0.3, {1: 0.3}, "PRUNED")]
    assert write_study(path, recs, DISTS, "maximize") == 5
    study = load_study(path)
    assert [t.user_attrs["tune_trial_id"] for t in study.trials] == [f"t0000{i}" for i in range(5)]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["FAIL", "PRUNED"]
    for t, r in zip(study.trials, recs):
        assert t.params == {k: v for k, v in r.params.items() if k in DISTS}  # Tune's constants are not params
        assert t.value == (r.value if r.state == "COMPLETE" else None) and t.intermediate_values == r.intermediate
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert not list(tmp_path.glob(".*tmp")), "no temporary file is left behind"


def test_importances_name_the_parameter_the_metric_follows(tmp_path):
    path = tmp_path / "optuna.journal"
    write_study(path, records(12), DISTS, "maximize")
    found, note = importances(load_study(path))
    assert next(iter(found)) == "r" and found["r"] > 0.9 and sum(found.values()) == pytest.approx(1.0)
    assert note == "fANOVA on 12 finished trials"
    assert most_important_line(load_study(path), "val_top1").startswith(
        "most important hyperparameter for val_top1: r (fANOVA on 12 finished trials: r 0.")


def test_too_few_trials_say_so(tmp_path):
    path = tmp_path / "optuna.journal"
    write_study(path, records(3), DISTS, "maximize")
    assert importances(load_study(path)) == (None, "needs at least 4 finished trials; 3 finished")
    assert load_study(tmp_path / "none.journal") is None


def test_importances_of_a_conditional_space_use_the_trials_that_share_the_most_parameters(tmp_path):
    """Plain-training trials sample only `mode`; fANOVA runs on the NetAug trials, which sample the rest."""
    path = tmp_path / "optuna.journal"
    dists = {**DISTS, "mode": optuna.distributions.CategoricalDistribution(["baseline", "netaug"])}
    netaug = [TrialRecord(r.tune_trial_id, {**r.params, "mode": "netaug"}, r.value, r.intermediate, r.state)
              for r in records(8)]
    plain = [TrialRecord(f"p{i}", {"mode": "baseline"}, 0.9, {1: 0.9}, "COMPLETE") for i in range(3)]
    write_study(path, netaug + plain, dists, "maximize")
    study = load_study(path)
    assert [sorted(t.params) for t in study.trials[-3:]] == [["mode"]] * 3
    found, note = importances(study)
    assert note == "fANOVA on the 8 of 11 finished trials that sample aug_loss_weight, mode, r, s"
    assert set(found) == {"aug_loss_weight", "mode", "r", "s"} and next(iter(found)) == "r" and found["r"] > 0.9
    # Optuna's own evaluator on those 8 trials alone gives the same numbers
    only = optuna.create_study(direction="maximize")
    only.add_trials(study.trials[:8])
    assert found == pytest.approx(dict(optuna.importance.get_param_importances(
        only, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))))


def test_a_flat_studys_importances_use_only_what_each_trials_mode_read(tmp_path):
    """A study that a flat searcher wrote (before the space was conditional on mode) gives every trial every
    parameter: plain trials an r, NetAug trials a lambda_kd. Importances count only what each mode read, so the
    same trials give the same importances as the conditional study of them, and lambda_kd, which only the
    NetAug+RKD trials read, is not among them."""
    path, cond_path = tmp_path / "optuna.journal", tmp_path / "conditional.journal"
    dists = {**DISTS, "lambda_kd": optuna.distributions.FloatDistribution(0.25, 4.0, log=True),
             "mode": optuna.distributions.CategoricalDistribution(["baseline", "netaug", "netaug_rkd"])}
    rng = np.random.default_rng(1)
    flat, conditional = [], []
    for i, r in enumerate(records(10) + records(3, seed=2)):
        mode = "baseline" if i >= 10 else "netaug_rkd" if i % 4 == 0 else "netaug"
        value = r.value + 0.3 * rng.uniform()  # noise that lambda_kd, drawn for all, could appear to explain
        params = {**r.params, "lambda_kd": float(np.exp(rng.uniform(np.log(0.25), np.log(4.0)))), "mode": mode}
        flat.append(TrialRecord(r.tune_trial_id, params, value, {1: value}, "COMPLETE"))
        reads = {"baseline": ("mode",), "netaug": ("mode", "r", "s", "aug_loss_weight"), "netaug_rkd": tuple(params)}
        read = {k: v for k, v in params.items() if k in reads[mode]}
        conditional.append(TrialRecord(r.tune_trial_id, read, value, {1: value}, "COMPLETE"))
    write_study(path, flat, dists, "maximize")
    write_study(cond_path, conditional, dists, "maximize")
    assert all(set(t.params) == set(dists) for t in load_study(path).trials)  # flat: all five everywhere
    found, note = importances(load_study(path))
    assert (found, note) == importances(load_study(cond_path))
    assert note == "fANOVA on the 10 of 13 finished trials that sample aug_loss_weight, mode, r, s"
    assert "lambda_kd" not in found and set(found) == {"aug_loss_weight", "mode", "r", "s"}


def test_trials_that_share_only_mode_give_no_importances_and_say_why(tmp_path):
    """Cell B's finished trials: three NetAug ones and one reparam. No trial reads only `mode`, yet it is all
    four share; one parameter has nothing to be ranked against, so no importances (one more plain trial would
    not change that; three more NetAug ones would)."""
    path = tmp_path / "optuna.journal"
    dists = {**DISTS, "reparam_k": optuna.distributions.IntDistribution(0, 2),
             "mode": optuna.distributions.CategoricalDistribution(["netaug", "reparam"])}
    netaug = [TrialRecord(r.tune_trial_id, {**r.params, "mode": "netaug"}, r.value, r.intermediate, r.state)
              for r in records(3)]
    write_study(path, netaug + [TrialRecord("k", {"mode": "reparam", "reparam_k": 1}, 0.8, {1: 0.8}, "COMPLETE")],
                dists, "maximize")
    assert importances(load_study(path)) == (None, "of the 4 finished trials, 4 or more share only mode: fANOVA "
                                                   "has nothing to rank it against")
    write_study(path, netaug + [TrialRecord(r.tune_trial_id + "n", {**r.params, "mode": "netaug"}, r.value,
                                            r.intermediate, r.state) for r in records(3, seed=5)], dists, "maximize")
    found, note = importances(load_study(path))
    assert note == "fANOVA on 6 finished trials" and next(iter(found)) == "r"


def test_importances_prefer_the_parameters_the_most_trials_share(tmp_path):
    """5 NetAug trials and 4 NetAug+RKD trials: fANOVA runs on the parameters all 9 share, not on the 4 that
    also sample lambda_kd (more trials: the firmer answer)."""
    path = tmp_path / "optuna.journal"
    dists = {**DISTS, "lambda_kd": optuna.distributions.FloatDistribution(0.25, 4.0, log=True),
             "mode": optuna.distributions.CategoricalDistribution(["netaug", "netaug_rkd"])}
    trials = [TrialRecord(r.tune_trial_id, {**r.params, "mode": "netaug_rkd" if i < 4 else "netaug",
                                            **({"lambda_kd": 0.5 + i} if i < 4 else {})}, r.value, r.intermediate,
                          r.state) for i, r in enumerate(records(9))]
    write_study(path, trials, dists, "maximize")
    found, note = importances(load_study(path))
    assert note == "fANOVA on 9 finished trials, over the parameters all of them sample: aug_loss_weight, mode, r, s"
    assert set(found) == {"aug_loss_weight", "mode", "r", "s"}


def test_a_study_rebuilt_from_trials_parquet_keeps_each_trials_own_parameters(tmp_path):
    """analysis/report.py rebuilds a study from trials.parquet (a metric other than the sweep's, or a run
    without a study file); a plain trial of a conditional space has no r: it is kept, holding only its mode."""
    import pandas as pd

    from analysis.load import Run
    from analysis.report import rebuild_study

    trials = pd.DataFrame(
        [{"trial_id": f"t{i}", "status": "TERMINATED", "mode": "netaug", "r": 1.0 + 0.2 * i, "s": 1 + i % 2,
          "val_loss": 1.0 - 0.1 * i} for i in range(5)]
        + [{"trial_id": "p", "status": "TERMINATED", "mode": "baseline", "r": None, "s": None, "val_loss": 0.2},
           {"trial_id": "x", "status": "ERROR", "mode": "netaug", "r": 2.0, "s": 1, "val_loss": 0.1}])
    space = {"sweep": {"metric": "val_top1", "r": {"low": 1.0, "high": 3.0}, "s": {"low": 1, "high": 2},
                       "mode": ["baseline", "netaug"]}}
    empty = pd.DataFrame()
    study = rebuild_study(Run(tmp_path, trials, empty, empty, empty, space, True, empty), "val_loss")
    assert [t.params for t in study.trials] == [{"r": 1.0 + 0.2 * i, "s": 1 + i % 2, "mode": "netaug"}
                                                for i in range(5)] + [{"mode": "baseline"}]
    assert [t.value for t in study.trials] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.2])
    found, note = importances(study)
    assert note == "fANOVA on the 5 of 6 finished trials that sample mode, r, s" and next(iter(found)) == "r"


def test_importances_at_the_first_rung_value_every_trial_where_asha_compared_it(tmp_path):
    """A sweep whose finished trials are too few for fANOVA still has every trial's value at ASHA's first rung
    (the first epoch with `sweep.grace_period` plain epochs of compute spent, stopped trials too): the report's
    second importance is fANOVA on those values, the same as Optuna's evaluator on a study built by hand."""
    import pandas as pd

    from analysis.load import Run
    from analysis.report import first_rung, plot_importance

    rng = np.random.default_rng(3)
    records_, epochs, at_rung = [], [], {}
    for i in range(9):
        r, s = float(rng.uniform(1, 3)), int(rng.integers(1, 4))
        cost = 1.0 + r  # plain epochs per epoch: a wider NetAug costs more, so it reaches the rung in fewer epochs
        stopped = i >= 3  # ASHA stopped six of them at the rung: they never finished
        last = int(np.ceil(10.0 / cost)) if stopped else int(np.ceil(40.0 / cost))
        curve = [0.5 + 0.1 * r * (e * cost / 40.0) for e in range(1, last + 1)]
        epochs += [{"trial_id": f"t{i}", "stage": "sweep", "epoch": e, "compute": e * cost, "val_top1": v}
                   for e, v in enumerate(curve, start=1)]
        at_rung[f"t{i}"] = curve[int(np.ceil(10.0 / cost)) - 1]  # the first epoch at or past 10 plain epochs
        records_.append(TrialRecord(f"t{i}", {"r": r, "s": s, "aug_loss_weight": float(rng.uniform(0.25, 2.0))},
                                    curve[-1], dict(enumerate(curve, start=1)), "PRUNED" if stopped else "COMPLETE"))
    (tmp_path / "sweep").mkdir()
    write_study(tmp_path / "sweep" / "optuna.journal", records_, DISTS, "maximize")
    space = {"sweep": {"metric": "val_top1", "scheduler": "asha", "grace_period": 10, "budget": 40},
             "compute": {"unit": "seconds"}}
    empty = pd.DataFrame()
    run = Run(tmp_path, pd.DataFrame(), pd.DataFrame(epochs), empty, empty, space, True, empty)
    values, what = first_rung(run, "val_top1")
    assert values == pytest.approx(at_rung) and what == "10 plain epochs of compute"
    (name, note), (rung_name, rung_note) = plot_importance(run, "val_top1", tmp_path)
    assert name is None and note.startswith("needs at least 4 finished trials; 3 finished")
    by_hand = optuna.create_study(direction="maximize")
    for rec in records_:
        by_hand.add_trial(optuna.trial.create_trial(value=at_rung[rec.tune_trial_id], params=rec.params,
                                                    distributions=DISTS))
    expected = optuna.importance.get_param_importances(
        by_hand, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=["aug_loss_weight", "r", "s"])
    top = next(iter(expected))
    assert top == "r" and rung_name == "param_importance_rung.png" and (tmp_path / rung_name).stat().st_size > 0
    assert rung_note == (f"at ASHA's first rung (10 plain epochs of compute), where every trial was compared at "
                         f"equal compute: fANOVA on 9 trials; most important: r ({expected['r']:.2f})")
    # the run's summary line after the sweep (search/run.py) says the same
    ranked = ", ".join(f"{k} {v:.2f}" for k, v in expected.items())
    assert rung_line(load_study(tmp_path / "sweep" / "optuna.journal"), "val_top1", values, what) == (
        f"at ASHA's first rung (10 plain epochs of compute), most important for val_top1: r (fANOVA on 9 trials: "
        f"{ranked})")
    assert first_rung_of({**space, "compute": {"unit": "epochs"}, "sweep": {**space["sweep"], "epochs": 5}}) == (
        "epoch", 5.0, "epoch 5")  # grace_period 10 is past the 5 epochs: ASHA's first rung is the last epoch
    assert first_rung_of({"sweep": {"scheduler": "none"}}) is None
