"""bench/int8_dead_channels.py: it finds the channels that are 0 on every image, zeroes exactly the weights that read
them (a full conv's columns, a depthwise conv's own channel, a linear layer's inputs), the fp32 logits do not move,
and the int8 model gets closer to fp32 (a huge weight on a dead input no longer sets its output channel's scale)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from conftest import ROOT
from onnx import numpy_helper

from netaug.train.deploy import export_onnx
from netaug.train.quantize import onnx_logits, quantize_int8


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_int8_dead", ROOT / "bench" / "int8_dead_channels.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks its module up
    spec.loader.exec_module(bench)
    return bench


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.point = nn.Conv2d(4, 4, 1)
        self.depth = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.point(torch.relu(self.stem(x))))
        return self.head(torch.relu(self.depth(x)).mean((2, 3)))


def weights(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_dead_inputs_are_zeroed_exactly_and_int8_gets_closer(tmp_path):
    bench = load_bench()
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for p in net.parameters():  # positive weights and biases keep every other channel alive
            p.uniform_(0.1, 0.5)
        net.stem.bias[2] = -100.0  # images in [0, 1]: stem channel 2 is 0 after its ReLU everywhere
        net.point.weight[:, 2] = 300.0  # huge weights that only ever multiply 0
        net.point.bias[1] = -100.0  # point channel 1 is dead too: the depthwise conv's channel 1 reads it
        net.depth.weight[1] = 50.0
    path = export_onnx(net, tmp_path / "net.onnx", (1, 8, 8))
    rng = np.random.default_rng(0)
    batches = [rng.random((16, 1, 8, 8), dtype=np.float32) for _ in range(4)]

    maxima = bench.input_maxima(path, batches)
    found = {f.node: f for f in bench.zero_dead_inputs(path, tmp_path / "zeroed.onnx", maxima)}
    assert sorted(f.channels for f in found.values()) == [[1], [2]]
    point = next(f for f in found.values() if f.channels == [2])
    assert point.largest_dead == 300.0 and point.largest_live < 300.0

    before, after = weights(path), weights(tmp_path / "zeroed.onnx")
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert len(changed) == 2  # the point conv's and the depthwise conv's weights; nothing else
    for name in changed:
        w, z = before[name], after[name]
        if w.shape[1] == 4:  # the point conv: column 2 (it reads stem channel 2) is zeroed, the rest kept
            assert (z[:, 2] == 0).all() and np.array_equal(np.delete(z, 2, 1), np.delete(w, 2, 1))
        else:  # the depthwise conv: its channel 1 alone
            assert (z[1] == 0).all() and np.array_equal(np.delete(z, 1, 0), np.delete(w, 1, 0))

    data = [rng.random((32, 1, 8, 8), dtype=np.float32) for _ in range(2)]
    fp32, fp32_zeroed = onnx_logits(path, data), onnx_logits(tmp_path / "zeroed.onnx", data)
    np.testing.assert_allclose(fp32_zeroed, fp32, rtol=0, atol=1e-5)
    err = np.abs(onnx_logits(quantize_int8(path, tmp_path / "net.int8.onnx", batches), data) - fp32).max()
    err_zeroed = np.abs(onnx_logits(quantize_int8(tmp_path / "zeroed.onnx", tmp_path / "z.int8.onnx", batches),
                                    data) - fp32).max()
    assert err_zeroed < err / 4, (err_zeroed, err)


def test_a_missing_run_or_model_is_one_line_and_exit_2(tmp_path, capsys):
    bench = load_bench()
    assert bench.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "space.json").write_text("{}")
    assert bench.main([str(tmp_path), "--models", "reparam_s1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reparam_s1.onnx" in err
