"""An int8 TFLite model for microcontroller runtimes (TFLite Micro), with Google's maintained tools.

litert-torch converts the torch model to a float TFLite flatbuffer; ai-edge-quantizer applies its
static int8 recipe (per-channel symmetric int8 weights, per-tensor int8 activations, integer
compute, int8 input and output) calibrated on the caller's images; ai-edge-litert's interpreter
runs it. All three come with the optional extra `tflite` (pip install -e '.[tflite]').
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from netaug.io import atomic_path


def _signature(path: Path) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(str(path)).get_signature_list()
    name = next(iter(signatures))
    return name, signatures[name]["inputs"][0]


def export_tflite_int8(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int],
                       calibration: Iterable[np.ndarray]) -> Path:
    """Write the int8 TFLite model of `model` (eval mode, NCHW float input of one image) to `path`, atomically."""
    import litert_torch
    from ai_edge_quantizer import quantizer, recipe

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp_dir:
        float_path = Path(tmp_dir) / "float.tflite"
        litert_torch.convert(model.eval().cpu(), (torch.zeros(1, *input_shape),)).export(str(float_path))
        signature, input_name = _signature(float_path)
        q = quantizer.Quantizer(str(float_path))
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        samples = [{input_name: np.ascontiguousarray(x[i:i + 1], dtype=np.float32)} for x in calibration
                   for i in range(len(x))]
        quiet = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"  # ai-edge-quantizer's calibration progress bar
        try:
            result = q.quantize(q.calibrate({signature: samples}), enable_progress_report=False)
        finally:
            if quiet is None:
                os.environ.pop("TQDM_DISABLE")
            else:
                os.environ["TQDM_DISABLE"] = quiet
        with atomic_path(path) as tmp:
            tmp.write_bytes(result.quantized_model)
    return path


def tflite_logits(path: str | Path, batches: Iterable[np.ndarray], reference: bool = False) -> np.ndarray:
    """Float logits of a TFLite model over float32 NCHW batches: inputs quantized and outputs dequantized with
    the model's own scales and zero points, one image per invocation (the model's batch is 1). `reference`:
    TFLite's reference kernels (BUILTIN_REF, what TFLite Micro's kernels compute) instead of the optimised ones."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    signature, input_name = _signature(Path(path))
    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interpreter = Interpreter(str(path), experimental_op_resolver_type=kind)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner(signature)
    inp = runner.get_input_details()[input_name]
    out_name, out = next(iter(runner.get_output_details().items()))
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    info = np.iinfo(inp["dtype"]) if s_in else None
    logits = []
    for x in batches:
        for i in range(len(x)):
            one = np.asarray(x[i:i + 1], dtype=np.float32)
            if s_in:
                one = np.clip(np.round(one / s_in) + z_in, info.min, info.max).astype(inp["dtype"])
            y = runner(**{input_name: one})[out_name]
            logits.append((y.astype(np.float32) - z_out) * s_out if s_out else y.astype(np.float32))
    return np.concatenate(logits) if logits else np.zeros((0, 0), dtype=np.float32)
