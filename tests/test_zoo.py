"""NetAug on torchvision and timm models as their libraries build them (the `zoo` extra, in an environment
of its own: README "Install"); skipped where torchvision or timm do not import."""

from __future__ import annotations

import copy

import pytest
import torch

torchvision = pytest.importorskip("torchvision", reason="the zoo extra (torchvision) is not installed here")
timm = pytest.importorskip("timm", reason="the zoo extra (timm) is not installed here")

from netaug.augment import augment_module  # noqa: E402

GRID = [1.0, 2.0, 3.0]
ZOO = {
    "torchvision mobilenet_v2(width_mult=0.35)": lambda: torchvision.models.mobilenet_v2(width_mult=0.35,
                                                                                      num_classes=10),
    "torchvision mnasnet0_5": lambda: torchvision.models.mnasnet0_5(num_classes=10),
    "torchvision mobilenet_v3_small (SE)": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
    "timm mobilenetv3_small_050 (SE, BatchNormAct2d)": lambda: timm.create_model("mobilenetv3_small_050",
                                                                                 num_classes=10),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_min_is_exact_and_export_loads_back(name):
    torch.manual_seed(0)
    model = ZOO[name]()
    aug = augment_module(model, GRID, GRID, torch.zeros(1, 3, 64, 64))
    x = torch.randn(4, 3, 64, 64)
    for train in (True, False):
        model.train(train), aug.train(train), aug.set_active("min")
        ref, twin = copy.deepcopy(model), copy.deepcopy(aug)
        torch.manual_seed(1)
        want = ref(x)
        torch.manual_seed(1)
        assert (twin(x) - want).abs().max().item() <= 1e-6, train
    aug.train()
    aug.set_active("max")
    aug(x).logsumexp(1).mean().backward()  # the widest model trains
    aug.eval()
    config = aug.set_active("random", torch.Generator().manual_seed(0))
    assert (aug.export(config).eval()(x) - aug(x)).abs().max().item() <= 1e-5
    fresh = ZOO[name]()
    exported = aug.export("min")
    assert type(exported) is type(model)  # the library's own class
    fresh.load_state_dict(exported.state_dict(), strict=True)
    aug.set_active("min")
    assert (fresh.eval()(x) - aug(x)).abs().max().item() <= 1e-6
    before = aug.set_active("max") and aug(x)
    aug.sort_channels(None)
    torch.testing.assert_close(aug(x), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_reparam_folds_into_the_librarys_own_class(name):
    """Mode reparam on a library's model: after SGD steps, the export (the library's class, its keys) computes the
    branched model's eval logits; convs that no plain BatchNorm2d follows (SE convs) are left unbranched and named;
    a model with none (timm's BatchNormAct2d everywhere) is one line naming a conv."""
    from netaug.errors import UserError
    from netaug.reparam import reparameterize

    torch.manual_seed(0)
    model = ZOO[name]()
    if "timm" in name:  # every BN is timm's BatchNormAct2d (BN + activation): no plain pair to fold into
        with pytest.raises(UserError, match=r"^training\.mode: reparam finds no conv -> BatchNorm2d pair .* "
                                            r"\(e\.g\. conv_stem: no BatchNorm2d reads its output alone\)"):
            reparameterize(model)
        return
    rep = reparameterize(model, k=1, conv1x1=True, identity=True)
    assert rep.pairs
    opt = torch.optim.SGD(rep.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(8, 3, 64, 64, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(rep.train()(x), y).backward()
        opt.step()
    plain = rep.export()
    assert type(plain) is type(model) and list(plain.state_dict()) == list(model.state_dict())
    x = torch.randn(4, 3, 64, 64, generator=gen)
    with torch.no_grad():
        want, got = rep.eval()(x), plain.eval()(x)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    assert all(why for why in rep.skipped.values())
