"""The trainer: NetAug learns on real digits, is reproducible, and the CLI writes a loadable export."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netaug.augment import AugmentedModel
from netaug.config import load_space
from netaug.train import Trainer
from netaug.train.evaluate import evaluate
from netaug.train.export import load_exported
from netaug.train.optim import build_optimizer, lr_factor

ROOT = Path(__file__).resolve().parents[1]


def train_loss(trainer: Trainer) -> float:
    """Mean cross-entropy of the exported base over the (un-augmented) training split."""
    model = trainer.export_base()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x), y, reduction="sum").item()
                  for x, y in trainer.batcher.batches(trainer.data.train, 512)]
    return sum(losses) / len(trainer.data.train)


def test_two_netaug_epochs_lower_the_training_loss_and_beat_chance(digits16, fast_cfg):
    archs = []
    trainer = Trainer(fast_cfg, digits16, mode="netaug", arch_log=archs.append)
    assert isinstance(trainer.model, AugmentedModel)
    before = train_loss(trainer)
    history = trainer.fit()
    after = train_loss(trainer)
    assert len(history) == 2 and after < 0.8 * before, (before, after)
    assert history[-1].val["top1"] > 0.3  # chance is 0.1
    assert all(r.aug_loss > 0 for r in history)
    # Every sampled sub-network is logged, one per step, as plain JSON.
    assert len(archs) == 2 * trainer.steps_per_epoch
    assert json.loads(json.dumps(archs[0]["config"])) == [list(p) for p in archs[0]["config"]]
    assert len({a["config"] for a in archs}) > 1


def _first(data, n: int = 320):
    """The data with only the first n training images: enough steps for what a test checks, in less time."""
    return dataclasses.replace(data, train=data.train.take(np.arange(n)))


def test_same_seed_same_numbers(digits16, fast_cfg):
    cfg = load_space(None, ["data.resolution=16", "training.epochs=1", "training.batch_size=64",
                            "netaug.r=2", "training.bn_calib_batches=1"])
    data = _first(digits16)
    runs = []
    for _ in range(2):
        trainer = Trainer(cfg, data, mode="netaug")
        first = trainer.step(*next(trainer.batcher.batches(data.train, 64)))
        history = trainer.fit()
        runs.append((first, history[0].train_loss, history[0].val["top1"],
                     trainer.export_base().state_dict()["classifier.weight"]))
    assert runs[0][:3] == runs[1][:3]
    assert torch.equal(runs[0][3], runs[1][3])


def test_min_w_phase_and_baseline_mode(digits16, fast_cfg):
    trainer = Trainer(fast_cfg, digits16, mode="netaug")
    trainer.epoch = 1
    fast_cfg.netaug.min_w_fraction, fast_cfg.training.warmup_epochs = 0.5, 0
    assert trainer.aug_kind() == "min_w"
    trainer.epoch = 0
    assert trainer.aug_kind() == "random"
    base = Trainer(fast_cfg, digits16, mode="baseline")
    assert not isinstance(base.model, AugmentedModel)
    losses = base.step(*next(base.batcher.batches(digits16.train, 64)))
    assert losses["aug_loss"] == 0 and losses["loss"] == losses["base_loss"]


def test_foreach_sgd_gives_bitwise_the_same_weights_as_the_per_parameter_loop(digits16, fast_cfg):
    """The trainer's foreach SGD (faster on CPU) against torch's single-tensor SGD, 6 netaug_rkd steps."""
    weights = []
    for foreach in (False, True):
        trainer = Trainer(fast_cfg, digits16, mode="netaug_rkd")
        for group in trainer.optimizer.param_groups:
            group["foreach"] = foreach
        batches = trainer.batcher.batches(digits16.train, 64, shuffle=True, augment=True,
                                          generator=torch.Generator().manual_seed(0))
        for _ in range(6):
            trainer.step(*next(batches))
        weights.append(trainer.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_channels_are_sorted_only_in_width_augmented_epochs(digits16, fast_cfg):
    """As the official code: sorting at the start of each "random" epoch, none in the min_w epochs,
    and the logged sub-networks of min_w epochs keep every width at the base's."""
    fast_cfg.training.epochs, fast_cfg.netaug.min_w_fraction, fast_cfg.training.warmup_epochs = 4, 0.5, 0
    small = _first(digits16, 128)
    logged: list[dict] = []
    trainer = Trainer(fast_cfg, small, mode="netaug", arch_log=logged.append)
    sorted_in: list[int] = []
    sort = trainer.augmented.sort_channels
    trainer.augmented.sort_channels = lambda *a, **k: (sorted_in.append(trainer.epoch), sort(*a, **k))
    for _ in range(4):
        trainer.train_epoch()
    assert sorted_in == [0, 1]
    assert {e["kind"] for e in logged if e["epoch"] >= 2} == {"min_w"}
    assert all(set(e["config"][0]) == {1.0} for e in logged if e["epoch"] >= 2)
    assert any(set(e["config"][0]) != {1.0} for e in logged if e["epoch"] < 2)


@pytest.mark.parametrize("model", [{}, {"name": "mobilenetv3", "width_mult": 0.35},
                                   {"spec": str(ROOT / "spaces" / "models" / "tiny-se.yaml")}],
                         ids=["mobilenetv2_tiny", "mobilenetv3", "spec-file"])
def test_netaug_gradient_is_base_plus_alpha_times_aug(digits16, fast_cfg, model):
    """One NetAug step's accumulated gradient equals the gradient of L(base) + alpha * L(aug)."""
    fast_cfg.netaug.aug_loss_weight = 0.7
    for key, value in model.items():
        setattr(fast_cfg.model, key, value)
    trainer = Trainer(fast_cfg, digits16, mode="netaug")
    model, ce, x, y, config, ref = _reference_setup(trainer, digits16)
    model.set_active("min")
    loss = ce(model(x), y)
    model.set_active(config)
    loss = loss + 0.7 * ce(model(x), y)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    _step_in_place(trainer, x, y)  # the same step through the trainer
    _assert_gradients(model, ref, expected)


def test_optimizer_groups_and_schedule(digits16, fast_cfg):
    trainer = Trainer(fast_cfg, digits16, mode="baseline")
    opt = build_optimizer(trainer.model, fast_cfg.training)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == fast_cfg.training.weight_decay and no_decay["weight_decay"] == 0
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert opt.defaults["nesterov"]
    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5) and lr_factor(100, 100, 10) == pytest.approx(0.0)


def official_cosine_with_warmup(step: int, base_lr: float, workers: int, warmup: int, decay: int) -> float:
    """The official CosineLRwithWarmup (utils/lr_scheduler.py) for an optimizer at base_lr x workers and
    warmup_lr = base_lr, written out: what lr the official train.py runs step `step` at."""
    peak = base_lr * workers
    if step < warmup:
        return (peak - base_lr) * step / warmup + base_lr
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / decay))


@pytest.mark.parametrize("workers", [1, 4, 16])
def test_official_warmup_follows_the_official_scheduler(workers):
    import types

    from netaug.train.optim import build_scheduler

    cfg = types.SimpleNamespace(epochs=12, warmup_epochs=2, min_lr_ratio=0.0, warmup="official", lr=0.025 * workers)
    steps_per_epoch = 10
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch, workers)
    ours = []
    for _ in range(cfg.epochs * steps_per_epoch):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    official = [official_cosine_with_warmup(t, 0.025, workers, 20, 100) for t in range(120)]
    assert ours == pytest.approx(official, rel=1e-12, abs=1e-15)
    assert ours[0] == pytest.approx(0.025)  # the first step runs at one worker's rate, not peak / warm-up steps
    cfg.warmup = "linear"  # the schedule before issue 27
    sched = build_scheduler(torch.optim.SGD([param], lr=cfg.lr), cfg, steps_per_epoch, workers)
    assert sched.get_last_lr()[0] == pytest.approx(cfg.lr / 20)


@pytest.mark.parametrize("min_w_of,epochs,warmup,expected", [
    ("cosine", 155, 5, 75),  # the official recipe: stop_aug_w_epoch 75 of 150 cosine epochs
    ("all", 155, 5, 77),  # before issue 27: half of all 155 epochs, rounded toward the end
    ("cosine", 40, 40 * 5 / 150, 19),
    ("all", 40, 40 * 5 / 150, 20),  # the convergence study's cells
])
def test_min_w_epochs_follow_the_official_count(digits16, fast_cfg, min_w_of, epochs, warmup, expected):
    fast_cfg.training.epochs, fast_cfg.training.warmup_epochs = epochs, warmup
    fast_cfg.netaug.min_w_fraction, fast_cfg.netaug.min_w_of = 0.5, min_w_of
    trainer = Trainer(fast_cfg, digits16, mode="netaug")
    kinds = []
    for epoch in range(epochs):
        trainer.epoch = epoch
        kinds.append(trainer.aug_kind())
    assert kinds.count("min_w") == expected and kinds[-expected:] == ["min_w"] * expected
    if min_w_of == "cosine":  # the official rule: min_w while remaining_epochs <= stop_aug_w_epoch
        stop = 0.5 * (epochs - warmup)
        assert kinds == ["min_w" if epochs - e <= stop else "random" for e in range(epochs)]


def test_evaluate_topk_matches_a_direct_computation(digits16, fast_cfg):
    trainer = Trainer(fast_cfg, digits16, mode="baseline")
    trainer.train_epoch()  # untrained logits are near-ties, whose order is arbitrary
    result = evaluate(trainer.model, digits16.val, trainer.batcher, 50, k=5)
    trainer.model.eval()
    with torch.no_grad():
        logits = torch.cat([trainer.model(x) for x, _ in trainer.batcher.batches(digits16.val, 179)])
    prob, idx = logits.softmax(1).topk(5, dim=1)
    assert np.array_equal(result.topk, idx.numpy()) and np.allclose(result.topk_prob, prob.numpy(), atol=1e-6)
    labels = digits16.val.labels
    assert result.top1 == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert result.top5 == pytest.approx((idx == labels[:, None]).any(1).float().mean().item())
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_checkpoint_round_trip_resumes_identically(digits16, fast_cfg):
    data = _first(digits16)  # 5 steps an epoch
    a = Trainer(fast_cfg, data, mode="netaug")
    a.train_epoch()
    state = a.state_dict()
    b = Trainer(fast_cfg, data, mode="netaug")
    b.load_state_dict(state)
    ra, rb = a.train_epoch(), b.train_epoch()
    assert ra.train_loss == rb.train_loss and ra.lr == rb.lr


@pytest.mark.parametrize("mode,extra", [("netaug", []), ("netaug_rkd", ["--set", "sharing.enabled=true"])])
def test_cli_trains_and_exports_a_loadable_base(tmp_path, mode, extra):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "netaug.train", "--space", str(ROOT / "spaces" / "mbv2.yaml"), "--mode", mode,
         "--out", str(out), "--no-progress", "--set", "training.epochs=1", "--set", "netaug.r=2",
         "--set", "data.subset=256", "--set", "training.bn_calib_batches=2", *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "val: base top1" in proc.stdout and "largest augmented" in proc.stdout
    assert ("distill" in proc.stdout) == (mode == "netaug_rkd")
    metrics = json.loads((out / "metrics.json").read_text())
    archs = [json.loads(line) for line in (out / "archs.jsonl").read_text().splitlines()]
    assert len(archs) == 256 // 64 and all(len(a["config"]) == 2 for a in archs)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    model, payload = load_exported(out / "base.pt")
    assert type(model).__name__ == "MobileNetV2" and payload["mode"] == mode
    # The saved export reproduces the reported test accuracy.
    from netaug.data import Batcher, load_data
    cfg = load_space(ROOT / "spaces" / "mbv2.yaml", ["data.subset=256"])
    data = load_data(cfg.data)
    result = evaluate(model, data.test, Batcher(payload["input"]["mean"], payload["input"]["std"]), 512)
    assert result.top1 == pytest.approx(metrics["test_base_top1"], abs=1e-9)


def _reference_setup(trainer: Trainer, data) -> tuple:
    """(model, criterion, x, y, the step's sampled config, the weights) for a by-hand reference of one
    step, with the model in training mode and no gradients yet."""
    model = trainer.model
    x, y = next(trainer.batcher.batches(data.train, 32))
    config = model.config("random", trainer.step_generator(trainer.global_step))
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    model.zero_grad()
    return model, trainer.criterion, x, y, config, ref


def _step_in_place(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> dict:
    """One trainer step that leaves the weights where they are and the accumulated gradients in .grad:
    lr 0 and no momentum (foreach Nesterov SGD edits .grad in place)."""
    trainer.scheduler.base_lrs = [0.0, 0.0]
    for group in trainer.optimizer.param_groups:
        group.update(lr=0.0, momentum=0.0, nesterov=False)
    return trainer.step(x, y)


def _assert_gradients(model: torch.nn.Module, ref: dict, expected: dict) -> None:
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), ref[n])
        assert torch.allclose(p.grad, expected[n], atol=1e-6, rtol=1e-4), n


@pytest.mark.parametrize("mode", ["kd", "netaug_kd", "netaug_rkd"])
def test_teacher_modes_follow_the_documented_total_loss(digits16, fast_cfg, mode):
    """Accumulated gradient == grad of L(base) + alpha L(aug) + lambda distill + L(teacher)."""
    from netaug.losses import kd_kl, rkd_loss

    fast_cfg.netaug.aug_loss_weight, fast_cfg.rkd.lambda_kd = 0.6, 0.8
    trainer = Trainer(fast_cfg, digits16, mode=mode)
    model, ce, x, y, config, ref = _reference_setup(trainer, digits16)
    model.set_active("max")
    t_feat, t_logits = model.forward_with_features(x)
    loss = ce(t_logits, y)
    model.set_active("min")
    feat, logits = model.forward_with_features(x)
    if mode == "netaug_rkd":
        distill = rkd_loss(feat, t_feat, 1.0, 2.0)  # w_d RKD-D + w_a RKD-A, the documented weights
    else:
        distill = kd_kl(logits, t_logits, fast_cfg.rkd.temperature)
    loss = loss + ce(logits, y) + 0.8 * distill
    if mode != "kd":
        model.set_active(config)
        loss = loss + 0.6 * ce(model(x), y)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    losses = _step_in_place(trainer, x, y)
    assert losses["teacher_loss"] > 0 and losses["distill_loss"] > 0
    assert (losses["aug_loss"] > 0) == (mode != "kd")
    _assert_gradients(model, ref, expected)


@pytest.mark.parametrize("teacher", ["max_fwd", "sampled"])
def test_cheaper_teachers_follow_their_total_loss(digits16, fast_cfg, teacher):
    """max_fwd: grad of L(base) + lambda RKD(base, max detached) + alpha L(aug), no teacher CE;
    sampled: the same with the sampled augmented model's detached outputs as the teacher."""
    from netaug.losses import rkd_loss

    fast_cfg.netaug.aug_loss_weight, fast_cfg.rkd.lambda_kd, fast_cfg.rkd.teacher = 0.6, 0.8, teacher
    trainer = Trainer(fast_cfg, digits16, mode="netaug_rkd")
    model, ce, x, y, config, ref = _reference_setup(trainer, digits16)
    model.set_active("max" if teacher == "max_fwd" else config)
    t_feat, t_logits = (t.detach() for t in model.forward_with_features(x))
    model.set_active("min")
    feat, logits = model.forward_with_features(x)
    loss = ce(logits, y) + 0.8 * rkd_loss(feat, t_feat, 1.0, 2.0)
    model.set_active(config)
    aug_loss = ce(model(x), y)
    (loss + 0.6 * aug_loss).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    losses = _step_in_place(trainer, x, y)
    assert losses["distill_loss"] > 0
    assert float(losses["loss"]) == pytest.approx(float(losses["base_loss"] + 0.6 * losses["aug_loss"]
                                                        + 0.8 * losses["distill_loss"]), rel=1e-6)
    if teacher == "sampled":
        assert float(losses["teacher_loss"]) == pytest.approx(float(aug_loss), rel=1e-5)
    _assert_gradients(model, ref, expected)


def test_a_cheaper_teacher_needs_a_netaug_mode():
    from netaug.config import load_space
    from netaug.errors import UserError

    with pytest.raises(UserError, match="rkd.teacher"):
        load_space(None, ["training.mode=kd", "rkd.teacher=max_fwd"])


def test_one_recalibration_per_weights_and_sub_network(digits16, fast_cfg, monkeypatch):
    """Evaluating val and a train subset after an epoch recalibrates BatchNorm once; a new step, another
    sub-network or a loaded checkpoint recalibrates again. Calibration batches are augmented (official
    `sub_train`) and drawn once."""
    import netaug.train.trainer as trainer_module

    calls: list[int] = []
    real = trainer_module.recalibrate_bn
    monkeypatch.setattr(trainer_module, "recalibrate_bn",
                        lambda model, batches: (calls.append(1), real(model, batches)))
    trainer = Trainer(fast_cfg, digits16, mode="netaug")
    x, y = next(trainer.batcher.batches(digits16.train, 64))
    trainer.step(x, y)
    trainer.evaluate("val")
    trainer.evaluate(digits16.train.take(np.arange(100)))
    assert len(calls) == 1
    trainer.evaluate("val", subnets=(("base", "min"), ("aug:max", "max")))
    assert len(calls) == 2  # the base is still calibrated; max is not
    trainer.evaluate("val")
    assert len(calls) == 3  # max overwrote the base's leading statistics
    trainer.load_state_dict(trainer.state_dict())
    trainer.evaluate("val")
    assert len(calls) == 4
    trainer.step(x, y)
    trainer.evaluate("val")
    assert len(calls) == 5
    batches = trainer.calibration_batches()
    assert batches is trainer.calibration_batches()  # drawn once
    plain = next(trainer.batcher.batches(digits16.train, fast_cfg.training.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(fast_cfg.training.seed + 2)))[0]
    assert plain.shape == batches[0].shape and not torch.equal(plain, batches[0])  # augmented, not plain
