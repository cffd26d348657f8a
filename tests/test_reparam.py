"""Re-parameterization (netaug/reparam): the fold is exact in eval mode on every built-in and the example user
models, at init and after training steps; the export is the model's own class, keys, parameters and MACs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from netaug.config import MODELS
from netaug.models import build_model, profile_macs
from netaug.models.user import build_user_model
from netaug.reparam import RepConv, conv_bn_pairs, reparameterize

USER_MODELS = {"dscnn": ("spaces/models/dscnn.py:dscnn", 1, 16), "resnet8": ("spaces/models/resnet8.py:resnet8", 3, 16),
               "se_net": ("spaces/models/se_net.py:se_net", 1, 16)}


def _model(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if name in USER_MODELS:
        ref, channels, size = USER_MODELS[name]
        model, _ = build_user_model(ref, {}, 10, channels, size)
        return model, (channels, size, size)
    return build_model(name, 10, 3, resolution=32), (3, 32, 32)


def _train(model: nn.Module, shape, steps: int = 3) -> None:
    """A few SGD steps in train mode: the weights and every BN's running statistics move."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, *shape, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _batch_statistics(model: nn.Module, shape) -> None:
    """Every BN's running statistics set to one batch's (momentum None: a cumulative average of one batch),
    weights untouched: the model at init as evaluation sees it after BN calibration."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.momentum = None
        bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *shape, generator=torch.Generator().manual_seed(4)))
    for bn in norms:
        bn.momentum = 0.1


@pytest.mark.parametrize("name", [*MODELS, *USER_MODELS])
def test_the_fold_is_exact_in_float64_at_init(name):
    """The fold's algebra: in float64 the exported model's eval logits equal the branched model's to rounding,
    even with the default BN statistics of a fresh model (whose activations grow layer by layer)."""
    base, shape = _model(name)
    rep = reparameterize(base, k=1, conv1x1=True, identity=True).double().eval()
    plain = rep.export().eval()
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected, got = rep(x), plain(x)
    assert (got - expected).abs().max().item() <= 1e-9 * expected.abs().max().item()


@pytest.mark.parametrize("name", [*MODELS, *USER_MODELS])
@pytest.mark.parametrize("trained", [False, True])
def test_the_exported_model_computes_what_the_branched_model_computes(name, trained):
    """float32, eval mode. After SGD steps the exported model's logits equal the branched model's to 1e-5 of the
    largest logit. At init (weights as drawn, BN statistics of one batch) untrained networks amplify rounding,
    so there the export must be as close to the exact (float64) branched logits as the branched model's own
    float32 logits are, within a factor 2. Either way it is the base's class, keys, parameters and MACs."""
    base, shape = _model(name)
    rep = reparameterize(base, k=1, conv1x1=True, identity=True)
    assert rep.pairs and all(rep.branched().values())
    if trained:
        _train(rep, shape)
    else:
        _batch_statistics(rep, shape)
    rep.eval()
    plain = rep.export().eval()
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = rep(x), plain(x)
        exact = copy.deepcopy(rep).double()(x.double())
    if trained:
        assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    else:
        own = (expected.double() - exact).abs().max().item()
        assert (got.double() - exact).abs().max().item() <= 2 * own + 1e-7
    assert type(plain) is type(base) and list(plain.state_dict()) == list(base.state_dict())
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in base.parameters())
    assert profile_macs(plain, shape)[0] == profile_macs(base, shape)[0]


def test_every_branch_kind_folds_on_grouped_strided_and_depthwise_convs():
    """One RepConv per geometry, k = 2, with every BN's statistics and affine parameters random: the folded conv
    + BN equals the branch sum, and the branches are the ones the geometry allows."""
    gen = torch.Generator().manual_seed(3)
    cases = [(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), ["kxk", "kxk", "1x1", "identity"]),  # depthwise
             (nn.Conv2d(8, 8, 3, 1, 1, groups=2, bias=True), ["kxk", "kxk", "1x1", "identity"]),  # grouped, bias
             (nn.Conv2d(4, 8, 5, 2, 2, bias=False), ["kxk", "kxk", "1x1"]),  # strided, wider
             (nn.Conv2d(8, 8, 1, bias=False), ["kxk", "kxk", "identity"]),  # pointwise
             (nn.Conv2d(8, 8, 3, 1, 0, bias=False), ["kxk", "kxk"])]  # valid padding: no 1x1, no identity
    for conv, branches in cases:
        rep = RepConv(conv, nn.BatchNorm2d(conv.out_channels), k=2, conv1x1=True, identity=True)
        assert rep.branch_names() == branches
        for bn in [m for m in rep.modules() if isinstance(m, nn.BatchNorm2d)]:
            bn.weight.data = torch.rand(bn.num_features, generator=gen) + 0.5
            bn.bias.data = torch.randn(bn.num_features, generator=gen)
            bn.running_mean = torch.randn(bn.num_features, generator=gen)
            bn.running_var = torch.rand(bn.num_features, generator=gen) + 0.5
        rep.eval()
        x = torch.randn(2, conv.in_channels, 9, 9, generator=gen)
        conv_f, bn_f = rep.folded()
        with torch.no_grad():
            assert torch.allclose(bn_f.eval()(conv_f(x)), rep(x), atol=1e-5)
            kernel, bias = rep.fused()  # the fused conv by hand: F.conv2d with the kernel, plus the bias
            direct = F.conv2d(x.double(), kernel, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            assert torch.allclose(direct + bias.reshape(1, -1, 1, 1), rep(x).double(), atol=1e-5)


class _NoBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)  # ReLU after it, no BN: left unbranched
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        return self.head(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_a_conv_without_batchnorm_is_left_unbranched_and_listed():
    pairs, skipped = conv_bn_pairs(_NoBN())
    assert pairs == [("conv", "bn")] and skipped == {"stem": "no BatchNorm2d reads its output alone"}
    rep = reparameterize(_NoBN())
    assert "reparam: 1 conv left unbranched (no BatchNorm2d reads its output alone): stem" in rep.describe()


def test_a_model_with_nothing_to_branch_is_a_one_line_error_naming_a_conv():
    from netaug.errors import UserError

    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=True), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(UserError, match=r"^training\.mode: reparam finds no conv -> BatchNorm2d pair to branch in "
                                        r"Sequential \(e\.g\. 0: no BatchNorm2d reads its output alone\); "):
        reparameterize(model)


def test_the_model_given_is_not_modified():
    base, shape = _model("mobilenetv2_tiny")
    before = copy.deepcopy(base.state_dict())
    rep = reparameterize(base)
    _train(rep, shape, steps=1)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


# ---------------------------------------------------------------------------- the mode, everywhere a mode goes
def test_mode_reparam_trains_the_branched_model_and_exports_the_base_with_its_int8_model(digits16, tmp_path):
    """The trainer in mode reparam: its FLOPs are the branched model's (more than plain training's), its export is
    the base's class and computes the branched model's eval logits; the int8 model of that export stays within
    2 points of its fp32 ONNX model on digits test."""
    import dataclasses

    from netaug.config import load_space
    from netaug.data import make_batcher
    from netaug.train.int8 import int8_model
    from netaug.train.trainer import Trainer

    cfg = load_space(None, ["data.resolution=16", "training.batch_size=64", "training.epochs=4",
                            "training.mode=reparam", "reparam.k=1"])
    trainer = Trainer(cfg, digits16)
    history = trainer.fit()
    plain = Trainer(dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, mode="baseline")), digits16)
    plain.train_epoch()
    assert history[-1].val["top1"] > 0.5
    assert trainer.train_flops / len(history) > 1.5 * plain.train_flops  # branches cost compute while training
    base = trainer.export_base()
    assert type(base).__name__ == "MobileNetV2" and list(base.state_dict()) == list(plain.model.state_dict())
    x = digits16.test.images[:64].float()
    with torch.no_grad():
        torch.testing.assert_close(base(x), trainer.model.eval()(x), rtol=1e-5, atol=1e-5)
    cfg = dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, calib_images=128, qat_epochs=0))
    got = int8_model(base, cfg, digits16, make_batcher(digits16, cfg.data), tmp_path / "m")
    assert abs(got["int8_test_top1"] - got["fp32_onnx_test_top1"]) <= 0.02
    assert got["fp32_onnx_test_top1"] == pytest.approx(trainer.evaluate("test")["base"].top1, abs=2 / 359)


@pytest.mark.parametrize(("overrides", "message"), [
    (["reparam.k=-1"], r"^reparam\.k: must be >= 0, got -1$"),
    (["reparam.k=0", "reparam.conv1x1=false", "reparam.identity=false"], r"^reparam\.k: 0 with conv1x1 and identity"),
    (["reparam.conv1x1=maybe"], r"^reparam\.conv1x1: expected true or false"),
    (["training.mode=reparam", "sharing.enabled=true"], r"^sharing\.enabled: share-then-unshare needs a NetAug mode"),
    (["sweep.reparam_k.low=3", "sweep.reparam_k.high=1"], r"^sweep\.reparam_k\.low: must not exceed"),
])
def test_bad_reparam_keys_are_one_line_errors_naming_the_key(overrides, message):
    from netaug.config import load_space
    from netaug.errors import UserError

    with pytest.raises(UserError, match=message):
        load_space(None, overrides)


def test_the_trainer_cli_trains_reparam_and_says_what_it_branched(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "netaug.train", "--space", "spaces/mbv2.yaml", "--mode", "reparam",
                           "--set", "training.epochs=1", "--set", "reparam.k=2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reparam: 52 conv -> BN pairs branched" in proc.stdout and "branched while training" in proc.stdout
    from netaug.train.export import load_exported

    model, meta = load_exported(out / "base.pt")
    assert type(model).__name__ == "MobileNetV2" and meta["mode"] == "reparam"
    assert json.loads((out / "metrics.json").read_text())["mode"] == "reparam"
