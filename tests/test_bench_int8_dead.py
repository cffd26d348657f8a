"""bench/int8_dead_channels.py on a run folder: it scores each saved model as it is and without the weights on its
dead channels (fp32 unchanged; tests/test_quantize.py checks the zeroing itself), and bad input is one line, exit 2."""

from __future__ import annotations

import importlib.util
import json
import sys

import torch
from conftest import ROOT

from netaug.config import load_space
from netaug.data import load_data
from netaug.train.export import save_exported
from netaug.train.trainer import Trainer


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_int8_dead", ROOT / "bench" / "int8_dead_channels.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    return bench


def test_a_saved_model_with_a_dead_channel_is_scored_before_and_after(tmp_path, capsys):
    cfg = load_space(None, ["data.resolution=16", "training.mode=baseline", "deploy.calib_images=64"])
    data = load_data(cfg.data)
    model = Trainer(cfg, data).export_base().eval()
    with torch.no_grad():
        model.stem.bn.bias[0] = -100.0  # stem channel 0: 0 after its ReLU6 on every image
        model.blocks[0].depthwise.conv.weight[0] = 50.0  # what reads it
    save_exported(tmp_path / "final" / "models" / "baseline_s0.pt", model, data)
    (tmp_path / "space.json").write_text(json.dumps(cfg.to_dict()))
    assert load_bench().main([str(tmp_path), "--detail"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| baseline_s0 |")).strip("| ").split(" | ")
    assert int(row[1]) >= 1 and int(row[2]) >= 1 and float(row[3]) >= 50.0
    assert row[5:7] == row[9:11]  # fp32 val and test: zeroing what reads a dead channel changed nothing
    assert "blocks.0.depthwise.conv: dead inputs [0" in out


def test_a_missing_run_or_model_is_one_line_and_exit_2(tmp_path, capsys):
    bench = load_bench()
    assert bench.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "space.json").write_text("{}")
    assert bench.main([str(tmp_path), "--models", "reparam_s1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reparam_s1.pt" in err
