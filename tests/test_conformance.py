"""Conformance: every way of augmenting a built-in network computes what the former hand-written twin computed.

The reference is the built-in networks' own augmenter as it was before one torch.fx augmenter served every
model (tests/reference/twin.py, kept here only as an oracle; `bench/official_equivalence.py` holds both to the
official NetAug code). For each built-in, at the official `mid_width` and `init` and at the other value of
each, through each augmentation path, on the same seeds: the initial weights, the draws of random
sub-networks, logits, gradients and BatchNorm buffers in train mode, logits in eval mode, channel sorting
(both scopes), export, and share-then-unshare must agree bit for bit.
"""

from __future__ import annotations

import json

import pytest
import torch
from reference.twin import augment as reference_augment
from torch.nn.utils import parametrize

from netaug.augment import augment, augment_module
from netaug.models import build_model
from netaug.models.weight_sharing import share_weights

BUILT_INS = {"mobilenetv2_tiny": {}, "mobilenetv2": {"width_mult": 0.35}, "mobilenetv3": {"width_mult": 0.35},
             "proxylessnas_mobile": {"width_mult": 0.35}, "mcunet": {"width_mult": 0.35}}
WIDTHS, EXPANDS = [1.0, 1.8, 2.6], [1.0, 1.6, 2.2]
RES = 32


def by_augment(base, mid_width, init):
    return augment(base, WIDTHS, EXPANDS, mid_width, init)


def by_augment_module(base, mid_width, init):  # the built-in taken as any nn.Module
    return augment_module(base, WIDTHS, EXPANDS, torch.zeros(1, 3, RES, RES), mid_width, init)


PATHS = {"augment": by_augment, "augment_module": by_augment_module}


def state(model) -> dict[str, torch.Tensor]:
    net = model.base.net if hasattr(model, "base") else model
    return net.state_dict()


def assert_same_tensors(ours: dict, ref: dict, what: str) -> None:
    assert ours.keys() == ref.keys(), what
    for k in ref:
        assert torch.equal(ours[k], ref[k]), f"{what}: {k}"


def grads(model) -> dict[str, torch.Tensor]:
    net = model.base.net if hasattr(model, "base") else model
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in net.named_parameters()}


SETTINGS = [("input", "augmented"), ("block", "base")]  # the official one, and the other value of each key


@pytest.fixture(params=[(name, mid, init) for name in BUILT_INS for mid, init in SETTINGS], ids=lambda p: "-".join(p))
def case(request):
    name, mid_width, init = request.param
    torch.manual_seed(0)
    base = build_model(name, 10, 3, resolution=RES, **BUILT_INS[name])
    return base, mid_width, init


def test_drawn_sub_networks_compute_what_the_reference_computes(case):
    base, mid_width, init = case
    official = (mid_width, init) == ("input", "augmented")  # both paths there; `augment` alone elsewhere
    for path in PATHS if official else ["augment"]:
        check_drawn_sub_networks(base, mid_width, init, PATHS[path])


def check_drawn_sub_networks(base, mid_width, init, build) -> None:
    torch.manual_seed(1)
    ours = build(base, mid_width, init)
    torch.manual_seed(1)
    ref = reference_augment(base, WIDTHS, EXPANDS, mid_width, init)
    assert_same_tensors(state(ours), state(ref), "initial weights")  # the same random numbers, the same order
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    y = torch.arange(4) % 10
    g_ours, g_ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for kind in ("min", "max", "min_w", "random", "random"):
        config = ours.set_active(kind, g_ours)
        ref_config = ref.set_active(kind, g_ref)
        assert ours.normalize(ref_config) == config, kind  # the same draws (the official order)
        assert ours.set_active(json.loads(json.dumps(ours.named(config)))) == config  # named configs round-trip
        for model in (ours, ref):
            model.train()
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
        assert_same_tensors(grads(ours), grads(ref), f"{kind}: gradients")
        assert_same_tensors(state(ours), state(ref), f"{kind}: BatchNorm statistics after a training pass")
        ours.eval(), ref.eval()
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x)), f"{kind}: eval logits"
        assert_same_tensors(ours.export(config).state_dict(), ref.export(ref_config).state_dict(), f"{kind}: export")
    assert ours.export("min").spec == base.spec and type(ours.export("min")) is type(base)


@pytest.mark.parametrize("scope", ["all", "augmented"])
def test_sorting_permutes_what_the_reference_permutes(case, scope):
    base, mid_width, init = case
    torch.manual_seed(1)
    ours = by_augment(base, mid_width, init)
    torch.manual_seed(1)
    ref = reference_augment(base, WIDTHS, EXPANDS, mid_width, init)
    with torch.no_grad():  # an importance order of its own in every layer
        gen = torch.Generator().manual_seed(4)
        noise = {k: torch.rand(v.shape, generator=gen) for k, v in state(ref).items() if v.is_floating_point()}
        for model in (ours, ref):
            for k, v in state(model).items():
                if k in noise:
                    v.mul_(noise[k])
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ours, ref)]
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    for model, opt in zip((ours, ref), opts):
        model.set_active("max")
        model(x).square().mean().backward()
        opt.step()  # momentum buffers to carry along
        model.sort_channels(opt, scope=scope, momentum="follow")
    assert_same_tensors(state(ours), state(ref), f"sorting ({scope})")
    ours_momenta = [opts[0].state[p]["momentum_buffer"] for p in ours.parameters()]
    ref_momenta = [opts[1].state[p]["momentum_buffer"] for p in ref.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(ours_momenta, ref_momenta))


@pytest.mark.parametrize("name", BUILT_INS)
def test_share_then_unshare_shares_what_the_reference_shares(name):
    torch.manual_seed(0)
    base = build_model(name, 10, 3, resolution=RES, **BUILT_INS[name])
    torch.manual_seed(1)
    ours = by_augment(base, "input", "base")
    torch.manual_seed(1)
    ref = reference_augment(base, WIDTHS, EXPANDS, "input", "base")
    groups = share_weights(ours.base.net)
    share_weights(ref)
    shared = lambda net: sorted(n for n, m in net.named_modules() if parametrize.is_parametrized(m))  # noqa: E731
    assert shared(ours.base.net) == shared(ref) and (len(groups) > 0) == (len(shared(ref)) > 0)
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    ours.eval(), ref.eval()
    for kind in ("min", "max"):
        ours.set_active(kind), ref.set_active(kind)
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x)), kind


def test_committed_positional_astar_files_load_as_the_reference_reads_them():
    """studies/convergence/astar/*.json hold a* as the former twin's positional config (one expand per block, a
    feature slot); they load through `netaug.augment.legacy`, naming the groups the reference widened alike."""
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "studies" / "convergence" / "astar").glob("*.json"))
    assert files
    for path in files:
        saved = json.loads(path.read_text())
        name, width = saved["base"].split("@")
        base = build_model(name, 10, 1, resolution=16, width_mult=float(width))
        ours = augment(base, WIDTHS, [1.0, 1.6, 2.2, 2.8])
        ref = reference_augment(base, WIDTHS, [1.0, 1.6, 2.2, 2.8])
        config = ours.set_ceiling(saved["arch"])  # as a Trainer's `largest`
        assert ours.config("max") == config and ours.normalize(ours.named(config)) == config
        assert ours.export(config).spec == ref.spec_of(ref.normalize(saved["arch"]))
