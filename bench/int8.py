"""fp32 against int8 for the delivered model of a run: test top-1 and images/s with onnxruntime on CPU.

    python bench/int8.py runs/<time>            # a finished main job's run directory
    python bench/int8.py runs/<time> --threads 1 --repeats 5
    python bench/int8.py --memory               # true peak SRAM vs the per-layer figure, built-in models
    python bench/int8.py runs/<time> --tflm     # plus TensorFlow Lite Micro's interpreter (the `tflite` extra)
    python bench/int8.py --memory --tflm        # TFLM's arena against our estimate, built-in ImageNet models

Rows: fp32 ONNX (onnxruntime, all graph optimisations); int8 QDQ as the accuracy figures are
measured (basic optimisations: each DequantizeLinear -> op -> QuantizeLinear in float, what an int8
kernel with int32 accumulation computes); int8 with onnxruntime's fused integer kernels (QLinearConv),
whose u8 x s8 products saturate at int16 on x86 CPUs without VNNI; and the int8 TFLite model when the
run wrote one and ai-edge-litert is installed. Speed is the median over repeats of the whole test
split at batch 1 and at batch 256, interleaved so that machine noise hits every row alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.config import SpaceConfig, from_dict  # noqa: E402
from netaug.errors import UserError  # noqa: E402


def session(path: Path, fused: bool, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batches_of(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[i:i + size]) for i in range(0, len(x), size)]


def memory_table(resolutions: list[int]) -> None:
    """Per-layer peak (one layer's input + output) against the true peak (execution-order walk, shortcuts
    alive) for MobileNetV2-Tiny and MCUNet, ImageNet-style (3 x R x R input, 1000 classes), int8 bytes."""
    import tempfile

    from netaug.models import build_model
    from netaug.train.deploy import export_onnx, peak_activation
    from netaug.train.quantize import true_peak

    print(f"{'model':<18}{'input':>8}{'per-layer KiB':>15}{'  at':<34}{'true peak KiB':>15}  at")
    for name in ("mobilenetv2_tiny", "mcunet"):
        for r in resolutions:
            model = build_model(name, 1000, 3, resolution=r).eval()
            per_layer, layer = peak_activation(model, (3, r, r))
            with tempfile.TemporaryDirectory() as tmp:
                peak = true_peak(export_onnx(model, Path(tmp) / "m.onnx", (3, r, r)))
            print(f"{name:<18}{r:>8}{per_layer / 1024:>15.1f}  {layer:<32}{peak.bytes(1) / 1024:>15.1f}  {peak.node}")


# The built-in models at their ImageNet settings (1000 classes): (name, width_mult, input side)
IMAGENET = [("mobilenetv2_tiny", None, 144), ("mobilenetv2", 0.35, 160), ("mobilenetv3", 0.35, 160),
            ("proxylessnas_mobile", 0.35, 160), ("mcunet", None, 176)]


def random_but_calibrated(name: str, width: float | None, side: int):
    """A built-in model with random weights whose BatchNorm statistics are re-estimated on random images, so
    every layer's int8 range is sane (TFLM refuses a layer whose output scale overflows its multiplier)."""
    import torch

    from netaug.augment import recalibrate_bn
    from netaug.models import build_model

    torch.manual_seed(0)
    model = build_model(name, 1000, 3, resolution=side, **({"width_mult": width} if width else {}))
    recalibrate_bn(model, [torch.randn(8, 3, side, side) for _ in range(2)])
    return model.eval()


def tflm_memory_table() -> None:
    """TFLM's smallest arena (activations = planned head, persistent = tail) against our true-peak estimate,
    with the delivered .tflite's buffers inlined, and the arena the converter's buffer offsets would need."""
    import tempfile

    from netaug.train.deploy import export_onnx
    from netaug.train.quantize import true_peak
    from netaug.train.tflite import export_tflite_int8
    from netaug.train.tflm import inline_buffers, smallest_arena

    kib = 1024.0
    print("| model | input | our estimate KiB | with PAD ops KiB | TFLM activations (head) KiB | persistent (tail) "
          "KiB | TFLM arena KiB | head / estimate | head / with PADs | arena / estimate | arena with buffer offsets "
          "KiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, width, side in IMAGENET:
        model = random_but_calibrated(name, width, side)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, Path(tmp) / "m.onnx", (3, side, side))
            estimate = true_peak(onnx_path).bytes(1)
            padded = true_peak(onnx_path, explicit_pads=True).bytes(1)
            calibration = [np.random.default_rng(0).standard_normal((8, 3, side, side), dtype=np.float32)]
            raw = export_tflite_int8(model, Path(tmp) / "m.tflite", (3, side, side), calibration).read_bytes()
        inlined = smallest_arena(inline_buffers(raw))
        offsets = smallest_arena(raw).bytes
        label = f"{name}" + (f" {width:g}" if width else "")
        print(f"| {label} | {side} | {estimate / kib:.1f} | {padded / kib:.1f} | {inlined.head / kib:.1f} | "
              f"{inlined.tail / kib:.1f} | {inlined.bytes / kib:.1f} | {inlined.head / estimate:.3f} | "
              f"{inlined.head / padded:.3f} | {inlined.bytes / estimate:.2f} | {offsets / kib:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, nargs="?", help="run directory of a finished main job (final/model.json)")
    parser.add_argument("--memory", action="store_true", help="only the true-peak table of the built-in models")
    parser.add_argument("--tflite", action="store_true", help="also convert the delivered model to int8 TFLite (in "
                        "a temporary folder) when the run has none; needs the `tflite` extra")
    parser.add_argument("--tflm", action="store_true", help="also run the int8 TFLite model on TensorFlow Lite "
                        "Micro's interpreter (with --memory: its arena for the built-in ImageNet models)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[96, 144, 160], help="--memory input sides")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per session (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the test split per row")
    args = parser.parse_args(argv)
    if args.memory:
        if args.tflm:
            tflm_memory_table()
        else:
            memory_table(args.resolutions)
        return 0
    if args.run is None:
        parser.error("pass a run directory, or --memory")
    try:
        info_path = args.run / "final" / "model.json"
        if not info_path.is_file():
            raise UserError(f"run: {info_path} is missing; pass the directory of a finished main job")
        info = json.loads(info_path.read_text())
        if "int8" not in info:
            raise UserError(f"run: {info_path} has no int8 model (the run had deploy.int8 false)")
        cfg = from_dict(SpaceConfig, json.loads((args.run / "space.json").read_text()))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from netaug.data import load_data, make_batcher

    data = load_data(cfg.data)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in make_batcher(data, cfg.data).batches(data.test, 512)])
    x, labels = np.concatenate(xs), np.concatenate(ys)
    final = args.run / "final"
    rows: dict[str, object] = {
        "fp32 onnx": session(final / "model.onnx", True, args.threads),
        "int8 onnx (accuracy path)": session(final / "model.int8.onnx", False, args.threads),
        "int8 onnx (fused QLinear kernels)": session(final / "model.int8.onnx", True, args.threads),
    }
    tflite = final / "model.int8.tflite"
    if (args.tflite or args.tflm) and not tflite.is_file():  # build one beside the run, from the delivered model
        import tempfile

        from netaug.train.export import load_exported
        from netaug.train.int8 import calibration_set
        from netaug.train.tflite import export_tflite_int8

        model, _ = load_exported(final / "model.pt")
        calibration = [b.numpy() for b, _ in make_batcher(data, cfg.data).batches(
            calibration_set(data, cfg.deploy.calib_images, cfg.data.split_seed), 64)]
        tflite = Path(tempfile.mkdtemp()) / "model.int8.tflite"
        export_tflite_int8(model, tflite, tuple(x.shape[1:]), calibration)
    if tflite.is_file():
        try:
            import ai_edge_litert  # noqa: F401

            rows["int8 tflite (ai-edge-litert)"] = tflite
        except ImportError:
            print(f"note: {tflite} not timed: ai-edge-litert is not installed (pip install -e '.[tflite]')")

    arena = None
    if args.tflm and tflite.is_file():
        from netaug.train.tflm import inline_buffers, smallest_arena, tflm_logits

        tflm_data = inline_buffers(tflite.read_bytes())
        arena = smallest_arena(tflm_data)
        rows["int8 tflite (TFLite Micro)"] = ("tflm", tflm_data)

    def run(what, batch: int) -> np.ndarray:
        if isinstance(what, tuple):
            return tflm_logits(what[1], batches_of(x, 256), arena.bytes)[0]
        if isinstance(what, Path):
            from netaug.train.tflite import tflite_logits

            return tflite_logits(what, batches_of(x, batch))
        return np.concatenate([what.run(None, {"input": b})[0] for b in batches_of(x, batch)])

    reference = run(rows["fp32 onnx"], 256).argmax(1)
    print(f"{info['arm']} seed {info['seed']} of {args.run}: {len(x)} test images, {args.threads} thread(s), "
          f"median of {args.repeats}")
    times: dict[tuple[str, int], list[float]] = {}
    top1: dict[str, tuple[float, float]] = {}
    for name, what in rows.items():
        pred = run(what, 256).argmax(1)  # warm-up and accuracy
        top1[name] = (float((pred == labels).mean()), float((pred == reference).mean()))
    for _ in range(args.repeats):
        for name, what in rows.items():
            for batch in (1, 256):
                if isinstance(what, (Path, tuple)) and batch == 256:
                    continue  # the TFLite model's batch is 1
                start = time.perf_counter()
                run(what, batch)
                times.setdefault((name, batch), []).append(time.perf_counter() - start)
    base = top1["fp32 onnx"][0]
    print(f"{'model':<36}{'test top-1':>11}{'vs fp32':>9}{'agrees':>8}{'img/s b=1':>11}{'img/s b=256':>13}")
    for name in rows:
        acc, agree = top1[name]
        speed = [f"{len(x) / statistics.median(times[(name, b)]):.0f}" if (name, b) in times else "-"
                 for b in (1, 256)]
        print(f"{name:<36}{acc:>11.4f}{(acc - base) * 100:>+8.2f} {agree:>7.2%}{speed[0]:>11}{speed[1]:>13}")
    print(f"model.json: int8 test top-1 {info['int8']['test_top1']:.4f} ({info['int8']['method']}), "
          f"peak SRAM {info['memory']['true_peak_bytes_int8'] / 1024:.1f} KiB, "
          f"flash {info['memory']['flash_bytes_int8'] / 1024:.1f} KiB")
    if arena is not None:
        estimate = info["memory"]["true_peak_bytes_int8"]
        padded = info["memory"].get("tflite_peak_bytes_int8")
        with_pads = f", {arena.head / padded:.3f}x the estimate with PAD ops {padded / 1024:.1f} KiB" if padded else ""
        print(f"TFLite Micro: arena {arena.bytes / 1024:.1f} KiB = activations {arena.head / 1024:.1f} KiB "
              f"({arena.head / estimate:.3f}x our estimate {estimate / 1024:.1f} KiB{with_pads}) + persistent "
              f"{arena.tail / 1024:.1f} KiB; arena / estimate {arena.bytes / estimate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
