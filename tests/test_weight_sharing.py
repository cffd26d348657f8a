"""Share-then-unshare: equal weights and the 1/sqrt(L) gradient while shared, divergence after."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from netaug.augment import augment
from netaug.models import build_model, profile_macs
from netaug.models.weight_sharing import (
    deltas,
    identical_block_groups,
    is_shared,
    plain_state_dict,
    release,
    share_weights,
)
from netaug.train import Trainer


def test_identical_groups_of_mobilenetv2_tiny():
    spec = build_model("mobilenetv2_tiny", 10, 1, resolution=16).spec
    groups = identical_block_groups(spec)
    # MBV2 stages of 2, 3, 4, 3, 3 blocks: blocks 2..n of each stage form a group (the 2-block stage's is too small).
    assert [len(g) for g in groups] == [2, 3, 2, 2]
    for g in groups:
        assert len({spec.blocks[i] for i in g}) == 1 and all(spec.blocks[i].residual for i in g)


def test_shared_phase_equal_weights_and_w0_gradient():
    torch.manual_seed(0)
    model = build_model("mobilenetv2_tiny", 10, 1, resolution=16)
    groups = share_weights(model)
    assert groups and is_shared(model)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    with parametrize.cached():  # one materialised w_i per conv, whose gradient g_i we can read
        weights = {id(c): c.weight for g in groups for c in g}
        for w in weights.values():
            w.retain_grad()
        F.cross_entropy(model(x), y).backward()
    for convs in groups:
        first = weights[id(convs[0])]
        assert all(torch.equal(weights[id(c)], first) for c in convs)
        w0 = convs[0].parametrizations.weight[0].w0
        expected = sum(weights[id(c)].grad for c in convs) / math.sqrt(len(convs))
        assert torch.allclose(w0.grad, expected, atol=1e-6, rtol=1e-5)
        assert all(c.parametrizations.weight.original.grad is None for c in convs)  # w~_i frozen


def test_unsharing_lets_weights_diverge_and_export_is_materialised():
    torch.manual_seed(0)
    model = build_model("mobilenetv2_tiny", 10, 1, resolution=16)
    groups = share_weights(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(torch.equal(c.weight, g[0].weight) for g in groups for c in g)  # still shared
    release(model)
    assert not is_shared(model)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(not torch.equal(g[0].weight, g[1].weight) for g in groups)  # diverged
    plain = plain_state_dict(model)
    for g in groups:
        for conv in g:
            name = next(n for n, m in model.named_modules() if m is conv)
            w0, scale = conv.parametrizations.weight[0].w0, conv.parametrizations.weight[0].scale
            expected = w0 / math.sqrt(len(g)) + conv.parametrizations.weight.original
            assert scale == pytest.approx(1 / math.sqrt(len(g)))
            assert torch.allclose(plain[f"{name}.weight"], expected, atol=1e-7, rtol=1e-6)  # float32 rounding
    fresh = build_model("mobilenetv2_tiny", 10, 1, resolution=16)
    fresh.load_state_dict(plain)  # plain keys, plain shapes
    model.eval(), fresh.eval()
    assert torch.allclose(fresh(x), model(x), atol=1e-6)
    assert profile_macs(model, (1, 16, 16)) == profile_macs(fresh, (1, 16, 16))


def test_sharing_composes_with_augmented_models():
    torch.manual_seed(0)
    aug = augment(build_model("mobilenetv2_tiny", 10, 1, resolution=16), [1, 2], [1, 2])
    groups = share_weights(aug.base.net)  # the built-in network inside the augmented model
    assert len(deltas(aug)) == sum(len(g) for g in groups)
    aug.eval()
    x = torch.randn(4, 1, 16, 16)
    for kind in ("min", "max"):
        aug.set_active(kind)
        exported = aug.export(kind).eval()
        assert torch.allclose(exported(x), aug(x), atol=1e-5), kind
    aug.sort_channels()  # skips shared blocks instead of breaking them
    assert all(torch.equal(c.weight, g[0].weight) for g in groups for c in g)


@pytest.mark.parametrize("mode", ["baseline", "netaug"])
def test_trainer_releases_after_share_fraction_and_exports_plain(digits16, fast_cfg, mode):
    fast_cfg.sharing.enabled, fast_cfg.sharing.share_fraction = True, 0.5
    fast_cfg.training.epochs = 1
    trainer = Trainer(fast_cfg, digits16, mode=mode)
    assert trainer.release_step == round(0.5 * trainer.steps_per_epoch)
    batches = trainer.batcher.batches(digits16.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    for step, (x, y) in enumerate(batches):
        if step == trainer.steps_per_epoch:
            break
        trainer.step(x, y)
        assert is_shared(trainer.model) == (step < trainer.release_step)
    state = trainer.state_dict()
    assert not any(".parametrizations." in k for k in state["model"])
    exported = trainer.export_base()
    assert not any(parametrize.is_parametrized(m) for m in exported.modules())
