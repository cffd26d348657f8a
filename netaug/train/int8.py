"""The int8 model of a trained base: post-training quantization, optional QAT, scores and true memory.

For every final model: export fp32 ONNX, quantize it with onnxruntime (netaug.train.quantize) on
`deploy.calib_images` un-augmented training images, score both on val and test with onnxruntime.
When `deploy.qat_epochs` > 0 and PTQ loses more than `deploy.qat_threshold` points of val top-1,
fine-tune with fake quantization (netaug.train.qat) and quantize again; the int8 model kept is the
QAT one only when its int8 val top-1 beats PTQ's (test plays no part in any choice).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn as nn

from netaug.config import SpaceConfig
from netaug.data import DataSplits
from netaug.errors import UserError
from netaug.train.dead_inputs import DeadInputs, without_dead_inputs
from netaug.train.deploy import export_onnx
from netaug.train.quantize import initializer_bytes, onnx_logits, quantize_int8, true_peak

# (name, SRAM bytes, flash bytes): common microcontroller classes
MCU_BUDGETS = (("256 KB SRAM / 1 MB flash", 256 * 1024, 1024 * 1024),
               ("320 KB SRAM / 1 MB flash", 320 * 1024, 1024 * 1024),
               ("512 KB SRAM / 2 MB flash", 512 * 1024, 2 * 1024 * 1024))


def calibration_set(data: DataSplits, size: int, split_seed: int):
    """`size` training images drawn by the split seed (the same for every arm and seed), in index order."""
    n = len(data.train)
    if size > n:
        raise UserError(f"deploy.calib_images: {size} exceeds the {n} images of the training split")
    keep = np.sort(np.random.default_rng(split_seed + 13).permutation(n)[:size])
    return data.train.take(keep)


def arrays(batcher, split, batch_size: int = 512) -> tuple[list[np.ndarray], np.ndarray]:
    xs, ys = [], []
    for x, y in batcher.batches(split, batch_size):
        xs.append(x.detach().cpu().float().contiguous().numpy())
        ys.append(y.detach().cpu().numpy())
    return xs, (np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64))


@dataclass
class OnnxScores:
    """Top-1 of one ONNX model on val and test, and its test top-1 predictions."""

    val_top1: float
    test_top1: float
    test_pred: np.ndarray


def score(path: Path, val: tuple[list, np.ndarray], test: tuple[list, np.ndarray]) -> OnnxScores:
    v = onnx_logits(path, val[0]).argmax(1)
    t = onnx_logits(path, test[0]).argmax(1)
    return OnnxScores(float((v == val[1]).mean()), float((t == test[1]).mean()), t)


def quantizable(model: nn.Module, cfg: SpaceConfig, calibration: list[np.ndarray]
                ) -> tuple[nn.Module, list[DeadInputs]]:
    """The model to quantize: with `deploy.zero_dead_inputs`, a copy whose weights on a channel that is 0 on
    every calibration image are 0 (netaug.train.dead_inputs), and what was zeroed; else `model` itself."""
    if not cfg.deploy.zero_dead_inputs:
        return model, []
    return without_dead_inputs(model, calibration)


def int8_model(model: nn.Module, cfg: SpaceConfig, data: DataSplits, batcher, stem: Path) -> dict:
    """Write `<stem>.onnx` (fp32) and `<stem>.int8.onnx` for the trained base `model`; return the figures a
    final.parquet row gets (int8_* of the kept int8 model, ptq_* and qat_* of each attempt). The int8 model is
    quantized from `quantizable(model)`: the fp32 model less the weights that read a dead channel."""
    d = cfg.deploy
    shape = (data.in_channels, data.resolution, data.resolution)
    calibration = arrays(batcher, calibration_set(data, d.calib_images, cfg.data.split_seed), 64)[0]
    val, test = arrays(batcher, data.val), arrays(batcher, data.test)
    fp32_path = export_onnx(model, stem.with_suffix(".onnx"), shape)
    fp32 = score(fp32_path, val, test)
    quantized, dead = quantizable(model, cfg, calibration)
    with tempfile.TemporaryDirectory() as tmp:  # the zeroed fp32 graph is only a step towards the int8 one
        source = fp32_path if quantized is model else export_onnx(quantized, Path(tmp) / "zeroed.onnx", shape)
        int8_path = quantize_int8(source, stem.with_suffix(".int8.onnx"), calibration)
    ptq = score(int8_path, val, test)
    kept, method, qat = ptq, "ptq", None
    if d.qat_epochs > 0 and (fp32.val_top1 - ptq.val_top1) * 100 > d.qat_threshold:
        from netaug.train.qat import qat_finetune

        tuned_cfg = dataclasses.replace(cfg, sharing=dataclasses.replace(cfg.sharing, enabled=False))
        tuned = qat_finetune(model, tuned_cfg, data, d.qat_epochs, d.qat_lr or cfg.training.lr / 100)
        qat_fp32 = export_onnx(quantizable(tuned, cfg, calibration)[0], stem.with_suffix(".qat.onnx"), shape)
        qat_path = quantize_int8(qat_fp32, stem.with_suffix(".qat.int8.onnx"), calibration)
        qat = score(qat_path, val, test)
        if qat.val_top1 > ptq.val_top1:  # QAT changes the weights: it must earn its place on val
            kept, method = qat, "qat"
            qat_path.replace(int8_path)
    return {
        "int8_method": method, "calib_images": d.calib_images,
        "int8_dead_inputs": sum(len(f.channels) for f in dead) if d.zero_dead_inputs else None,  # off: not looked for
        "fp32_onnx_val_top1": fp32.val_top1, "fp32_onnx_test_top1": fp32.test_top1,
        "int8_val_top1": kept.val_top1, "int8_test_top1": kept.test_top1,
        "int8_test_delta": kept.test_top1 - fp32.test_top1,
        "int8_test_agreement": float((kept.test_pred == fp32.test_pred).mean()),
        "ptq_val_top1": ptq.val_top1, "ptq_test_top1": ptq.test_top1,
        "qat_val_top1": qat.val_top1 if qat else None, "qat_test_top1": qat.test_top1 if qat else None,
    }


def memory_facts(fp32_path: Path, int8_path: Path) -> dict:
    """True peak SRAM (execution-order walk of the fp32 graph, int8 activations: one byte each; and with the
    PAD ops a TFLite converter adds, what TFLite Micro plans), flash of the int8 graph (int8 weights and
    zero points, int32 biases, float32 scales) and the common budgets."""
    peak = true_peak(fp32_path)
    padded = true_peak(fp32_path, explicit_pads=True)  # as a TFLite graph holds it (docs/results/deployment.md)
    sizes = initializer_bytes(int8_path)
    flash = sum(sizes.values())
    sram = peak.bytes(1)
    return {
        "true_peak_bytes_int8": sram, "true_peak_bytes_fp32": peak.bytes(4), "true_peak_at": peak.node,
        "tflite_peak_bytes_int8": padded.bytes(1), "tflite_peak_at": padded.node,
        "true_peak_live": peak.live, "flash_bytes_int8": flash, "flash_by_type": sizes,
        "budgets": [{"name": name, "sram_bytes": s, "flash_bytes": f, "fits": sram <= s and flash <= f}
                    for name, s, f in MCU_BUDGETS],
    }
