"""NetAug on a user's own nn.Module (netaug.augment.graph / generic): groups found by tracing, the base
computed exactly, the hand-written MobileNetV2-Tiny twin matched, weights that load back into the
user's class, one-line errors for what cannot be widened, and the CLI and pipeline on such a model."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import ROOT, TINY_PIPELINE

from netaug.augment import augment_module, recalibrate_bn
from netaug.augment.generic import ModuleNet
from netaug.config import load_space
from netaug.errors import UserError
from netaug.models.user import load_factory
from netaug.spos.space import PathSpace
from netaug.train.export import load_exported

MODELS = ROOT / "spaces" / "models"
USER_MODELS = {  # factory reference, kwargs, input shape
    "resnet8": (f"{MODELS}/resnet8.py:resnet8", {"num_classes": 10, "in_channels": 3}, (3, 32, 32)),
    "dscnn": (f"{MODELS}/dscnn.py:dscnn", {"num_classes": 12, "in_channels": 1}, (1, 49, 10)),
    "se_net": (f"{MODELS}/se_net.py:se_net", {"num_classes": 10, "in_channels": 1}, (1, 16, 16)),
    "mobilenetv2_tiny": ("netaug.models:build_model", {"name": "mobilenetv2_tiny", "num_classes": 10,
                                                       "in_channels": 1, "resolution": 16}, (1, 16, 16)),
}
GRID = [1.0, 2.0, 3.0]


def _user(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    ref, kwargs, shape = USER_MODELS[name]
    torch.manual_seed(0)
    return load_factory(ref)(**kwargs), shape


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine weights, so eval mode tests them too."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", list(USER_MODELS))
@pytest.mark.parametrize("train", [True, False])
def test_min_subnetwork_is_the_users_model(name, train):
    model, shape = _user(name)
    _randomise_bn(model)
    aug = augment_module(model, GRID, GRID, torch.zeros(1, *shape))
    x = torch.randn(6, *shape)
    model.train(train), aug.train(train)
    ref_model, twin = copy.deepcopy(model), copy.deepcopy(aug)  # train mode moves BN statistics: fresh copies
    torch.manual_seed(1)
    want = ref_model(x)
    torch.manual_seed(1)  # dropout draws the same masks
    got = twin(x)
    assert (got - want).abs().max().item() <= 1e-6
    if train:  # the running statistics the base updates are the user's model's
        for (k, a), b in zip(ref_model.state_dict().items(), twin.export("min").state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_groups_follow_residuals_se_and_flatten():
    resnet, shape = _user("resnet8")
    aug = augment_module(resnet, GRID, GRID, torch.zeros(1, *shape))
    producers = [sorted(g.producers) for g in aug.graph.free_groups]
    # the stem and stack 1's second conv meet at stack 1's add; a 1x1 shortcut and conv2 at the later adds
    assert ["stacks.0.conv2", "stem.0"] in producers and ["stacks.2.conv2", "stacks.2.shortcut"] in producers
    assert (aug.num_width_groups, aug.num_expand_groups) == (6, 0) and "fc" not in sum(producers, [])
    se, shape = _user("se_net")
    aug = augment_module(se, GRID, GRID, torch.zeros(1, *shape))
    by_producer = {p: g for g in aug.graph.free_groups for p in g.producers}
    assert by_producer["block1.expand.0"] is by_producer["block1.se.expand"]  # the SE gate multiplies the middle
    assert by_producer["block1.expand.0"].id in aug.middle_groups
    squeeze = by_producer["block1.se.reduce"].id  # the SE squeeze follows the middle (derived), not drawn
    assert aug.derived[squeeze] == by_producer["block1.expand.0"].id and squeeze not in aug.width_groups
    assert "attention" not in by_producer  # a one-channel spatial gate broadcasts: its channel stays fixed
    fc = aug.graph.bindings["fc"]
    assert fc.inp == (by_producer["down.0"].id, 16)  # flatten of 16 x 4 x 4: 16 features per channel
    widths = aug.group_widths(aug.config("max"))
    assert dict(aug.base.net.named_modules())["fc"].in_features == 16 * widths[fc.inp[0]]


@pytest.mark.parametrize("name", ["resnet8", "se_net"])
def test_export_loads_into_the_users_class(name):
    model, shape = _user(name)
    aug = augment_module(model, GRID, GRID, torch.zeros(1, *shape))
    with torch.no_grad():
        for p in aug.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # "trained" weights, wider ones included
    aug.eval()
    x = torch.randn(3, *shape)
    exported = aug.export("min")
    assert type(exported) is type(model)  # the user's own class, not a wrapper
    ref, kwargs, _ = USER_MODELS[name]
    fresh = load_factory(ref)(**kwargs)
    fresh.load_state_dict(exported.state_dict(), strict=True)
    aug.set_active("min")
    assert (fresh.eval()(x) - aug(x)).abs().max().item() <= 1e-6
    config = aug.set_active("random", torch.Generator().manual_seed(3))
    wide = aug.export(config).eval()
    assert type(wide) is type(model)
    assert (wide(x) - aug(x)).abs().max().item() <= 1e-5


def test_sorting_keeps_the_largest_models_function_and_moves_momentum():
    model, shape = _user("se_net")
    aug = augment_module(model, GRID, GRID, torch.zeros(1, *shape))
    aug.set_active("max")
    opt = torch.optim.SGD(aug.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, *shape)
    aug.train()
    aug(x).square().mean().backward()
    opt.step()
    aug.eval()
    before = aug(x)
    conv = dict(aug.base.net.named_modules())["block1.expand.0"]
    momentum = opt.state[conv.weight]["momentum_buffer"].clone()
    weight = conv.weight.detach().clone()
    aug.sort_channels(opt, "all", "follow")
    torch.testing.assert_close(aug(x), before, rtol=1e-5, atol=1e-5)
    project = dict(aug.base.net.named_modules())["block1.project.0"]
    importance = project.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])  # most important first
    perm = [int(torch.nonzero((weight == row).all(dim=(1, 2, 3)))[0]) for row in conv.weight.detach()]
    assert torch.equal(opt.state[conv.weight]["momentum_buffer"], momentum[perm])
    assert sorted(perm) != perm  # something moved


def test_recalibration_covers_batchnorm1d():
    model, shape = _user("se_net")
    aug = augment_module(model, GRID, GRID, torch.zeros(1, *shape))
    aug.set_active("max")
    batches = [torch.randn(16, *shape) for _ in range(3)]
    probe = copy.deepcopy(aug).eval()  # what recalibration sees: batch statistics, nothing updated
    for m in probe.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(), setattr(m, "momentum", 0.0)
    seen = []
    dict(probe.base.net.named_modules())["bn"].register_forward_pre_hook(lambda _m, i: seen.append(i[0]))
    with torch.no_grad():
        for xb in batches:
            probe(xb)
    recalibrate_bn(aug, batches)
    bn = dict(aug.base.net.named_modules())["bn"]  # BatchNorm1d after fc, at its widest
    c = seen[0].shape[1]
    assert c == bn.num_features > 32
    torch.testing.assert_close(bn.running_mean[:c], torch.stack([s.mean(0) for s in seen]).mean(0))
    torch.testing.assert_close(bn.running_var[:c], torch.stack([s.var(0, unbiased=False) for s in seen]).mean(0))


def test_path_space_and_ceiling_use_groups():
    model, shape = _user("se_net")
    aug = augment_module(model, GRID, [1.0, 2.0], torch.zeros(1, *shape))
    space = PathSpace.from_grids(aug, [1.0, 2.0], [1.0, 2.0])
    assert len(space.width_choices) == aug.num_width_groups and len(space.expand_choices) == aug.num_expand_groups
    path = space.sample(torch.Generator().manual_seed(0))
    aug.set_ceiling(path)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        w, e = aug.config("random", g)
        assert all(a <= b for a, b in zip(w + e, path[0] + path[1]))
    assert aug.config("min_w", g)[0] == (1.0,) * aug.num_width_groups


# ---------------------------------------------------------------------------- what cannot be widened
class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.mix = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.mix(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        b, c, h, w = x.shape
        x = self.conv(x).view(b, 2, 4, h, w).transpose(1, 2).reshape(b, 8, h, w)  # channel shuffle
        return self.fc(x.mean((2, 3)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow
            y = -y
        return self.fc(y.mean((2, 3)))


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.softmax(self.conv(x), dim=1).mean((2, 3)))


@pytest.mark.parametrize("model, message", [
    (Concat(), r"^model.module: layer cat concatenates along channels.*model.freeze: \['a', 'b'\]$"),
    (Shuffle(), r"^model.module: layer view reshapes across the channel dimension.*model.freeze: \['conv'\]$"),
    (Branchy(), r"^model.module: Branchy does not trace with torch.fx .*data-dependent control flow"),
    (Softmaxed(), r"^model.module: layer softmax calls softmax, whose channel use is unknown: it cannot be "
                  r"augmented.*model.freeze: \['conv'\]$"),
])
def test_what_cannot_be_widened_is_a_one_line_error(model, message):
    with pytest.raises(UserError, match=message) as info:
        augment_module(model, GRID, GRID, torch.zeros(1, 1, 8, 8))
    assert "\n" not in str(info.value)


def test_freezing_makes_a_concat_safe():
    model = Concat().eval()
    aug = augment_module(model, GRID, GRID, torch.zeros(1, 1, 8, 8), freeze=["a", "b"]).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(aug(x), model(x))
    aug.set_active("max")
    modules = dict(aug.base.net.named_modules())
    assert (modules["a"].out_channels, modules["mix"].in_channels, modules["mix"].out_channels) == (4, 8, 18)
    assert aug(x).shape == (2, 3)
    with pytest.raises(UserError, match=r"^model.freeze: 'nope' is not a conv or linear layer"):
        augment_module(model, GRID, GRID, torch.zeros(1, 1, 8, 8), freeze=["nope"])


@pytest.mark.parametrize("overrides, message", [
    (["model.module=spaces/models/resnet8.py:resnet8", "model.name=mcunet"],
     "model.module: give exactly one of model.name, model.spec and model.module"),
    (["model.module=spaces/models/nope.py:f"], "model.module: no such file: spaces/models/nope.py"),
    (["model.module=resnet8"], "model.module: expected 'package.module:factory'"),
    (["model.kwargs={a: 1}"], "model.kwargs: applies to model.module only"),
    (["model.module=spaces/models/resnet8.py:resnet8", "model.width_mult=0.5"], "model.width_mult: a model.module"),
])
def test_bad_model_keys_exit_2_with_one_line(overrides, message):
    args = [sys.executable, "-m", "netaug.train", "--space", str(ROOT / "spaces" / "mbv2.yaml")]
    proc = subprocess.run(args + [a for o in overrides for a in ("--set", o)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), proc.stderr


def test_a_model_with_the_wrong_output_is_named(digits16):
    from netaug.train.trainer import build_base

    cfg = load_space(None, [f"model.module={MODELS}/dscnn.py:dscnn", "model.kwargs={num_classes: 12}",
                            "data.resolution=16"])
    with pytest.raises(UserError, match=r"^model.module: .*dscnn returns \(1, 12\) for one image; the dataset has 10"):
        build_base(cfg, digits16)


# ---------------------------------------------------------------------------- the CLI and the pipeline
def test_a_user_file_trains_with_netaug_and_its_base_loads_back(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "netaug.train", "--space", str(ROOT / "spaces" / "mbv2.yaml"), "--mode", "netaug",
         "--out", str(out), "--no-progress", "--set", f"model.module={MODELS}/resnet8.py:resnet8",
         "--set", "training.epochs=2", "--set", "training.bn_calib_batches=2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_base_top1"] > 0.3  # two epochs on 16 px digits: learning, far above chance
    archs = [json.loads(line) for line in (out / "archs.jsonl").read_text().splitlines()]
    assert archs and len(archs[0]["config"][0]) == 6  # every sampled sub-network, by width group
    model, payload = load_exported(out / "base.pt")
    fresh = load_factory(payload["source"]["factory"])(**payload["source"]["kwargs"])
    assert type(fresh).__name__ == "ResNet8" and payload["source"]["kwargs"] == {"num_classes": 10, "in_channels": 1}
    fresh.load_state_dict(torch.load(out / "base.pt", weights_only=True)["state_dict"], strict=True)
    x = torch.randn(4, 1, 16, 16)
    assert torch.equal(fresh.eval()(x), model(x))


def test_the_pipeline_runs_on_a_user_model(tmp_path):
    out = tmp_path / "run"
    sets = TINY_PIPELINE + ["sweep.concurrency=1", "sweep.trials=2", "sweep.epochs=2", "final.seeds=1",
                            "deploy.int8=true", f"model.module={MODELS}/se_net.py:se_net", "data.resolution=16"]
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space",
                           str(ROOT / "spaces" / "mbv2.yaml"), "--out", str(out), "--no-dashboard",
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    facts = json.loads((out / "final" / "model.json").read_text())
    assert facts["int8"]["test_top1"] > 0.3, facts
    model, payload = load_exported(out / "final" / "model.pt")
    assert isinstance(model, ModuleNet) and type(model.net).__name__ == "SENet"
    final = pq.read_table(out / "final.parquet")
    assert sorted(final.column("arm").to_pylist()) == ["baseline", "netaug_fixed", "winner"]
    assert set(final.column("status").to_pylist()) == {"TERMINATED"}, final.column("error").to_pylist()
    assert facts["onnx"]["top1_agreement"] == 1.0


def test_functional_batch_norm_is_refused_with_the_layer_name():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.scale = nn.Parameter(torch.ones(4))
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = F.batch_norm(self.conv(x), None, None, self.scale, None, True)
            return self.fc(y.mean((2, 3)))

    with pytest.raises(UserError, match=r"batch_norm.*model.freeze: \['conv'\]"):
        augment_module(Functional(), GRID, GRID, torch.zeros(1, 1, 8, 8))


# ---------------------------------------------------------------------------- share-then-unshare
class Stage(nn.Module):
    """A stem and a Sequential of three identical residual blocks (the precondition of sharing)."""

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, 1, 1, groups=2 * c, bias=False),
                                    nn.BatchNorm2d(2 * c), nn.ReLU())
            self.project = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.project(self.dw(self.expand(x)))

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(*(self.Block(8) for _ in range(3)))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_share_then_unshare_trains_identical_user_blocks_together_then_apart(digits16):
    from netaug.train.trainer import Trainer

    cfg = load_space(None, ["data.resolution=16", "training.epochs=2", "training.batch_size=64", "netaug.r=2",
                            "sharing.enabled=true", "sharing.share_fraction=0.5", "training.bn_calib_batches=2"])
    torch.manual_seed(0)
    trainer = Trainer(cfg, digits16, "netaug", base=ModuleNet(Stage(), (1, 16, 16)))
    layers = dict(trainer.model.base.net.named_modules())
    convs = [layers[f"blocks.{i}.expand.0"] for i in range(3)]
    batches = trainer.batcher.batches(digits16.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        trainer.step(*next(batches))
    assert trainer.shared and torch.equal(convs[0].weight, convs[1].weight) and torch.equal(convs[1].weight,
                                                                                            convs[2].weight)
    trainer.global_step = trainer.release_step
    for _ in range(2):
        trainer.step(*next(batches))
    assert not trainer.shared and not torch.equal(convs[0].weight, convs[1].weight)
    exported = trainer.export_base()
    fresh = Stage()
    fresh.load_state_dict(exported.net.state_dict(), strict=True)  # plain weights, the user's keys


def test_sharing_without_identical_blocks_is_one_line(digits16):
    from netaug.train.trainer import Trainer

    cfg = load_space(None, ["data.resolution=16", "sharing.enabled=true"])
    model, shape = _user("se_net")
    with pytest.raises(UserError, match=r"^sharing.enabled: the model.module has no identical consecutive blocks"):
        Trainer(cfg, digits16, "netaug", base=ModuleNet(model, shape))


def test_factory_arguments_follow_the_signature():
    from netaug.models.user import factory_kwargs

    def named(num_classes, in_channels=3, width=1.0):
        return None

    def star(*, weights=None, **kwargs):  # torchvision's and timm's style
        return None

    assert factory_kwargs(named, {"width": 2.0}, 10, 1) == {"width": 2.0, "num_classes": 10, "in_channels": 1}
    assert factory_kwargs(named, {"num_classes": 5}, 10, 1) == {"num_classes": 5, "in_channels": 1}
    assert factory_kwargs(star, {}, 10, 1) == {"num_classes": 10}
