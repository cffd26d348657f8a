"""What a deployer needs of an exported base model: ONNX, its parity with torch, sizes and peak memory.

Peak activation memory is the largest (input + output) feature map of any layer that computes:
every Conv2d (BatchNorm and ReLU6 fold into it on a microcontroller runtime), Linear and pooling
layer, for one image. A block's shortcut input, which a runtime must keep while the block runs, is
not added: the figure is the per-layer working set, the first number a deployer compares with SRAM.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from netaug.io import atomic_path
from netaug.models import profile_macs

COMPUTE_LAYERS = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


@dataclass
class DeploymentFacts:
    """Sizes of the deployed model. BatchNorm folds into the preceding conv (its scale into the weights, its
    shift a bias). fp32: 4 bytes per weight and bias. int8 (TFLite-style): 1 byte per weight, 4 per int32 bias,
    plus a float32 scale per output channel (symmetric weights: no zero points)."""

    macs: int
    params: int
    params_bn_folded: int
    weights_bytes_fp32: int
    weights_bytes_int8: int
    peak_activation_elements: int
    peak_activation_bytes_fp32: int
    peak_activation_bytes_int8: int
    peak_activation_layer: str

    def to_dict(self) -> dict:
        return asdict(self)


def peak_activation(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, str]:
    """(largest input + output elements of any compute layer for one image, that layer's name)."""
    sizes: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, COMPUTE_LAYERS):
            def hook(mod, inputs, output, name=name):
                sizes[name] = max(sizes.get(name, 0), inputs[0].numel() + output.numel())
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    layer = max(sizes, key=sizes.get)
    return sizes[layer], layer


def deployment_facts(model: nn.Module, input_shape: tuple[int, int, int]) -> DeploymentFacts:
    macs, params = profile_macs(model, input_shape)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = sum(m.weight.numel() for m in layers)
    biases = (sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
              + sum(m.bias.numel() for m in layers if m.bias is not None))
    channels = sum(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers)
    peak, layer = peak_activation(model, input_shape)
    return DeploymentFacts(macs, params, weights + biases, 4 * (weights + biases), weights + 4 * biases + 4 * channels,
                           peak, 4 * peak, peak, layer)


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx's exporter logs a line per missing optional operator library; keep the console clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int]) -> Path:
    """Export with torch.onnx (input "input" of shape (batch, C, H, W), output "logits"), atomically.

    The TorchScript exporter first (opset 17, BatchNorm folded into the convs): 0.4 s for
    MobileNetV2-Tiny here, against 12-16 s for the dynamo exporter, which is the fallback when a
    model does not script-trace."""
    path = Path(path)
    model = model.eval().cpu()
    example = torch.zeros(2, *input_shape)
    with _quiet_exporter(), atomic_path(path) as tmp:
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        except Exception:  # noqa: BLE001 - any TorchScript export failure: the dynamo exporter handles more
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, dynamo=True,
                              external_data=False, verbose=False)
    return path


@dataclass
class OnnxCheck:
    samples: int
    max_abs_logit_diff: float
    top1_agreement: float  # fraction of samples whose top-1 class is the same in torch and onnxruntime

    def to_dict(self) -> dict:
        return asdict(self)


def check_onnx(path: str | Path, model: nn.Module, batches) -> OnnxCheck:
    """Run the ONNX file with onnxruntime and the torch model on the same (normalised) batches."""
    import onnxruntime as ort

    from netaug.train.runtime import cpus_given

    options = ort.SessionOptions()
    options.intra_op_num_threads = cpus_given()  # the CPUs this process is given, not the machine's
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = model.eval().cpu()
    worst, agree, n = 0.0, 0, 0
    with torch.no_grad():
        for x in batches:
            x = x.detach().cpu().float().contiguous()
            ours = model(x).numpy()
            theirs = session.run(["logits"], {"input": x.numpy()})[0]
            worst = max(worst, float(np.abs(ours - theirs).max()))
            agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
            n += len(x)
    return OnnxCheck(n, worst, agree / max(1, n))
