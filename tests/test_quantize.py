"""int8 building blocks: onnxruntime PTQ of a trained base (int8 weights, accuracy near fp32) and the
true peak memory of a graph against a hand-computed residual block."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from netaug.train.deploy import export_onnx, peak_activation
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


def test_ptq_gives_int8_weights_and_keeps_the_accuracy(tmp_path, digits16, fast_cfg):
    fast_cfg.training.epochs = 4
    trainer = Trainer(fast_cfg, digits16, mode="baseline")
    trainer.fit()
    model = trainer.model.eval()
    shape = (digits16.in_channels, digits16.resolution, digits16.resolution)
    fp32 = export_onnx(model, tmp_path / "model.onnx", shape)
    calibration = [x.numpy() for _, (x, _y) in zip(range(4), trainer.batcher.batches(
        digits16.train, 64, shuffle=True, generator=torch.Generator().manual_seed(5)))]
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", calibration)
    sizes = initializer_bytes(int8)
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert sizes.get("INT8", 0) >= conv_weights  # every conv and linear weight is stored as int8
    assert sizes.get("INT8", 0) > sizes.get("FLOAT", 0)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in trainer.batcher.batches(digits16.test, 256)])
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
