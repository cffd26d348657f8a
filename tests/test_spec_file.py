"""`model.spec`: a user's own inverted-residual network from a YAML file, checked field by field,
trained, augmented, exported and quantized like the built-in models."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from netaug.augment import augment
from netaug.config import load_space
from netaug.data import make_batcher
from netaug.errors import UserError
from netaug.models import InvertedResidualNet, build_from_spec_file, profile_macs
from netaug.models.spec_file import spec_from_mapping
from netaug.train.export import load_exported
from netaug.train.int8 import int8_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "spaces" / "models" / "tiny-se.yaml"
sys.path.insert(0, str(ROOT / "search"))
import run as run_module  # noqa: E402

GOOD = {"stem": {"channels": 8, "stride": 1},
        "blocks": [{"out": 8, "mid": 16, "kernel": 3}, {"out": 16, "expand": 2, "stride": 2, "se": 8}],
        "head": {"feature": 32}}


def with_block(i: int, **fields) -> dict:
    spec = json.loads(json.dumps(GOOD))
    spec["blocks"][i].update(fields)
    return spec


BAD_SPECS = [
    (with_block(1, **{"in": 12}), "blocks[1].in: channel mismatch"),
    (with_block(1, residual=True), "blocks[1].residual: a residual block needs stride 1"),
    (with_block(1, stride=1, residual=True), "blocks[1].residual: a residual block needs in == out"),
    (with_block(0, act="gelu"), "blocks[0].act: unknown activation 'gelu'"),
    (with_block(0, kernal=3), "blocks[0].kernal: unknown key"),
    (with_block(0, kernel=4), "blocks[0].kernel: must be odd"),
    (with_block(0, stride=3), "blocks[0].stride: must be 1 or 2"),
    (with_block(0, out=0), "blocks[0].out: expected an integer >= 1"),
    (with_block(1, expand=None), "blocks[1].se: squeeze-and-excitation needs an expanded block"),
    (with_block(1, mid=8), "blocks[1].expand: give mid or expand, not both"),
    ({**GOOD, "stem": {"channels": 8, "act": "tanh"}}, "stem.act: unknown activation 'tanh'"),
    ({**GOOD, "stem": {"stride": 2}}, "stem.channels: missing"),
    ({**GOOD, "blocks": []}, "blocks: expected a non-empty list"),
    ({**GOOD, "head": {"feature": 32, "act": "sigmoid"}}, "head.act: unknown activation"),
    ({**GOOD, "tail": {}}, "tail: unknown key"),
]


def test_a_good_spec_builds_what_it_says():
    spec = spec_from_mapping(GOOD, 10, 1)
    a, b = spec.blocks
    assert (a.in_ch, a.out_ch, a.mid_ch, a.residual, a.stage) == (8, 8, 16, True, -1)  # joins the stem's group
    assert (b.in_ch, b.out_ch, b.mid_ch, b.stride, b.se_ch, b.residual, b.stage) == (8, 16, 16, 2, 8, False, 0)
    model = InvertedResidualNet(spec)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    # MACs by hand at 16 px: stem 3x3 1->8; block 0: 8->16->8 at 16x16; block 1: 8->16, dw s2, SE, ->16 at 8x8
    hand = (256 * 9 * 8 + 256 * (8 * 16 + 16 * 9 + 16 * 8) + 256 * 8 * 16 + 64 * 16 * 9 + 2 * 16 * 8
            + 64 * 16 * 16 + 64 * 16 * 32 + 32 * 10)
    assert profile_macs(model, (1, 16, 16))[0] == hand


@pytest.mark.parametrize("spec,message", BAD_SPECS, ids=[m.split(":")[0] for _, m in BAD_SPECS])
def test_each_malformed_field_is_named(spec, message):
    with pytest.raises(UserError) as exc:
        spec_from_mapping(spec, 10, 1, where="f.yaml: ")
    assert str(exc.value).startswith(f"f.yaml: {message}"), str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("spec,message", BAD_SPECS[:4], ids=[m.split(":")[0] for _, m in BAD_SPECS[:4]])
def test_the_cli_exits_2_with_one_line_before_anything_runs(tmp_path, capsys, spec, message):
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        run_module.main(["--space", str(ROOT / "spaces" / "mbv2.yaml"), "--set", f"model.spec={path}",
                         "--out", str(out), "--no-dashboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: model.spec: {path}: {message}"), err
    assert not out.exists()


def test_a_missing_spec_file_names_the_key(tmp_path):
    with pytest.raises(UserError, match=r"^model.spec: no such file"):
        load_space(None, [f"model.spec={tmp_path / 'nope.yaml'}"])
    with pytest.raises(UserError, match=r"^model.width_mult"):
        load_space(None, [f"model.spec={EXAMPLE}", "model.width_mult=0.5"])


def test_the_example_augments_and_exports_sub_networks():
    torch.manual_seed(0)
    base = build_from_spec_file(str(EXAMPLE), 10, 1).eval()
    aug = augment(base, [1.0, 2.0], [1.0, 2.0]).eval()
    x = torch.randn(3, 1, 16, 16)
    aug.set_active("min")
    assert torch.equal(aug(x), base(x))
    config = aug.set_active("random", torch.Generator().manual_seed(0))
    torch.testing.assert_close(aug(x), aug.export(config).eval()(x), rtol=1e-5, atol=1e-5)


def test_the_example_trains_exports_and_quantizes(tmp_path, digits16):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "netaug.train", "--space", str(ROOT / "spaces" / "mbv2.yaml"), "--mode", "netaug",
         "--out", str(out), "--no-progress", "--set", f"model.spec={EXAMPLE}", "--set", "training.epochs=2",
         "--set", "netaug.r=2", "--set", "training.bn_calib_batches=2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    model, _ = load_exported(out / "base.pt")
    assert model.spec == build_from_spec_file(str(EXAMPLE), 10, 1).spec
    cfg = load_space(ROOT / "spaces" / "mbv2.yaml", [f"model.spec={EXAMPLE}"])
    cfg = dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, calib_images=128))
    batcher = make_batcher(digits16, cfg.data)
    got = int8_model(model, cfg, digits16, batcher, tmp_path / "m")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batcher.batches(digits16.test, 256)])
    options = ort.SessionOptions()  # the QDQ graph as written (fused x86 kernels saturate; see quantize.py)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "m.int8.onnx"), options, providers=["CPUExecutionProvider"])
    pred = np.concatenate([session.run(None, {"input": x})[0] for x in xs]).argmax(1)
    assert got["int8_test_top1"] == pytest.approx((pred == np.concatenate(ys)).mean(), abs=1e-12)
    assert metrics["test_base_top1"] > 0.5 and abs(got["int8_test_top1"] - metrics["test_base_top1"]) < 0.05
