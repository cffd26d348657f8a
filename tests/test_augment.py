"""Augmented models: prefix weights, export, sampling, channel sorting, BN recalibration, MACs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from netaug.augment import augment, recalibrate_bn, width_multipliers
from netaug.models import build_model, profile_macs


def active_spec(aug):
    """The static structure of the active sub-network (its export's spec, read from its layers)."""
    return aug.export(aug.active).spec


def test_width_multipliers():
    assert width_multipliers(3, 2) == [1.0, 2.0, 3.0]
    assert width_multipliers(2.2, 2) == [1.0, 1.6, 2.2]
    assert width_multipliers(2, 4) == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert width_multipliers(1, 3) == [1.0]
    with pytest.raises(ValueError):
        width_multipliers(0.5, 2)
    with pytest.raises(ValueError):
        width_multipliers(2, 0)


@pytest.fixture(params=["mobilenetv2_tiny", "proxylessnas_mobile", "mcunet"])
def pair(request):
    torch.manual_seed(0)
    base = build_model(request.param, 10, 3, resolution=32, **({"width_mult": 0.35}
                                                               if request.param != "mobilenetv2_tiny" else {}))
    mults = width_multipliers(3, 2)
    return base, augment(base, mults, mults)


def test_base_weights_are_the_leading_slice_of_the_augmented_weights(pair):
    base, aug = pair
    big = aug.base.net.state_dict()
    for key, value in base.state_dict().items():
        assert big[key].shape >= value.shape or big[key].dim() == 0
        assert torch.equal(big[key][tuple(slice(0, n) for n in value.shape)] if value.dim() else big[key], value), key
    assert sum(p.numel() for p in aug.parameters()) > 4 * sum(p.numel() for p in base.parameters())


def test_min_subnetwork_equals_the_base_and_max_is_wider(pair):
    base, aug = pair
    x = torch.randn(4, 3, 32, 32)
    base.eval(), aug.eval()
    aug.set_active("min")
    assert torch.equal(aug(x), base(x))
    aug.set_active("max")
    assert active_spec(aug).feature_ch == 3 * base.spec.feature_ch
    assert active_spec(aug).stem_ch == 3 * base.spec.stem_ch


def test_residual_blocks_keep_input_width_equal_to_output_width(pair):
    _, aug = pair
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        spec = aug.export(aug.set_active("random", gen)).spec
        for b in spec.blocks:
            if b.residual:
                assert b.in_ch == b.out_ch
        assert aug(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_random_config_is_reproducible_hashable_and_json(pair):
    _, aug = pair
    a = [aug.set_active("random", torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1] and hash(a[0]) == hash(a[1])
    others = {aug.config("random", torch.Generator().manual_seed(s)) for s in range(10)}
    assert len(others) > 5
    decoded = json.loads(json.dumps(a[0]))
    assert aug.set_active(decoded) == a[0]
    min_w = aug.config("min_w", torch.Generator().manual_seed(1))
    assert set(min_w[0]) == {1.0} and set(min_w[1]) > {1.0}
    with pytest.raises(ValueError):
        aug.set_active(((9.0,) * aug.num_width_groups, a[0][1]))


def test_export_after_training_steps_matches_the_min_subnetwork():
    torch.manual_seed(0)
    base = build_model("mobilenetv2_tiny", 10, 1, resolution=16)
    aug = augment(base, [1, 2, 3], [1, 2, 3])
    opt = torch.optim.SGD(aug.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        aug.set_active("min")
        nn.functional.cross_entropy(aug(x), y).backward()
        aug.set_active("random", gen)
        nn.functional.cross_entropy(aug(x), y).backward()
        opt.step()
    aug.set_active("min")
    exported = aug.export().eval()
    assert type(exported) is type(base) and exported.spec == base.spec
    aug.eval()
    diff = (exported(x) - aug(x)).abs().max().item()
    assert diff <= 1e-5, diff
    assert not torch.equal(exported.stem.conv.weight, base.stem.conv.weight)  # it did train


def _sorting_setup():
    torch.manual_seed(0)
    base = build_model("mobilenetv2_tiny", 10, 1, resolution=16)
    aug = augment(base, [1, 2, 3], [1, 2, 3])
    opt = torch.optim.SGD(aug.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 1, 16, 16)
    aug.set_active("max")
    aug(x).square().mean().backward()
    opt.step()  # creates momentum buffers
    with torch.no_grad():  # make the importance order non-trivial
        for block in aug.base.net.blocks:
            block.project.conv.weight.mul_(torch.rand_like(block.project.conv.weight))
    aug.eval()
    outs = {}
    for kind in ("max", "min"):
        aug.set_active(kind)
        seen: list[torch.Tensor] = []
        hook = aug.base.net.blocks[3].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.detach()))
        outs[kind] = aug(x)
        hook.remove()
        outs[f"{kind}_block"] = seen[0]
    return aug, opt, x, outs


def _moved(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """perm with after[i] == before[perm[i]] (rows of a weight are distinct)."""
    return [int((before == w).flatten(1).all(1).nonzero()[0]) for w in after]


@pytest.mark.parametrize("momentum", ["follow", "stay"])
def test_sorting_all_moves_augmented_channels_into_the_base_and_keeps_the_largest_function(momentum):
    """scope "all" (official): every middle channel ranked, so the base's prefix gains augmented
    channels and the base computes something else; the largest model computes the same function."""
    aug, opt, x, outs = _sorting_setup()
    block = aug.base.net.blocks[3]
    keep = aug.template[0].net.spec.blocks[3].mid_ch
    with torch.no_grad():  # an augmented channel that matters most: it must lead after the sort
        block.project.conv.weight[:, -1] *= 1000
    aug.set_active("max")
    outs["max"] = aug(x)
    dw_before = block.depthwise.conv.weight.clone()
    momentum_before = opt.state[block.depthwise.conv.weight]["momentum_buffer"].clone()
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    aug.sort_channels(opt, scope="all", momentum=momentum)
    aug.set_active("max")
    assert torch.allclose(aug(x), outs["max"], atol=1e-5, rtol=1e-4)
    base_block_out = []
    hook = block.register_forward_hook(lambda m, i, o: base_block_out.append(o.detach()))
    aug.set_active("min")
    aug(x)
    hook.remove()
    # the base changed: block 3's base output moves by a sizeable fraction of its scale
    assert (base_block_out[0] - outs["min_block"]).abs().max() > 0.1 * outs["min_block"].abs().max()
    perm = _moved(dw_before, block.depthwise.conv.weight)
    assert perm[0] == importance.numel() - 1  # the boosted augmented channel is now the base's first
    assert sum(p >= keep for p in perm[:keep]) > 0
    assert perm == torch.sort(importance, descending=True)[1].tolist()  # independent: rank of all channels
    after = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert bool((after[:-1] >= after[1:]).all())
    momentum_after = opt.state[block.depthwise.conv.weight]["momentum_buffer"]
    expected = momentum_before[perm] if momentum == "follow" else momentum_before
    assert torch.equal(momentum_after, expected)


def test_sorting_augmented_keeps_the_base_and_largest_functions_and_permutes_momentum():
    aug, opt, x, outs = _sorting_setup()
    block = aug.base.net.blocks[3]
    keep = aug.template[0].net.spec.blocks[3].mid_ch
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    momentum_before = opt.state[block.depthwise.conv.weight]["momentum_buffer"].clone()
    dw_before = block.depthwise.conv.weight.clone()
    aug.sort_channels(opt, scope="augmented")
    for kind in ("max", "min"):
        aug.set_active(kind)
        assert torch.allclose(aug(x), outs[kind], atol=1e-5, rtol=1e-4), kind
    after = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.equal(after[:keep], importance[:keep])  # the base's channels stay in place
    assert bool((after[keep:-1] >= after[keep + 1:]).all())  # the rest sorted, most important first
    # The same permutation moved the depthwise filters and their momentum together.
    perm = _moved(dw_before, block.depthwise.conv.weight)
    momentum_after = opt.state[block.depthwise.conv.weight]["momentum_buffer"]
    assert torch.equal(momentum_after, momentum_before[perm])


def test_official_draw_order_alternates_widths_and_expands():
    """A seeded generator gives the draws in the official order: stem width, then per block the
    stage's width at its first block and the block's expand factor, then the feature width; a choice
    with one option draws nothing."""
    aug = augment(build_model("mobilenetv2_tiny", 10, 1, resolution=16), [1, 2, 3], [1, 1.5, 2, 2.5])
    spec = aug.template[0].net.spec
    gen = torch.Generator().manual_seed(7)
    config = aug.config("random", gen)
    ref = torch.Generator().manual_seed(7)
    draw = lambda choices: choices[int(torch.randint(len(choices), (1,), generator=ref))]
    widths, expands = [draw(aug.width_mults)] + [None] * (spec.num_stages + 1), []
    for i, b in enumerate(spec.blocks):
        if i == 0 or b.stage != spec.blocks[i - 1].stage:
            widths[b.stage + 1] = draw(aug.width_mults)
        if b.mid_ch is not None:  # a block without an expansion has no middle group
            expands.append(draw(aug.expand_mults))
    widths[-1] = draw(aug.width_mults)
    assert config == (tuple(widths), tuple(expands))
    gen, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert aug.config("min_w", gen) == ((1.0,) * len(widths),
                                        tuple(draw(aug.expand_mults) for b in spec.blocks if b.mid_ch is not None))


def test_bn_recalibration_averages_biased_batch_statistics_of_the_active_subnetwork():
    """The official `reset_bn`: running mean/var = batch-size-weighted mean of each batch's mean and
    biased variance; channels outside the active sub-network and num_batches_tracked are untouched."""
    torch.manual_seed(0)
    aug = augment(build_model("mobilenetv2_tiny", 10, 1, resolution=16), [1, 2], [1, 2])
    config = aug.named("max")
    config["blocks.2.expand.conv"] = 1.0  # block 2 at its base middle width
    aug.set_active(config)
    bn = aug.base.net.blocks[2].depthwise.bn
    with torch.no_grad():
        bn.running_mean.fill_(7.0)
        bn.running_var.fill_(3.0)
    tracked = int(bn.num_batches_tracked)
    seen = []

    def keep_input(module, inputs, output) -> None:  # returns None, so the output is left alone
        seen.append(inputs[0].detach().clone())

    hook = bn.register_forward_hook(keep_input)
    batches = [torch.randn(32, 1, 16, 16), torch.randn(8, 1, 16, 16) * 2 + 1]
    aug.eval()
    recalibrate_bn(aug, batches)
    hook.remove()
    c = seen[0].shape[1]
    assert c < bn.num_features  # an actual slice of the shared BN
    sizes = torch.tensor([float(x.shape[0]) for x in seen])
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen])
    variances = torch.stack([x.permute(1, 0, 2, 3).flatten(1).var(dim=1, unbiased=False) for x in seen])
    weights = (sizes / sizes.sum())[:, None]
    assert torch.allclose(bn.running_mean[:c], (means * weights).sum(0), atol=1e-5)
    assert torch.allclose(bn.running_var[:c], (variances * weights).sum(0), atol=1e-4, rtol=1e-4)
    assert bool((bn.running_mean[c:] == 7.0).all()) and bool((bn.running_var[c:] == 3.0).all())
    assert int(bn.num_batches_tracked) == tracked
    assert bn.momentum == 0.1 and bn.training is False and not aug.training  # restored


def test_macs_of_a_subnetwork_equal_those_of_its_exported_static_model(pair):
    _, aug = pair
    config = aug.set_active("random", torch.Generator().manual_seed(5))
    macs_dynamic, params_dynamic = profile_macs(aug, (3, 32, 32))
    macs_static, params_static = profile_macs(aug.export(config), (3, 32, 32))
    assert (macs_dynamic, params_dynamic) == (macs_static, params_static)
    aug.set_active("min")
    assert profile_macs(aug, (3, 32, 32))[0] < macs_dynamic


def test_channels_last_dynamic_forward_matches_contiguous(pair):
    _, aug = pair
    aug.eval().set_active("random", torch.Generator().manual_seed(2))
    x = torch.randn(2, 3, 32, 32)
    ref = aug(x)
    aug_cl = aug.to(memory_format=torch.channels_last)
    assert torch.allclose(aug_cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5)


# ---------------------------------------------------------------- fidelity to the official NetAug
def test_official_grids_from_a_space_file():
    from netaug.augment import netaug_grids
    from netaug.config import load_space

    cfg = load_space(None, ["netaug.r=2.6", "netaug.s=2", "netaug.expand_r=2.8", "netaug.expand_s=3"]).netaug
    widths, expands = netaug_grids(cfg)
    assert widths == [1.0, 1.8, 2.6] and expands == pytest.approx([1.0, 1.6, 2.2, 2.8])
    same = load_space(None, ["netaug.r=2.5", "netaug.s=3"]).netaug
    assert netaug_grids(same) == ([1.0, 1.5, 2.0, 2.5], [1.0, 1.5, 2.0, 2.5])  # null: the width grid
    assert netaug_grids(load_space(None, ["netaug.augment_expand=false"]).netaug)[1] == [1.0]
    # the shipped preset holds the official MBV2-Tiny recipe (tinymbv2.sh, configs/netaug.yaml)
    from pathlib import Path

    official = load_space(Path(__file__).resolve().parents[1] / "spaces" / "netaug-official.yaml",
                          ["data.name=digits"])
    assert netaug_grids(official.netaug) == ([1.0, 1.8, 2.6], pytest.approx([1.0, 1.6, 2.2, 2.8]))
    n, t = official.netaug, official.training
    assert (n.mid_width, n.init, n.min_w_fraction, n.sort, n.aug_loss_weight) == (
        "input", "augmented", 0.5, "all", 1.0)
    assert (t.epochs - t.warmup_epochs, t.warmup_epochs, t.lr * 128 / t.batch_size, t.weight_decay,
            t.label_smoothing, t.momentum, t.nesterov) == (150, 5, 0.025, 4e-5, 0.1, 0.9, True)
    assert official.model.name == "mobilenetv2_tiny"


@pytest.mark.parametrize("mid_width", ["input", "block"])
def test_middle_width_follows_the_active_input_width_or_the_block(mid_width):
    """input: middle = base middle x (active input / base input) x expand factor (the official rule,
    widths and expands multiply); block: base middle x expand factor. Checked by direct arithmetic."""
    base = build_model("mobilenetv2_tiny", 10, 3, resolution=32)
    aug = augment(base, [1.0, 1.8, 2.6], [1.0, 1.6, 2.2, 2.8], mid_width=mid_width)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        config = aug.set_active("random", gen)
        spec = active_spec(aug)
        widths, expands = config
        in_ch = max(base.spec.stem_ch, int(base.spec.stem_ch * widths[0] + 0.5))
        middles = iter(expands)  # one middle group per block with an expansion, in block order
        for b, bb in zip(spec.blocks, base.spec.blocks):
            assert b.in_ch == in_ch
            if bb.mid_ch is not None:
                e = next(middles)
                factor = e * in_ch / bb.in_ch if mid_width == "input" else e
                want = bb.mid_ch if factor == 1 else max(bb.mid_ch, int(bb.mid_ch * factor + 0.5))
                assert b.mid_ch == want
            in_ch = b.out_ch
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            aug.eval()
            static = aug.export(config).eval()
            assert torch.allclose(aug(x), static(x), atol=1e-5)  # the static twin computes the same
            aug.train()
    aug.set_active("min")
    assert active_spec(aug) == base.spec
    n = {kind: sum(p.numel() for p in augment(base, [1.0, 1.8, 2.6], [1.0, 1.6, 2.2, 2.8], mid_width=kind)
                   .parameters()) for kind in ("input", "block")}
    assert n["input"] > 1.5 * n["block"]


def test_official_mbv2_tiny_augmented_model_has_the_official_size():
    """The official lists on MobileNetV2-Tiny (ImageNet, 144 px) give 5.83M params in the official
    code (mit-han-lab/tinyml); the middle width per block alone ("block") would give 3.17M."""
    base = build_model("mobilenetv2_tiny", 1000, 3, resolution=144)
    n = {kind: sum(p.numel() for p in augment(base, [1.0, 1.8, 2.6], [1.0, 1.6, 2.2, 2.8], mid_width=kind)
                   .parameters()) for kind in ("input", "block")}
    assert round(n["input"] / 1e6, 2) == 5.83 and round(n["block"] / 1e6, 2) == 3.17


def test_official_init_is_kaiming_uniform_over_the_augmented_shapes():
    """init=augmented: every conv is U(-b, b) with b = 1/sqrt(fan_in of the augmented weight) (PyTorch's
    default, a = sqrt(5)), BN 1/0, linear truncated normal(0.02); the base is the leading slice."""
    from scipy.stats import kstest

    torch.manual_seed(0)
    base = build_model("mobilenetv2_tiny", 10, 3, resolution=32)
    aug = augment(base, [1, 2, 3], [1, 2, 3], init="augmented")
    conv = aug.base.net.blocks[3].expand.conv.weight.detach()
    bound = 1 / (conv.shape[1] * conv.shape[2] * conv.shape[3]) ** 0.5
    assert conv.abs().max() <= bound and kstest(conv.flatten().numpy(), "uniform", (-bound, 2 * bound)).pvalue > 1e-3
    lin = aug.base.net.classifier.weight.detach()
    assert abs(float(lin.std()) - 0.02) < 0.002 and lin.abs().max() <= 2
    assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) for bn in
               (m for m in aug.modules() if isinstance(m, torch.nn.BatchNorm2d)))
    exported = aug.export("min").state_dict()
    assert torch.equal(exported["blocks.3.expand.conv.weight"], conv[:base.blocks[3].expand.conv.weight.shape[0],
                                                                    :base.blocks[3].expand.conv.weight.shape[1]])
    assert not torch.equal(exported["blocks.3.expand.conv.weight"], base.state_dict()["blocks.3.expand.conv.weight"])
    kept = augment(base, [1, 2, 3], [1, 2, 3], init="base").export("min").state_dict()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in kept.items())  # init=base keeps the base
