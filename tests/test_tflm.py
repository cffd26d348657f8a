"""The int8 TFLite model on TensorFlow Lite Micro's interpreter (netaug/train/tflm.py): inlined buffers keep
the function and take the weights out of the arena, the arena found is the smallest, TFLM's logits agree
with the desktop TFLite interpreter's, an op TFLM lacks is named in one line, and a digits run with
deploy.tflite writes model.json["tflm"]. Needs the `tflite` extra (README "Install", docs/deploy.md); skipped
without it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ROOT

pytest.importorskip("tflite_micro", reason="the tflite extra (tflite-micro) is not installed here")
pytest.importorskip("litert_torch", reason="the tflite extra (litert-torch) is not installed here")

from netaug.augment import recalibrate_bn  # noqa: E402
from netaug.models import build_model  # noqa: E402
from netaug.train.tflite import export_tflite_int8, tflite_logits  # noqa: E402
from netaug.train.tflm import (  # noqa: E402
    TFLMUnsupported,
    inline_buffers,
    interpreter,
    smallest_arena,
    tflm_logits,
)


@pytest.fixture(scope="module")
def mbv2_tflite(tmp_path_factory):
    """MobileNetV2-Tiny at 16 px, random weights with BatchNorm re-estimated (sane int8 ranges)."""
    torch.manual_seed(0)
    model = build_model("mobilenetv2_tiny", 10, 1, resolution=16)
    recalibrate_bn(model, [torch.randn(32, 1, 16, 16) for _ in range(2)])
    path = tmp_path_factory.mktemp("tflm") / "m.tflite"
    calibration = [np.random.default_rng(0).standard_normal((32, 1, 16, 16), dtype=np.float32)]
    return export_tflite_int8(model.eval(), path, (1, 16, 16), calibration)


def test_inlined_buffers_keep_the_function_and_take_weights_out_of_the_arena(mbv2_tflite, tmp_path):
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    raw = mbv2_tflite.read_bytes()
    model = schema.Model.GetRootAsModel(raw, 0)
    offset_bytes = sum(model.Buffers(i).Size() for i in range(model.BuffersLength()) if model.Buffers(i).Offset() > 1)
    inlined = inline_buffers(raw)
    again = schema.Model.GetRootAsModel(inlined, 0)
    assert offset_bytes > 100_000  # the converter moved the weights behind the flatbuffer
    assert all(again.Buffers(i).Offset() <= 1 for i in range(again.BuffersLength()))
    (tmp_path / "inline.tflite").write_bytes(inlined)
    x = [np.random.default_rng(1).standard_normal((8, 1, 16, 16), dtype=np.float32)]
    assert np.array_equal(tflite_logits(mbv2_tflite, x), tflite_logits(tmp_path / "inline.tflite", x))
    with_offsets, without = smallest_arena(raw), smallest_arena(inlined)
    assert with_offsets.head - without.head >= offset_bytes  # TFLM put the offset buffers in the arena
    assert without.tail == with_offsets.tail


def test_the_arena_is_the_smallest_that_allocates(mbv2_tflite):
    data = inline_buffers(mbv2_tflite.read_bytes())
    arena = smallest_arena(data)
    interpreter(data, arena.bytes)
    with pytest.raises(MemoryError):
        interpreter(data, arena.bytes - 1)
    assert arena.head + arena.tail == arena.bytes
    # the planned activations hold at least the largest layer's input and output (int8, 16 x 16 x 48 each)
    assert arena.head >= 2 * 16 * 16 * 48


def test_tflm_computes_tflites_reference_kernels(mbv2_tflite):
    data = inline_buffers(mbv2_tflite.read_bytes())
    x = [np.random.default_rng(2).standard_normal((32, 1, 16, 16), dtype=np.float32)]
    got, per_image = tflm_logits(data, x, smallest_arena(data).bytes)
    want = tflite_logits(mbv2_tflite, x, reference=True)  # the desktop interpreter's reference int8 kernels
    step = float(np.abs(np.diff(np.unique(want))).min())  # one output quantization step
    assert got.shape == want.shape and per_image > 0
    assert np.abs(got - want).max() <= 1e-3 * step  # the same integers, dequantized alike
    optimised = tflite_logits(mbv2_tflite, x)  # XNNPACK's kernels round otherwise: not the MCU's numbers
    assert np.abs(optimised - want).max() > step


def test_an_op_tflm_lacks_is_named(tmp_path):
    class Atan(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.atan(self.conv(x)).mean((2, 3)))

    path = export_tflite_int8(Atan().eval(), tmp_path / "a.tflite", (1, 8, 8),
                              [np.random.default_rng(0).standard_normal((16, 1, 8, 8), dtype=np.float32)])
    with pytest.raises(TFLMUnsupported, match=r"^TFLM lacks the op ATAN2$"):
        smallest_arena(inline_buffers(path.read_bytes()))
    from search.deliverable import tflm_facts, tflm_line  # what a run records and prints instead of failing

    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    facts = tflm_facts(path, [x], np.zeros(2, dtype=int), np.zeros(2, dtype=int), 1, 1)
    assert facts == {"error": "TFLM lacks the op ATAN2"}
    assert tflm_line(facts, 1) == "  TFLM: cannot run the model: TFLM lacks the op ATAN2; the ONNX models are delivered"


def test_a_digits_run_writes_tflm_figures(tmp_path):
    out = tmp_path / "run"
    sets = ["data.resolution=16", "training.bn_calib_batches=2", "final.epochs=8", "final.resources.cpu=1",
            "final.train_eval_size=200", "final.seeds=1", "deploy.int8=true", "deploy.tflite=true",
            "final.arms=[baseline]"]
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space",
                           str(ROOT / "spaces" / "mbv2.yaml"), "--out", str(out), "--no-dashboard", "--stage", "final",
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((out / "final" / "model.json").read_text())
    t = info["tflm"]
    data = (out / "final" / "model.int8.tflite").read_bytes()
    assert smallest_arena(data).bytes == t["arena_bytes"]  # the delivered file, inlined, is what was measured
    assert t["test_top1"] > 0.8 and t["test_top1_agreement_with_fp32"] > 0.95
    assert t["estimate_bytes"] == info["memory"]["true_peak_bytes_int8"]
    assert t["head_over_estimate"] == pytest.approx(t["arena_head_bytes"] / t["estimate_bytes"])
    # TFLM plans our estimate's buffers plus the PAD copies the converter adds before strided convs
    assert t["estimate_with_pads_bytes"] == info["memory"]["tflite_peak_bytes_int8"] > t["estimate_bytes"]
    assert abs(t["arena_head_bytes"] / t["estimate_with_pads_bytes"] - 1) <= 0.01
    assert "TFLM int8: test top-1" in proc.stdout and "our estimate" in proc.stdout
