"""Base models: shapes, the small-input layout, and MACs/params against hand and published figures."""

from __future__ import annotations

import pytest
import torch

from netaug.models import build_model, count_params, profile_macs


@pytest.mark.parametrize("name", ["mobilenetv2_tiny", "mobilenetv2", "proxylessnas_mobile", "mcunet"])
@pytest.mark.parametrize("res,channels", [(16, 1), (32, 3), (96, 3)])
def test_output_shape(name, res, channels):
    model = build_model(name, 7, channels, resolution=res).eval()
    assert model(torch.randn(3, channels, res, res)).shape == (3, 7)
    assert model.forward_features(torch.randn(2, channels, res, res)).shape == (2, model.spec.embedding_ch)


def test_small_input_layout_is_automatic_at_64px_or_less():
    assert build_model("mobilenetv2_tiny", 10, 3, resolution=64).spec.stem_stride == 1
    assert build_model("mobilenetv2_tiny", 10, 3, resolution=96).spec.stem_stride == 2
    assert build_model("mobilenetv2_tiny", 10, 3, resolution=96, small_input=True).spec.stem_stride == 1
    feats = {}
    for res in (32, 128):
        m = build_model("mobilenetv2", 10, 3, resolution=res)
        x = m.stem(torch.randn(1, 3, res, res))
        for block in m.blocks:
            x = block(x)
        feats[res] = x.shape[-1]
    assert feats == {32: 4, 128: 4}  # 32 px downsamples 8x, 128 px 32x


def hand_macs_mbv2_tiny_32px(num_classes: int = 10, in_ch: int = 3) -> int:
    """MobileNetV2-Tiny at 32 px, small-input layout, counted layer by layer from the paper's table."""
    # (expand t, out channels at width 0.35, blocks, stride); the 24-channel stage runs at stride 1.
    table = [(1, 8, 1, 1), (6, 8, 2, 1), (6, 16, 3, 2), (6, 24, 4, 2), (6, 32, 3, 1), (6, 56, 3, 2), (6, 112, 1, 1)]
    side, macs = 32, 32 * 32 * in_ch * 16 * 9  # stem: 3x3 conv to 16 channels, stride 1
    c_in = 16
    for t, c, n, s in table:
        for i in range(n):
            stride = s if i == 0 else 1
            mid = c_in * t
            if t != 1:
                macs += side * side * c_in * mid  # 1x1 expand
            side //= stride
            macs += side * side * mid * 9  # 3x3 depthwise
            macs += side * side * mid * c  # 1x1 project
            c_in = c
    macs += side * side * c_in * 448 + 448 * num_classes  # feature conv, classifier
    return macs


def test_macs_match_a_hand_computation():
    macs, _ = profile_macs(build_model("mobilenetv2_tiny", 10, 3, resolution=32), (3, 32, 32))
    expected = hand_macs_mbv2_tiny_32px()
    assert abs(macs - expected) / expected < 0.05, (macs, expected)


@pytest.mark.parametrize("name,res,macs_m,params_m", [
    ("mobilenetv2_tiny", 144, 23.5, 0.75),  # NetAug / MCUNet papers
    ("mobilenetv2", 224, 300.0, 3.5),  # MobileNetV2 paper
    ("proxylessnas_mobile", 224, 320.0, 4.1),  # ProxylessNAS paper
    ("mcunet", 176, 81.8, 0.74),  # NetAug paper / official README: MCUNet + NetAug, 0.74M, 81.8M
])
def test_imagenet_figures_match_published_numbers(name, res, macs_m, params_m):
    model = build_model(name, 1000, 3, resolution=res)
    macs, params = profile_macs(model, (3, res, res))
    assert abs(macs / 1e6 - macs_m) / macs_m < 0.02, macs
    assert abs(params / 1e6 - params_m) / params_m < 0.03, params
    assert params == count_params(model)


def test_width_mult_scales_mobilenetv2():
    small = build_model("mobilenetv2", 10, 3, resolution=32, width_mult=0.5)
    large = build_model("mobilenetv2", 10, 3, resolution=32, width_mult=1.0)
    assert count_params(small) < count_params(large)
    assert [b.out_ch for b in small.spec.blocks][-1] == 160 and [b.out_ch for b in large.spec.blocks][-1] == 320


def test_mcunet_has_no_feature_conv_and_a_7x7_head_block():
    model = build_model("mcunet", 1000, 3, resolution=176)
    head = model.spec.blocks[-1]
    assert model.feature_mix is None and model.spec.feature_ch == 0
    assert (head.in_ch, head.mid_ch, head.out_ch, head.kernel) == (96, 480, 160, 7)
    assert model.classifier.in_features == 160
    assert [b.kernel for b in model.spec.blocks[1:5]] == [7, 3, 7, 5]
