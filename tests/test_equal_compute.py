"""Equal compute: training cost counted per pass, budgets turned into epochs, the calibration, the cheaper NetAug
knobs, ASHA on compute and the paired answers at equal epochs and at equal compute."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import scipy.stats
import torch

from netaug.config import load_space
from netaug.models import profile_macs
from netaug.stats import answer_families
from netaug.train.calibrate import RecipeCost, calibrate, plan_epochs, spent, with_epochs
from netaug.train.cost import BACKWARD_FACTOR, PhaseCost, affordable_epochs
from netaug.train.trainer import Trainer

TINY = ["data.resolution=8", "training.batch_size=64", "training.bn_calib_batches=2", "netaug.r=2", "netaug.s=1"]


def official_min_w(epochs: int, warmup: float, fraction: float) -> int:
    """The official schedule written out: epoch e (0-based) is min_w when e >= E - f (E - warm-up)."""
    w = min(warmup, epochs)
    return int(np.sum(np.arange(epochs) >= epochs - fraction * (epochs - w)))


@pytest.mark.parametrize("budget,width,min_w,warmup,fraction", [
    (12, 3.7, 2.9, 1, 0.5), (183, 4.4, 2.7, 1.33, 0.5), (4, 4.9, 4.9, 1, 0.5), (40, 1.0, 1.0, 1, 0.0),
    (10, 2.0, 1.0, 0, 1.0), (7.5, 1.5, 1.25, 2, 0.25)])
def test_affordable_epochs_is_the_longest_schedule_within_the_budget(budget, width, min_w, warmup, fraction):
    cost = PhaseCost(width, min_w)
    got = affordable_epochs(budget, cost, lambda e: official_min_w(e, warmup, fraction))
    schedules = [(e - official_min_w(e, warmup, fraction)) * width + official_min_w(e, warmup, fraction) * min_w
                 for e in range(1, 1000)]
    fitting = [e for e, c in enumerate(schedules, start=1) if c <= budget + 1e-9]
    assert got == (max(fitting) if fitting else 1)  # at least one epoch, even when one epoch is over the budget


def test_plan_epochs_follows_the_trainers_own_min_w_phase():
    cfg = load_space(None, TINY + ["training.warmup_epochs=1", "netaug.min_w_fraction=0.5"])
    cost = PhaseCost(4.0, 2.0)
    epochs = plan_epochs(cfg, cost, 30.0)
    # independent: the trainer's own aug_kind over the planned schedule
    planned = with_epochs(cfg, epochs)
    from netaug.train.recipe import Recipe

    recipe = Recipe(torch.nn.Identity(), "netaug", planned, torch.device("cpu"))
    kinds = [recipe.aug_kind(e) for e in range(epochs)]
    assert sum(k == "random" for k in kinds) * 4.0 + sum(k == "min_w" for k in kinds) * 2.0 <= 30.0
    assert spent(planned, cost, epochs) == pytest.approx(kinds.count("random") * 4.0 + kinds.count("min_w") * 2.0)
    longer = with_epochs(cfg, epochs + 1)
    assert spent(longer, cost, epochs + 1) > 30.0
    assert plan_epochs(load_space(None, TINY + ["training.mode=baseline"]), PhaseCost(1.0, 1.0), 12.0) == 12


@pytest.fixture(scope="module")
def digits8():
    from netaug.data import load_data

    return load_data(load_space(None, TINY).data)


def test_a_steps_flops_are_three_forwards_of_every_model_it_trains(digits8):
    cfg = load_space(None, TINY + ["training.mode=netaug"])
    archs = []
    trainer = Trainer(cfg, digits8, arch_log=archs.append)
    shape = (digits8.in_channels, digits8.resolution, digits8.resolution)
    x, y = next(trainer.batcher.batches(digits8.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0)))
    trainer.pass_log = []
    trainer.step(x, y)
    aug = trainer.augmented
    base_flops = 2 * profile_macs(aug.export("min"), shape)[0]  # the exported static network, counted on its own
    sampled_flops = 2 * profile_macs(aug.export(archs[0]["config"]), shape)[0]
    assert trainer.epoch_flops() == BACKWARD_FACTOR * 64 * (base_flops + sampled_flops)
    plain = Trainer(load_space(None, TINY + ["training.mode=baseline"]), digits8)
    record = plain.train_epoch()
    images = plain.steps_per_epoch * 64
    assert record.train_flops == BACKWARD_FACTOR * images * 2 * profile_macs(plain.model, shape)[0]
    assert record.train_s == pytest.approx(record.epoch_s) and plain.train_seconds == record.train_s


def test_aug_every_and_aug_fraction_run_the_augmented_pass_less(digits8):
    cfg = load_space(None, TINY + ["training.mode=netaug", "netaug.aug_every=3", "netaug.aug_fraction=0.25"])
    trainer = Trainer(cfg, digits8)
    batches = trainer.batcher.batches(digits8.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    per_step = []
    for _ in range(7):
        x, y = next(batches)
        trainer.pass_log = []
        losses = trainer.step(x, y)
        per_step.append(([images for config, images, _ in trainer.pass_log if config != "min"],
                         float(losses["aug_loss"])))
    assert [len(p[0]) for p in per_step] == [1, 0, 0, 1, 0, 0, 1]  # steps 0, 3, 6
    assert all(p[0] == [16] for p in per_step if p[0])  # a quarter of the batch of 64
    assert all((p[1] > 0) == bool(p[0]) for p in per_step)


def test_defaults_leave_the_netaug_step_as_it_was(digits8):
    """aug_every=1 and aug_fraction=1 (the defaults) give the step of the explicit values, bit for bit."""
    results = []
    for extra in ([], ["netaug.aug_every=1", "netaug.aug_fraction=1.0"]):
        trainer = Trainer(load_space(None, TINY + ["training.mode=netaug_rkd", "rkd.teacher=sampled", *extra]),
                          digits8)
        x, y = next(trainer.batcher.batches(digits8.train, 64, shuffle=True,
                                            generator=torch.Generator().manual_seed(0)))
        results.append({k: float(v) for k, v in trainer.step(x, y).items()})
    assert results[0] == results[1]


def test_under_a_budget_a_cheaper_fixed_configuration_trains_more_epochs(digits8):
    """Two fixed configurations at one FLOPs budget (FLOPs: the same numbers on every machine)."""
    from search.sweep_stage import plan_trial, trial_space

    space = load_space(None, TINY + ["compute.unit=flops", "sweep.budget=12", "sweep.largest=fixed",
                                     "compute.calibration_steps=4"])
    params = {"r": 2.0, "s": 1, "aug_loss_weight": 1.0, "lambda_kd": 1.0, "mode": "netaug"}
    plans = {}
    for name, extra in (("costly", {}), ("cheap", {"aug_every": 4})):
        cfg, plan = plan_trial(trial_space(space, {**params, **extra}), digits8, None)
        plans[name] = (cfg, plan)
        cost = PhaseCost(plan["cost_width"], plan["cost_min_w"])
        assert spent(cfg, cost, cfg.training.epochs) <= 12 + 1e-9 < spent(with_epochs(cfg, cfg.training.epochs + 1),
                                                                         cost, cfg.training.epochs + 1)
    assert plans["cheap"][1]["cost_width"] < plans["costly"][1]["cost_width"]
    assert plans["cheap"][0].training.epochs > plans["costly"][0].training.epochs
    plain, plan = plan_trial(trial_space(space, {**params, "mode": "baseline"}), digits8, None)
    assert plain.training.epochs == 12 and plan["cost_width"] == 1.0


def test_flops_calibration_repeats_exactly_and_matches_the_counted_passes(digits8):
    cfg = load_space(None, TINY + ["training.mode=netaug"])
    first = calibrate({"netaug": (cfg, None)}, digits8, "flops", steps=3, warmup=1)
    again = calibrate({"netaug": (cfg, None)}, digits8, "flops", steps=3, warmup=1)
    assert first["netaug"].cost == again["netaug"].cost and first["netaug"].cost.width > 1
    plain = first["baseline"].width.flops
    shape = (digits8.in_channels, digits8.resolution, digits8.resolution)
    assert plain == BACKWARD_FACTOR * 64 * 2 * profile_macs(Trainer(
        load_space(None, TINY + ["training.mode=baseline"]), digits8).model, shape)[0]
    assert RecipeCost.from_dict(first["netaug"].to_dict()) == first["netaug"]


def test_asha_rungs_are_on_the_compute_key():
    from search.sweep_stage import COMPUTE_KEY, make_scheduler

    asha = make_scheduler(load_space(None, ["sweep.scheduler=asha", "sweep.budget=12", "sweep.grace_period=1.5"]))
    assert asha._time_attr == COMPUTE_KEY == "compute" and asha._max_t == 12
    assert [m for m, _ in asha._brackets[0]._rungs][-1] == 1.5  # the first rung: grace_period plain epochs
    by_epoch = make_scheduler(load_space(None, ["sweep.scheduler=asha", "compute.unit=epochs", "sweep.epochs=5"]))
    assert by_epoch._time_attr == "epoch" and by_epoch._max_t == 5


def rows_of(values: dict[str, list[float]], epochs: dict[str, int], compute: dict[str, float]) -> list[dict]:
    modes = {"baseline": "baseline", "baseline_equal": "baseline", "winner": "netaug_rkd", "netaug_fixed": "netaug",
             "reparam": "reparam", "baseline_e3": "baseline", "baseline_e9": "baseline"}
    return [{"arm": arm, "mode": modes[arm], "seed": seed, "test_top1": v, "epochs": epochs[arm],
             "compute": compute[arm], "unit": "seconds", "description": arm}
            for arm, vs in values.items() for seed, v in enumerate(vs)]


def test_answers_at_equal_epochs_and_at_equal_compute_are_paired_t_tests_with_holm():
    from netaug.stats import answer_lines

    values = {"winner": [0.91, 0.90, 0.92], "baseline": [0.89, 0.895, 0.90], "netaug_fixed": [0.90, 0.91, 0.905],
              "baseline_equal": [0.915, 0.92, 0.93]}
    rows = rows_of(values, {"winner": 6, "baseline": 6, "netaug_fixed": 6, "baseline_equal": 22},
                   {"winner": 21.6, "baseline": 6.0, "netaug_fixed": 25.3, "baseline_equal": 22.0})
    families = answer_families(rows)
    assert [(pairs, sorted({r["arm"] for r in fam})) for _, pairs, fam in families] == [
        ({"winner": "baseline", "netaug_fixed": "baseline"}, ["baseline", "netaug_fixed", "winner"]),
        ({"winner": "baseline_equal"}, ["baseline_equal", "winner"])]
    lines = answer_lines(rows, 0.95, rerun=lambda extra: "python search/run.py " + " ".join(extra))
    text = "\n".join(lines)
    assert "At equal epochs (6 each)" in text and "At equal compute (22.0 plain epochs" in text
    # equal epochs: two arms against baseline, Holm over 2
    ps = {arm: scipy.stats.ttest_rel(values[arm], values["baseline"]).pvalue for arm in ("winner", "netaug_fixed")}
    order = sorted(ps, key=ps.get)
    holm = {order[0]: min(1, 2 * ps[order[0]])}
    holm[order[1]] = max(holm[order[0]], min(1, ps[order[1]]))
    for arm in ps:
        line = next(line for line in lines if line.strip().startswith(f"{arm} (") and "vs baseline:" in line)
        assert f"p = {ps[arm]:.3g} (Holm {holm[arm]:.3g})" in line
    # equal compute: the winner alone against baseline_equal (netaug_fixed's compute is 3.3 plain epochs away)
    d = np.subtract(values["winner"], values["baseline_equal"])
    half = scipy.stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    line = next(line for line in lines if "vs baseline_equal" in line)
    assert line.strip().startswith("winner (")
    assert f"{d.mean() * 100:+.2f} pts [{(d.mean() - half) * 100:+.2f}, {(d.mean() + half) * 100:+.2f}]" in line
    assert f"p = {scipy.stats.ttest_rel(values['winner'], values['baseline_equal']).pvalue:.3g}," in line
    # not significant: the seeds its mean and spread would need, found independently
    after = lines[next(i for i, line in enumerate(lines) if line.startswith("At equal compute")):]
    decide = next(line for line in after if "To decide it" in line)
    need = int(re.search(r"final\.seeds=(\d+)", decide).group(1))
    sd = d.std(ddof=1)
    expect = next(n for n in range(4, 1000) if scipy.stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(d.mean()))
    assert need == expect


def test_a_plain_winner_is_not_compared_with_plain_training():
    values = {"winner": [0.9, 0.91], "baseline": [0.9, 0.91], "netaug_fixed": [0.92, 0.93],
              "baseline_equal": [0.93, 0.935]}
    rows = rows_of(values, {"winner": 6, "baseline": 6, "netaug_fixed": 6, "baseline_equal": 15},
                   {"winner": 6.0, "baseline": 6.0, "netaug_fixed": 15.2, "baseline_equal": 15.0})
    for row in rows:
        if row["arm"] == "winner":
            row["mode"] = "baseline"  # the sweep found plain training best
    families = answer_families(rows)
    assert [sorted({r["arm"] for r in fam}) for _, _, fam in families] == [
        ["baseline", "netaug_fixed"], ["baseline_equal", "netaug_fixed"]]


def test_with_a_budget_each_method_meets_plain_training_of_its_own_length_at_equal_epochs():
    """final.budget gives NetAug and reparam their own epochs; baseline_matched's plain arms are their partners
    at equal epochs, one family for Holm across the different references."""
    from netaug.stats import answer_lines

    values = {"winner": [0.90, 0.905, 0.915, 0.90], "netaug_fixed": [0.895, 0.9, 0.91, 0.90],
              "reparam": [0.92, 0.915, 0.93, 0.925], "baseline_e3": [0.89, 0.9, 0.9, 0.895],
              "baseline_e9": [0.91, 0.912, 0.92, 0.915], "baseline": [0.925, 0.93, 0.935, 0.93],
              "baseline_equal": [0.93, 0.935, 0.94, 0.933]}
    epochs = {"winner": 3, "netaug_fixed": 3, "reparam": 9, "baseline_e3": 3, "baseline_e9": 9, "baseline": 10,
              "baseline_equal": 20}
    compute = {"winner": 19.8, "netaug_fixed": 20.4, "reparam": 19.9, "baseline_e3": 3.0, "baseline_e9": 9.0,
               "baseline": 10.0, "baseline_equal": 20.0}
    rows = rows_of(values, epochs, compute)
    (title, pairs, _), (_, at_compute, _) = answer_families(rows)
    assert pairs == {"winner": "baseline_e3", "netaug_fixed": "baseline_e3", "reparam": "baseline_e9"}
    assert at_compute == {a: "baseline_equal" for a in ("winner", "netaug_fixed", "reparam")}
    assert title.startswith("At equal epochs (each against plain training of as many epochs: winner 3, "
                            "netaug_fixed 3, reparam 9): did NetAug or reparam help?")
    lines = answer_lines(rows, 0.95, rerun=lambda extra: "python search/run.py " + " ".join(extra))
    ps = {arm: scipy.stats.ttest_rel(values[arm], values[ref]).pvalue for arm, ref in pairs.items()}
    order = sorted(ps, key=ps.get)
    holm, running = {}, 0.0
    for i, arm in enumerate(order):  # Holm's step-down, written out
        running = max(running, min(1.0, (len(order) - i) * ps[arm]))
        holm[arm] = running
    for arm, ref in pairs.items():
        line = next(line for line in lines if line.strip().startswith(f"{arm} (") and f"vs {ref}:" in line)
        assert f"p = {ps[arm]:.3g} (Holm {holm[arm]:.3g})" in line
    # not significant at equal epochs: doubling means doubling the budget, which sets these arms' epochs
    first = lines[:next(i for i, line in enumerate(lines) if line.startswith("At equal compute"))]
    decide = [line for line in first if "To decide it" in line]
    assert not decide or "final.epochs" not in decide[0]


def test_an_arm_that_spent_all_a_small_budget_buys_is_at_equal_compute():
    """With final.budget = 5 plain epochs and a NetAug epoch of 3.13, one epoch (3.1) is all the budget buys: the
    arm is at equal compute although 1.9 plain epochs short; an arm that could have trained another epoch is not."""
    values = {"winner": [0.5, 0.6], "netaug_fixed": [0.5, 0.55], "baseline_equal": [0.4, 0.45]}
    rows = rows_of(values, {"winner": 1, "netaug_fixed": 1, "baseline_equal": 5},
                   {"winner": 3.13, "netaug_fixed": 2.2, "baseline_equal": 5.0})
    cost = {"winner": 3.13, "netaug_fixed": 2.2, "baseline_equal": 1.0}
    for row in rows:
        row["cost_width"] = row["cost_min_w"] = cost[row["arm"]]
    (_, pairs, _), = answer_families(rows)
    assert pairs == {"winner": "baseline_equal"}  # netaug_fixed: 2.2 + 2.2 <= 5, it could have trained another


def test_baseline_matched_becomes_one_plain_arm_per_method_epoch_count():
    import dataclasses

    from search.arms import Arm, arm_space
    from search.equal_compute import plan_arms

    cfg = load_space(None, ["final.epochs=6", "final.budget=30",
                            "final.arms=[winner,baseline,netaug_fixed,reparam,baseline_equal,baseline_matched]"])
    arms = [Arm("winner", "netaug_rkd", "w", r=2.0, s=1, aug_loss_weight=1.0),
            Arm("baseline", "baseline", "b"), Arm("netaug_fixed", "netaug", "n", r=2.0, s=1, aug_loss_weight=1.0),
            Arm("reparam", "reparam", "r"), Arm("baseline_equal", "baseline", "be"),
            Arm("baseline_matched", "baseline", "bm")]
    step = {"seconds": 0.1, "flops": 1.0}

    def cost(width, min_w):
        return {"width": step, "min_w": step, "cost": {"width": width, "min_w": min_w}}

    calibration = {"unit": "seconds", "costs": {"winner": cost(4.0, 2.0), "netaug_fixed": cost(4.0, 2.0),
                                                "reparam": cost(5.0, 5.0)}}
    planned, budget = plan_arms(cfg, arms, calibration)
    by = {a.name: a for a in planned}
    assert budget == 30 and by["baseline_equal"].epochs == 30 and by["baseline"].epochs == 6
    assert by["reparam"].epochs == 6  # 30 / 5: the same count as baseline, so baseline is its partner
    n = by["winner"].epochs
    assert n == by["netaug_fixed"].epochs and n != 6
    def cost_of(epochs: int) -> float:  # the winner's schedule trained to the end, in plain epochs
        return spent(arm_space(cfg, dataclasses.replace(by["winner"], epochs=epochs), 0), PhaseCost(4.0, 2.0), epochs)

    assert cost_of(n) <= 30 < cost_of(n + 1)  # the most epochs the budget buys
    matched = [a for a in planned if a.name.startswith("baseline_e") and a.name != "baseline_equal"]
    assert [(a.name, a.mode, a.epochs) for a in matched] == [(f"baseline_e{n}", "baseline", n)]
    assert "baseline_matched" not in by and "winner, netaug_fixed" in matched[0].description


def test_a_winner_that_trains_what_a_plain_arm_trains_is_not_trained_twice():
    """The sweep found plain training best: at final.budget the winner is plain training for the budget, which is
    baseline_equal. It is left out (the answers name baseline_equal); a reparam winner at another k is kept."""
    from search.arms import Arm, without_twins
    from search.equal_compute import plan_arms

    cfg = load_space(None, ["final.epochs=6", "final.budget=30", "reparam.k=1",
                            "final.arms=[winner,baseline,reparam,baseline_equal,baseline_matched]"])
    step = {"seconds": 0.1, "flops": 1.0}
    calibration = {"unit": "seconds", "costs": {"reparam": {"width": step, "min_w": step,
                                                            "cost": {"width": 5.0, "min_w": 5.0}}}}
    plain = [Arm("winner", "baseline", "baseline: the sweep found plain training best"),
             Arm("baseline", "baseline", "b"), Arm("reparam", "reparam", "r", reparam_k=1),
             Arm("baseline_equal", "baseline", "be"), Arm("baseline_matched", "baseline", "bm")]
    planned, _ = plan_arms(cfg, plain, calibration)
    assert {a.name: a.epochs for a in planned}["winner"] == 30  # plain training: 30 epochs for 30 plain epochs
    kept, notes = without_twins(planned)
    assert [a.name for a in kept] == [a.name for a in planned if a.name != "winner"]
    assert notes == ["final: winner (baseline: the sweep found plain training best, 30 epochs) trains exactly what "
                     "baseline_equal trains; not trained twice"]
    # a reparam winner with the reparam arm's k and epochs is the reparam arm; at another k it is not
    twin = [Arm("winner", "reparam", "w", reparam_k=1, epochs=6), Arm("reparam", "reparam", "r", reparam_k=1, epochs=6),
            Arm("baseline", "baseline", "b", epochs=6)]
    assert [a.name for a in without_twins(twin)[0]] == ["reparam", "baseline"]
    other = [Arm("winner", "reparam", "w", reparam_k=2, epochs=6), *twin[1:]]
    assert without_twins(other) == (other, [])
    # baseline and baseline_equal at the same epochs answer two questions: both stay
    refs = [Arm("baseline", "baseline", "b", epochs=6), Arm("baseline_equal", "baseline", "be", epochs=6)]
    assert without_twins(refs) == (refs, [])


def test_a_saved_calibration_is_reused(tmp_path):
    from search.arms import Arm
    from search.equal_compute import CALIBRATION_FILE, measure, plan_arms

    cfg = load_space(None, ["final.epochs=6"])
    arms = [Arm("winner", "netaug_rkd", "w"), Arm("baseline", "baseline", "b"),
            Arm("baseline_equal", "baseline", "be")]
    step = {"seconds": 0.1, "flops": 1.0}
    saved = {"unit": "seconds", "arms_measured": ["winner"], "costs": {
        "baseline": {"width": step, "min_w": step, "cost": {"width": 1.0, "min_w": 1.0}},
        "winner": {"width": step, "min_w": step, "cost": {"width": 3.5, "min_w": 2.5}}}}
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / CALIBRATION_FILE).write_text(json.dumps(saved))
    calibration = measure(cfg, arms, tmp_path)  # no Ray: read back
    assert calibration["reused"] and calibration["costs"] == saved["costs"]
    planned, budget = plan_arms(cfg, arms, calibration)
    by = {a.name: a for a in planned}
    late = official_min_w(6, 1.0, 0.5)
    assert budget == pytest.approx((6 - late) * 3.5 + late * 2.5)
    assert by["baseline_equal"].epochs == round(budget) and by["winner"].epochs == by["baseline"].epochs == 6


def test_the_cost_benchmark_runs_on_a_users_module_with_counted_flops(capsys):
    """bench/equal_compute.py on `model.module` (it stopped with a traceback before): plain FLOPs per step are
    3 forwards of the module on the batch, and each knob costs less than full NetAug."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("bench_equal_compute", ROOT / "bench" / "equal_compute.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    module = "model.module=spaces/models/resnet8.py:resnet8"
    assert bench.main(["--space", str(ROOT / "spaces" / "mbv2.yaml"), "--set", module, "--set", "data.resolution=8",
                       "--epochs", "4", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines() if line.startswith("  ")}
    cfg = load_space(str(ROOT / "spaces" / "mbv2.yaml"), [module, "data.resolution=8", "training.mode=baseline"])
    from netaug.data import load_data

    data = load_data(cfg.data)
    plain = Trainer(cfg, data)
    macs = profile_macs(plain.model, (data.in_channels, data.resolution, data.resolution))[0]
    assert float(rows[("baseline", "width")][4]) == pytest.approx(
        BACKWARD_FACTOR * cfg.training.batch_size * 2 * macs / 1e9, rel=1e-3)
    full = float(rows[("netaug", "width")][4])
    assert full > float(rows[("baseline", "width")][4])
    for knob in ("aug_every=4", "aug_fraction=0.25"):
        assert float(rows[(knob, "width")][4]) < full  # FLOPs: counted, so this holds on any machine


def test_the_delivered_plain_model_says_which_recipes_did_not_pay_for_their_cost():
    from search.deliverable import why_line

    means = {"baseline_equal": 0.99, "reparam": 0.96, "baseline": 0.95}
    assert why_line("baseline_equal", {"epochs": 30}, means, ["reparam"]) == (
        "why: plain training at equal compute (30 epochs) had the best mean val top-1 (baseline_equal 0.9900, "
        "reparam 0.9600, baseline 0.9500): reparam did not pay for its extra cost here, so you get the plain model")
    assert why_line("baseline_equal", {"epochs": 8}, {"baseline_equal": 0.99}, []).endswith(
        "(baseline_equal 0.9900), so you get the plain model")
