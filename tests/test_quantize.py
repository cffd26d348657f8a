"""int8 building blocks: onnxruntime PTQ of a trained base (int8 weights, accuracy near fp32) and the
true peak memory of a graph against a hand-computed residual block."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from netaug.config import SpaceConfig, load_space
from netaug.data import make_batcher
from netaug.errors import UserError
from netaug.train.deploy import export_onnx, peak_activation
from netaug.train.int8 import calibration_set, int8_model
from netaug.train.qat import FakeQuantNet, prepare_qat, unprepare
from netaug.train.quantize import initializer_bytes, onnx_logits, quantize_int8, true_peak
from netaug.train.trainer import Trainer


class Residual(nn.Module):
    """x -> 1x1 expand (C -> 4C) + ReLU6 -> 3x3 depthwise + ReLU6 -> 1x1 project (4C -> C) -> + x."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c, 4 * c, 1)
        self.depthwise = nn.Conv2d(4 * c, 4 * c, 3, padding=1, groups=4 * c)
        self.project = nn.Conv2d(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.relu6(self.expand(x))
        h = nn.functional.relu6(self.depthwise(h))
        return x + self.project(h)


def test_true_peak_keeps_the_shortcut_alive_across_the_block(tmp_path):
    """By hand, C = 4, 6x6 maps, one image: during the depthwise conv the shortcut input (C), the
    expand output (4C, read by it) and its output (4C) are alive: 9 C H W = 1296 elements. The
    per-layer figure (input + output of one layer) misses the shortcut: 8 C H W = 1152."""
    c, h = 4, 6
    model = Residual(c).eval()
    path = export_onnx(model, tmp_path / "block.onnx", (c, h, h))
    peak = true_peak(path)
    assert peak.peak_elements == 9 * c * h * h
    assert peak.node.startswith("Conv") and "depthwise" in peak.node
    assert peak.bytes(1) == 1296 and peak.bytes(4) == 4 * 1296
    assert peak_activation(model, (c, h, h))[0] == 8 * c * h * h


@pytest.mark.parametrize("side, stride, padded", [(8, 2, True), (9, 2, False), (8, 1, False)])
def test_explicit_pads_count_the_tflite_pad_buffer(tmp_path, side, stride, padded):
    """By hand, a 3x3 conv (1 -> 4 channels, PyTorch padding 1) on one side x side image: TensorFlow's SAME
    padding of a stride-2 conv pads an even input 0 before and 1 after, so a converter inserts a PAD whose
    (side + 2)^2 copy is alive beside the input, then beside the output; an odd input (SAME pads 1 and 1)
    and a stride-1 conv (SAME) need none."""
    model = nn.Conv2d(1, 4, 3, stride, 1).eval()
    path = export_onnx(model, tmp_path / "conv.onnx", (1, side, side))
    out = 4 * (-(-side // stride)) ** 2
    plain = true_peak(path)
    assert plain.peak_elements == side * side + out
    with_pads = true_peak(path, explicit_pads=True)
    if padded:
        assert with_pads.peak_elements == max(side * side + (side + 2) ** 2, (side + 2) ** 2 + out)
        assert with_pads.node.startswith("Pad before Conv")
    else:
        assert with_pads.peak_elements == plain.peak_elements and with_pads.node == plain.node


def test_ptq_gives_int8_weights_and_keeps_the_accuracy(tmp_path, digits16, trained):
    cfg, model = trained
    batcher = make_batcher(digits16, cfg.data)
    shape = (digits16.in_channels, digits16.resolution, digits16.resolution)
    fp32 = export_onnx(model, tmp_path / "model.onnx", shape)
    calibration = [x.numpy() for _, (x, _y) in zip(range(4), batcher.batches(
        digits16.train, 64, shuffle=True, generator=torch.Generator().manual_seed(5)))]
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", calibration)
    sizes = initializer_bytes(int8)
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert sizes.get("INT8", 0) >= conv_weights  # every conv and linear weight is stored as int8
    assert sizes.get("INT8", 0) > sizes.get("FLOAT", 0)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batcher.batches(digits16.test, 256)])
    labels = np.concatenate(ys)
    ref = onnx_logits(fp32, xs)
    with torch.no_grad():
        torch_logits = np.concatenate([model(torch.from_numpy(x)).numpy() for x in xs])
    assert np.abs(ref - torch_logits).max() < 1e-4  # the fp32 graph is the torch model
    q = onnx_logits(int8, xs)
    top1_fp32, top1_int8 = (ref.argmax(1) == labels).mean(), (q.argmax(1) == labels).mean()
    assert top1_fp32 > 0.8  # a trained model, so the tolerance below means something
    assert abs(top1_int8 - top1_fp32) <= 0.03
    assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert not np.allclose(q, ref, atol=1e-6)  # int8 really computes something else


@pytest.fixture(scope="module")
def trained(digits16):
    """A MobileNetV2-Tiny trained 4 epochs on digits at 16 px (plain training) and its config."""
    cfg = load_space(None, ["data.resolution=16", "training.batch_size=64", "training.epochs=4",
                            "training.mode=baseline"])
    trainer = Trainer(cfg, digits16)
    trainer.fit()
    return cfg, trainer.export_base()


def test_unprepare_gives_the_fake_quantized_network_without_its_quantization(trained, digits16):
    """torch.ao's prepared model with fake quantization off computes conv + BN in float: the plain network
    holding its weights must compute the same."""
    from torch.ao.quantization import disable_fake_quant, disable_observer

    cfg, model = trained
    shape = (digits16.in_channels, digits16.resolution, digits16.resolution)
    prepared = prepare_qat(model, shape)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in prepared.modules()) == sum(
        isinstance(m, nn.BatchNorm2d) for m in model.modules())  # every BN folded into its conv, kept inside
    trainer = Trainer(dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, epochs=1, lr=1e-3,
                                                                            channels_last=False)),
                      digits16, mode="baseline", base=FakeQuantNet(prepared), local=True)
    trainer.train_epoch()  # weights and BN statistics move
    prepared.apply(disable_fake_quant).apply(disable_observer).eval()
    plain = unprepare(prepared, model)
    x = next(iter(trainer.batcher.batches(digits16.test, 128)))[0]
    with torch.no_grad():
        ours, theirs, before = plain(x), prepared(x), model(x)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours, before, atol=1e-3)  # the fine-tuning changed the network


def test_int8_model_scores_ptq_and_qat_on_val_and_test(trained, digits16, tmp_path):
    cfg, model = trained
    cfg = dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, qat_epochs=1, qat_threshold=-1.0,
                                                              calib_images=128))
    batcher = make_batcher(digits16, cfg.data)
    got = int8_model(model, cfg, digits16, batcher, tmp_path / "m")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batcher.batches(digits16.test, 256)])
    labels = np.concatenate(ys)
    kept = onnx_logits(tmp_path / "m.int8.onnx", xs).argmax(1)
    fp32 = onnx_logits(tmp_path / "m.onnx", xs).argmax(1)
    assert got["int8_test_top1"] == pytest.approx((kept == labels).mean(), abs=1e-12)
    assert got["fp32_onnx_test_top1"] == pytest.approx((fp32 == labels).mean(), abs=1e-12)
    assert got["int8_test_agreement"] == pytest.approx((kept == fp32).mean(), abs=1e-12)
    assert got["qat_test_top1"] is not None  # a threshold below 0 always runs QAT
    method = "qat" if got["qat_val_top1"] > got["ptq_val_top1"] else "ptq"  # the choice is made on val
    assert got["int8_method"] == method and got["int8_test_top1"] == got[f"{method}_test_top1"]
    assert abs(got["int8_test_top1"] - got["fp32_onnx_test_top1"]) <= 0.03
    assert got["calib_images"] == 128


def test_calibration_larger_than_the_training_split_names_the_key(digits16):
    with pytest.raises(UserError, match=r"^deploy.calib_images: 5000 exceeds the \d+ images of the training split"):
        calibration_set(digits16, 5000, 0)
    picked = calibration_set(digits16, 100, 0)
    assert len(picked) == 100 and len(calibration_set(digits16, 100, 1)) == 100
    assert torch.equal(picked.images, calibration_set(digits16, 100, 0).images)  # fixed by the split seed


def test_tflite_int8_matches_its_own_scores(trained, digits16, tmp_path):
    """The optional extra: an int8 .tflite with int8 weights whose accuracy stays near fp32."""
    pytest.importorskip("litert_torch")
    from netaug.train.tflite import export_tflite_int8, tflite_logits

    cfg, model = trained
    batcher = make_batcher(digits16, cfg.data)
    calibration = [x.numpy() for x, _ in batcher.batches(calibration_set(digits16, 128, 0), 64)]
    path = export_tflite_int8(model, tmp_path / "m.tflite", (1, 16, 16), calibration)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batcher.batches(digits16.test, 256)])
    labels = np.concatenate(ys)
    with torch.no_grad():
        fp32 = np.concatenate([model(torch.from_numpy(x)).numpy() for x in xs]).argmax(1)
    pred = tflite_logits(path, xs).argmax(1)
    assert abs((pred == labels).mean() - (fp32 == labels).mean()) <= 0.03
    assert (pred == fp32).mean() >= 0.9
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < fp32_bytes / 2  # int8 weights, not float


def test_zero_dead_inputs_zeroes_exactly_the_weights_that_read_a_dead_channel():
    """By hand: stem channel 2 and point channel 1 are 0 after their ReLU on every image in [0, 1]; the point conv's
    column 2 and the depthwise conv's channel 1 are what read them, and zeroing them leaves the logits as they were."""
    from netaug.train.dead_inputs import without_dead_inputs

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.point = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
            self.depth, self.head = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.point(torch.relu(self.stem(x))))
            return self.head(torch.relu(self.depth(x)).mean((2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for p in net.parameters():  # positive weights and biases keep every other channel alive
            p.uniform_(0.1, 0.5)
        net.stem.bias[2] = net.point.bias[1] = -100.0
        net.point.weight[:, 2] = 300.0
    batches = [torch.rand(16, 1, 8, 8) for _ in range(3)]
    zeroed, found = without_dead_inputs(net, batches)
    assert [(f.layer, f.channels) for f in found] == [("point", [2]), ("depth", [1])]
    live = float(torch.cat([net.point.weight[:, :2], net.point.weight[:, 3:]], 1).detach().abs().max())
    assert found[0].largest_dead == 300.0 and found[0].largest_live == live
    before, after = dict(net.named_parameters()), dict(zeroed.named_parameters())
    expect = before["point.weight"].clone()
    expect[:, 2] = 0
    assert torch.equal(after["point.weight"], expect)
    expect = before["depth.weight"].clone()
    expect[1] = 0
    assert torch.equal(after["depth.weight"], expect)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in ("point.weight", "depth.weight"))
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(zeroed(x), net(x), rtol=0, atol=1e-6)
    assert net.point.weight[0, 2] == 300.0  # the model itself is untouched
    alive = Net().eval()
    with torch.no_grad():
        for p in alive.parameters():
            p.uniform_(0.1, 0.5)
    assert without_dead_inputs(alive, batches) == (alive, [])


def test_int8_model_quantizes_without_the_weights_on_a_dead_channel(trained, digits16, tmp_path):
    """A dead stem channel and a dead depthwise channel whose readers carry huge weights (as a folded BatchNorm
    on a dead channel leaves them): fp32 does not notice, PTQ collapses, and with deploy.zero_dead_inputs the int8
    model agrees with fp32 again."""
    cfg, model = trained
    sick = copy.deepcopy(model)
    with torch.no_grad():
        sick.stem.bn.bias[0] = -100.0  # stem channel 0: 0 after its ReLU6 on every image
        sick.blocks[0].depthwise.conv.weight[0] *= 1000.0
        sick.blocks[0].depthwise.bn.bias[0] = -100.0  # and the depthwise channel that reads it
        sick.blocks[0].project.conv.weight[:, 0] = 300.0
    batcher = make_batcher(digits16, cfg.data)
    got = {}
    for zero in (True, False):
        run = dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, zero_dead_inputs=zero))
        got[zero] = int8_model(sick, run, digits16, batcher, tmp_path / f"m{zero}")
    assert got[True]["fp32_onnx_test_top1"] == got[False]["fp32_onnx_test_top1"]  # the fp32 model is untouched
    assert got[False]["int8_dead_inputs"] is None and got[True]["int8_dead_inputs"] >= 2  # off: not looked for
    assert got[False]["int8_test_agreement"] < 0.5 < 0.9 < got[True]["int8_test_agreement"]
    assert sorted(f.name for f in tmp_path.iterdir()) == [  # the zeroed fp32 graph was only a step
        "mFalse.int8.onnx", "mFalse.onnx", "mTrue.int8.onnx", "mTrue.onnx"]
    assert SpaceConfig().deploy.zero_dead_inputs  # on by default since cell A (docs/deploy.md)
