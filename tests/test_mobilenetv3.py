"""MobileNetV3: the official NetAug definition's size, its augmented twin (dynamic SE), sorting and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netaug.augment import augment
from netaug.augment.widths import se_width
from netaug.models import build_model, count_params, profile_macs
from netaug.train.deploy import check_onnx, export_onnx

# The official code's MobileNetV3 (mit-han-lab/tinyml, netaug/models/base/mbv3.py) at the NetAug
# paper's setting, width 0.35, 160 px, 1000 classes: 2,109,840 parameters, and 19,495,688 MACs counted
# as this project counts them (convolutions and matrix products, torch.utils.flop_counter, run on the
# official module). torchprofile, which the official code uses, gives 20,440,832: it also counts the
# BatchNorms and the SE layers' elementwise multiplies.
OFFICIAL_MBV3_035_160 = (19_495_688, 2_109_840)
# The official NetAugMobileNetV3 of that base (10 classes) with the paper's lists, expands
# [1, 1.6, 2.2, 2.8] and widths [1, 2, 3]: 21,376,101 parameters, and at its largest the SE layers'
# (middle, squeeze) widths below (read from the official modules).
OFFICIAL_AUG_PARAMS = 21_376_101
OFFICIAL_MAX_SE = [(202, 135), (336, 134), (336, 134), (1411, 336), (1949, 470), (1949, 470), (2822, 739),
                   (2822, 739)]


def test_macs_and_params_equal_the_official_definition():
    model = build_model("mobilenetv3", 1000, 3, resolution=160, width_mult=0.35)
    assert profile_macs(model, (3, 160, 160)) == OFFICIAL_MBV3_035_160
    se = [b for b in model.spec.blocks if b.se_ch]
    assert len(se) == 8 and all(b.se_ch >= 16 for b in se)  # SE in three of the five stages, squeeze >= 16


def test_the_augmented_twin_equals_the_official_netaug_mobilenetv3_in_size():
    base = build_model("mobilenetv3", 10, 3, resolution=160, width_mult=0.35)
    aug = augment(base, [1.0, 2.0, 3.0], [1.0, 1.6, 2.2, 2.8])
    assert count_params(aug) == OFFICIAL_AUG_PARAMS
    largest = aug.export("max").spec
    assert [(b.mid_ch, b.se_ch) for b in largest.blocks if b.se_ch] == OFFICIAL_MAX_SE


@pytest.fixture
def pair():
    torch.manual_seed(0)
    base = build_model("mobilenetv3", 10, 3, resolution=32, width_mult=0.35)
    aug = augment(base, [1.0, 2.0, 3.0], [1.0, 1.6, 2.2, 2.8], init="augmented")
    return base, aug


def test_min_is_the_base_and_every_sub_network_exports(pair):
    base, aug = pair
    aug.eval()
    x = torch.randn(4, 3, 32, 32)
    exported = aug.export("min").eval()
    assert exported.spec == base.spec
    aug.set_active("min")
    assert torch.equal(aug(x), exported(x))
    g = torch.Generator().manual_seed(3)
    for kind in ("max", "random", "random", "min_w"):
        config = aug.set_active(kind, g)
        sub = aug.export(config).eval()
        torch.testing.assert_close(aug(x), sub(x), rtol=1e-5, atol=1e-5)


def official_se(se_ch: int, mid_ch: int, mid: int, max_mid: int) -> int:
    """The official DynamicSE, written out: the widest layer's squeeze fixes the reduction."""
    max_se = max(round(max_mid / (mid_ch / se_ch + 1e-10)), 16)
    return max(16, int(max(mid / (max_mid / max_se), 16) + 0.5))


def test_se_squeeze_width_follows_the_active_middle_width(pair):
    base, aug = pair
    big = aug.export("max").spec
    for b0, b1, layer in zip(base.spec.blocks, big.blocks, aug.base.net.blocks):
        if b0.se_ch is None:
            assert layer.se is None
            continue
        assert b1.mid_ch > b0.mid_ch and b1.se_ch == max(round(b1.mid_ch / (b0.mid_ch / b0.se_ch + 1e-10)), 16)
        assert layer.se.reduce.weight.shape == (b1.se_ch, b1.mid_ch, 1, 1)
    # drawn sub-networks squeeze by the widest layer's reduction, as the official code
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        spec = aug.export(aug.config("random", g)).spec
        for b0, b1, widest in zip(base.spec.blocks, spec.blocks, big.blocks):
            if b0.se_ch is not None:
                expected = b0.se_ch if b1.mid_ch == b0.mid_ch else official_se(b0.se_ch, b0.mid_ch, b1.mid_ch,
                                                                                 widest.mid_ch)
                assert b1.se_ch == expected
    # a case where the base's reduction and the widest layer's differ (MobileNetV3 0.35's blocks.4)
    assert se_width(16, 40, 224, 336) == official_se(16, 40, 224, 336) == 89  # 224 x 16 / 40 = 89.6 would give 90
    assert se_width(16, 40, 40, 336) == 16 and se_width(16, 40, 336, 336) == 134  # the base; the widest
    assert se_width(8, 24, 30, 48) == 10  # a base squeeze below 16 keeps its own floor


def test_sorting_carries_the_se_weights_and_keeps_the_largest_function(pair):
    _, aug = pair
    aug.eval()
    x = torch.randn(4, 3, 32, 32)
    aug.set_active("max")
    before = aug(x)
    se = aug.base.net.blocks[3].se
    reduce_before = se.reduce.weight.detach().clone()
    aug.sort_channels(scope="all")
    torch.testing.assert_close(aug(x), before, rtol=1e-4, atol=1e-5)
    assert not torch.equal(se.reduce.weight, reduce_before)  # the SE layer was permuted with its block
    importance = se.expand.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])  # squeeze channels: most important first
    aug.set_active("min")
    base_after = aug(x)
    aug.set_active("max")
    aug.sort_channels(scope="augmented")  # leaves the base's prefixes (middle and squeeze) in place
    aug.set_active("min")
    torch.testing.assert_close(aug(x), base_after, rtol=0, atol=0)


def test_onnx_parity_of_the_exported_base(tmp_path, pair):
    _, aug = pair
    base = aug.export("min").eval()
    path = export_onnx(base, tmp_path / "mbv3.onnx", (3, 32, 32))
    check = check_onnx(path, base, [torch.randn(8, 3, 32, 32) for _ in range(2)])
    assert check.samples == 16 and np.isfinite(check.max_abs_logit_diff)
    assert check.max_abs_logit_diff < 1e-4 and check.top1_agreement == 1.0


@pytest.mark.parametrize("scheme", ["fan_out", "uniform"])
def test_the_head_layer_is_initialised_as_the_official_1x1_conv(scheme):
    """The post-pool head layer is a linear layer here and a 1x1 conv in the official code: from one RNG
    state it gets exactly the weights the conv's init draws (he_fout / kaiming-uniform), not the
    classifier's truncated normal."""
    from netaug.models.network import head_layers, init_module

    model = build_model("mobilenetv3", 10, 3, resolution=32, width_mult=0.35)
    head = model.head[0]
    assert head_layers(model) == [head] and head_layers(build_model("mobilenetv2_tiny", 10, 3)) == []
    conv = torch.nn.Conv2d(head.in_features, head.out_features, 1)
    torch.manual_seed(3)
    init_module(head, scheme, as_conv=True)
    torch.manual_seed(3)
    if scheme == "fan_out":
        torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out")  # the official he_fout: normal, sqrt(2 / fan_out)
    else:
        torch.nn.init.kaiming_uniform_(conv.weight, a=5 ** 0.5)  # bound 1 / sqrt(fan_in)
    assert torch.equal(head.weight, conv.weight.flatten(1)) and not head.bias.any()
    bound = float(head.weight.detach().abs().max()) * head.in_features ** 0.5
    assert (0.99 < bound <= 1.0) if scheme == "uniform" else bound > 2.5
    # the whole-model init reaches it too: the classifier keeps its truncated normal (std 0.02)
    from netaug.models.network import init_weights

    init_weights(model, scheme)
    assert float(model.classifier.weight.std()) == pytest.approx(0.02, rel=0.1)
    w = model.head[0].weight
    expected_std = (2 / w.shape[0]) ** 0.5 if scheme == "fan_out" else 1 / (3 * w.shape[1]) ** 0.5
    assert float(w.std()) == pytest.approx(expected_std, rel=0.05)
