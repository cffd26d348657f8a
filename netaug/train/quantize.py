"""int8 deployment of an exported ONNX model: post-training quantization, evaluation, true memory.

Quantization is onnxruntime's static quantization: QDQ format, per-channel symmetric int8 weights,
int8 activations calibrated on batches the caller chooses (training images that evaluation never
sees). Memory is read off the fp32 graph, as an int8 runtime executes it: BatchNorm is folded into
the convs by the exporter, Clip/ReLU run in place on their input's buffer, and every other node
(Conv, Add, pooling, Gemm) writes a new buffer. A buffer lives from the node that writes it to the
last node that reads it, so a residual block's shortcut input stays alive across the whole block;
the peak is the largest sum of live buffers at any node, for one image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from netaug.io import atomic_path

IN_PLACE_OPS = frozenset({"Clip", "Relu", "BatchNormalization", "Identity", "Reshape", "Flatten", "Squeeze",
                          "Unsqueeze", "Cast", "QuantizeLinear", "DequantizeLinear"})


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Iterable[np.ndarray],
                  input_name: str = "input") -> Path:
    """Write the int8 QDQ model of `fp32_path` to `out_path` (atomically), activations calibrated
    (min-max) on the float32 NCHW batches of `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, batches: Iterator[np.ndarray]) -> None:
            self.batches = batches

        def get_next(self) -> dict | None:
            x = next(self.batches, None)
            return None if x is None else {input_name: np.ascontiguousarray(x, dtype=np.float32)}

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp_dir:
        pre = Path(tmp_dir) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        with atomic_path(out_path) as tmp:
            quantize_static(str(pre), str(tmp), Reader(iter(calibration)), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out_path


def onnx_logits(path: str | Path, batches: Iterable[np.ndarray], input_name: str = "input",
                fused: bool = False) -> np.ndarray:
    """Logits of the ONNX model at `path` (onnxruntime, CPU) over float32 NCHW `batches`, concatenated.

    fused False (for accuracy) runs a QDQ graph as written: each DequantizeLinear -> op ->
    QuantizeLinear in float, which is what an int8 kernel with int32 accumulation computes (up to
    float rounding). fused True lets onnxruntime fuse them into its integer kernels (QLinearConv):
    faster, but on x86 CPUs without VNNI its u8 x s8 products saturate at int16, which cost a
    MobileNetV2-Tiny on digits 20 points of top-1 here (0.891 fp32, 0.886 unfused, 0.691 fused);
    a microcontroller's int8 kernels do not saturate so."""
    import onnxruntime as ort

    from netaug.train.runtime import cpus_given

    options = ort.SessionOptions()
    options.intra_op_num_threads = cpus_given()  # a trial's CPUs, not the machine's: trials beside it keep theirs
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = [session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0] for x in batches]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def initializer_bytes(path: str | Path) -> dict[str, int]:
    """Bytes of the model's initializers by data type name (e.g. {"INT8": ..., "INT32": ..., "FLOAT": ...})."""
    import onnx

    sizes: dict[str, int] = {}
    for init in onnx.load(str(path)).graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        name = onnx.TensorProto.DataType.Name(init.data_type)
        sizes[name] = sizes.get(name, 0) + int(array.nbytes)
    return sizes


@dataclass
class MemoryPeak:
    """The largest set of buffers alive at once, for one image, and where it happens."""

    peak_elements: int
    node: str  # the op and the module it came from (e.g. "Conv blocks.3.depthwise.conv")
    live: list[str]  # the buffers alive at the peak (tensor names)

    def bytes(self, bytes_per_element: int) -> int:
        return self.peak_elements * bytes_per_element

    def to_dict(self) -> dict:
        return asdict(self)


def _elements(value_info, batch: int) -> int:
    dims = value_info.type.tensor_type.shape.dim
    n = 1
    for d in dims:
        n *= d.dim_value if d.HasField("dim_value") else batch
    return n


def true_peak(path: str | Path, explicit_pads: bool = False) -> MemoryPeak:
    """Peak of live activation buffers over an execution-order walk of the graph (batch 1).

    `explicit_pads`: count the PAD op a TFLite converter puts before each conv whose padding is neither
    TensorFlow's SAME nor VALID (PyTorch pads a stride-2 3x3 conv by 1 on both sides; SAME pads 0 before
    and 1 after an even input): the padded copy is a buffer of its own, alive from the PAD to the conv, and
    at the PAD step the conv's unpadded input is alive beside it (what TFLite Micro's planner allocates)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    steps: list[tuple[object, list[str], list[tuple[str, int]], str]] = []  # node, inputs, (output, size), label
    for node in graph.node:
        pad = _explicit_pad(node, infos) if explicit_pads else None
        inputs, label = list(node.input), _label(node, weights)
        if pad is not None:
            padded = f"{node.input[0]}#padded"
            steps.append((node, [node.input[0]], [(padded, pad)], f"Pad before {label}"))
            inputs[0] = padded
        steps.append((node, inputs, [(o, _elements(infos[o], 1)) for o in node.output if o in infos], label))
    buffer_of: dict[str, str] = {}  # tensor -> the buffer holding it (in-place ops share their input's)
    size: dict[str, int] = {}
    born: dict[str, int] = {}
    dies: dict[str, int] = {}
    for inp in graph.input:
        if inp.name not in weights:
            buffer_of[inp.name] = inp.name
            size[inp.name], born[inp.name], dies[inp.name] = _elements(inp, 1), -1, -1
    for i, (node, inputs, outputs, _) in enumerate(steps):
        data_inputs = [t for t in inputs if t and t in buffer_of]
        for t in data_inputs:
            dies[buffer_of[t]] = i
        for j, (out, elements) in enumerate(outputs):
            if node.op_type in IN_PLACE_OPS and j == 0 and data_inputs:
                buffer_of[out] = buffer_of[data_inputs[0]]
            else:
                buffer_of[out] = out
                size[out], born[out], dies[out] = elements, i, i
    for out in graph.output:
        dies[buffer_of[out.name]] = len(steps)
    best = (0, -1, [])
    for i in range(len(steps)):
        live = [b for b in size if born[b] <= i <= dies[b]]
        total = sum(size[b] for b in live)
        if total > best[0]:
            best = (total, i, live)
    total, i, live = best
    return MemoryPeak(total, steps[i][3] if i >= 0 else "-", live)


def _explicit_pad(node, infos: dict) -> int | None:
    """Elements of the padded input a TFLite PAD op would make for this Conv (None: SAME or VALID, no PAD)."""
    import onnx

    if node.op_type != "Conv" or node.input[0] not in infos:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    pads = list(attrs.get("pads", []))
    if not any(pads):
        return None
    dims = [d.dim_value for d in infos[node.input[0]].type.tensor_type.shape.dim]
    spatial = dims[2:]
    strides = list(attrs.get("strides", [1] * len(spatial)))
    kernel = list(attrs.get("kernel_shape", []))
    dilations = list(attrs.get("dilations", [1] * len(spatial)))
    n = len(spatial)
    same = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        same.append((total // 2, total - total // 2))
    if [(pads[i], pads[i + n]) for i in range(n)] == same:
        return None
    padded = [size + pads[i] + pads[i + n] for i, size in enumerate(spatial)]
    elements = dims[1]
    for p in padded:
        elements *= p
    return elements


def _label(node, weights: set[str]) -> str:
    """"Conv blocks.2.depthwise.conv": the op and the module it came from (its weight's name, or the
    TorchScript exporter's node scope "/blocks.2/depthwise/conv/Conv" when BN folding renamed the weight)."""
    weight = next((t for t in node.input if t in weights), None)
    if weight is not None and not weight.startswith("onnx::"):
        return f"{node.op_type} {weight.removesuffix('.weight')}"
    if node.name.startswith("/") and node.name.count("/") > 1:
        return f"{node.op_type} " + ".".join(node.name.strip("/").split("/")[:-1])
    return f"{node.op_type} {node.name}".strip()
