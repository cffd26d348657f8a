"""The int8 TFLite model on TensorFlow Lite for Microcontrollers' own interpreter (PyPI `tflite-micro`):
its reference int8 kernels, its memory planner, its arena.

- `inline_buffers`: litert-torch writes large constant buffers after the flatbuffer (buffer offsets).
  TFLM then places those weights in the tensor arena, i.e. in SRAM (measured: the arena of
  MobileNetV2-Tiny at 16 px is 389,712 bytes with offsets, 93,792 with the same model inlined; the
  difference is exactly the 295,920 offset bytes). The delivered .tflite is rewritten with every buffer
  inline, so weights stay in flash.
- `smallest_arena`: the smallest `arena_size` for which TFLM allocates (bisection on the interpreter
  itself), with the recording allocator's head (activations and scratch, planned) and tail (persistent:
  per-channel quantization data, node structs) at that size.
- `tflm_logits`: every image through TFLM, quantized and dequantized with the model's own parameters.
A model TFLM cannot run (an op its resolver lacks, a kernel that fails to prepare) raises
`TFLMUnsupported` with TFLM's own message line naming the op.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class TFLMUnsupported(Exception):
    """TFLM cannot run the model; the message is one line naming the op."""


@contextlib.contextmanager
def captured_fds() -> Iterator[list[str]]:
    """Collect what C++ code writes to file descriptors 1 and 2 (TFLM prints there) into the yielded list."""
    out: list[str] = []
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield out
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            out.extend(sink.read().decode(errors="replace").splitlines())


def inline_buffers(data: bytes) -> bytes:
    """The same TFLite model with every buffer's bytes inside the flatbuffer (no buffer offsets)."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    moved = False
    for buf in model.buffers or []:
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(data[buf.offset:buf.offset + buf.size], dtype=np.uint8)
            buf.offset, buf.size = 0, 0
            moved = True
    if not moved:
        return data
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _unsupported_reason(lines: list[str]) -> str:
    """TFLM's line naming the op it lacks or that failed to prepare (else its first line)."""
    for pattern in (r"Didn't find op for builtin opcode '?([A-Z0-9_]+)'?", r"Node ([A-Z0-9_]+) \(number \d+\) failed"):
        for line in lines:
            m = re.search(pattern, line)
            if m:
                detail = next((x.strip() for x in lines if "was not true" in x), "")
                what = "lacks the op" if "Didn't find" in pattern else "cannot prepare the op"
                return f"TFLM {what} {m.group(1)}" + (f" ({detail})" if detail else "")
    return f"TFLM failed to load the model: {lines[0].strip() if lines else 'no message'}"


def interpreter(data: bytes, arena_size: int):
    """A TFLM interpreter of `data` with an `arena_size`-byte arena (TFLM's messages kept off the terminal)."""
    from tflite_micro.python.tflite_micro import runtime

    with captured_fds() as lines:
        try:
            return runtime.Interpreter.from_bytes(data, arena_size=arena_size)
        except RuntimeError:
            pass
    if _out_of_memory(lines):
        raise MemoryError(f"an arena of {arena_size} bytes is too small")
    raise TFLMUnsupported(_unsupported_reason(lines))


def _out_of_memory(lines: list[str]) -> bool:
    return any("Failed to resize buffer" in x or "Failed to allocate" in x or "Unable to allocate" in x
               for x in lines)


@dataclass
class Arena:
    bytes: int  # the smallest arena_size that allocates
    head: int  # planned non-persistent memory: activations and scratch buffers
    tail: int  # persistent memory: quantization parameters, tensor and node structs


def smallest_arena(data: bytes, high: int | None = None) -> Arena:
    """Bisection on `arena_size` for the smallest arena TFLM allocates the model in."""
    high = high or max(1 << 16, len(data) * 10)
    while True:
        try:
            interpreter(data, high)
            break
        except MemoryError:
            high *= 2
    low = 1024  # below this TFLM fails in its own set-up, before planning anything
    while low < high:
        mid = (low + high) // 2
        try:
            interpreter(data, mid)
            high = mid
        except (MemoryError, TFLMUnsupported):  # it loads at `high`: a failure below is the arena's size
            low = mid + 1
    it = interpreter(data, low)
    with captured_fds() as lines:
        it.print_allocations()
    figures = {k: int(v) for k, v in re.findall(r"Arena allocation (head|tail) (\d+) bytes", "\n".join(lines))}
    return Arena(low, figures.get("head", 0), figures.get("tail", 0))


def tflm_logits(data: bytes, batches: Iterable[np.ndarray], arena_size: int) -> tuple[np.ndarray, float]:
    """(float logits of every image of the float32 NCHW `batches`, seconds per image) on TFLM."""
    it = interpreter(data, arena_size)
    inp, out = it.get_input_details(0), it.get_output_details(0)
    (s_in,), (z_in,) = inp["quantization_parameters"]["scales"], inp["quantization_parameters"]["zero_points"]
    (s_out,), (z_out,) = out["quantization_parameters"]["scales"], out["quantization_parameters"]["zero_points"]
    info = np.iinfo(inp["dtype"])
    logits, seconds, n = [], 0.0, 0
    for x in batches:
        for i in range(len(x)):
            q = np.clip(np.round(x[i:i + 1] / s_in) + z_in, info.min, info.max).astype(inp["dtype"])
            start = time.perf_counter()
            it.set_input(q.reshape(inp["shape"]), 0)
            it.invoke()
            y = it.get_output(0)
            seconds += time.perf_counter() - start
            logits.append((y.astype(np.float32).reshape(1, -1) - z_out) * s_out)
            n += 1
    return np.concatenate(logits), seconds / max(1, n)


def write_inline(path: Path) -> bytes:
    """Rewrite the .tflite at `path` with inline buffers (temporary name, then rename); returns its bytes."""
    from netaug.io import atomic_path

    data = inline_buffers(path.read_bytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return data
