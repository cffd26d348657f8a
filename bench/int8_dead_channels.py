"""Dead channels and int8: why an int8 model can collapse while its fp32 twin is fine.

    python bench/int8_dead_channels.py studies/equal-compute/cell-a                  # every final model
    python bench/int8_dead_channels.py studies/equal-compute/cell-a --models reparam_s1 --detail
    python bench/int8_dead_channels.py studies/equal-compute/cell-a --models reparam_s1 --qat-epochs 1

A channel that is exactly 0 after its activation on every calibration image (a "dead" channel) gives the
weights that read it no gradient, and a BatchNorm that normalises it (a reparam branch's, say) ends with a
running variance near 0, so folding it multiplies those weights by up to 1/sqrt(eps). In fp32 they multiply
0 and do no harm. At int8 they do: a conv's weights are quantized per output channel, so one huge weight on a
dead input sets its output channel's scale, and that channel's other weights round to 0.

For each fp32 ONNX model of a run's final stage (`final/models/<arm>_s<seed>.onnx`) this finds the dead input
channels of every Conv and Gemm on the run's own calibration images (`deploy.calib_images`, as the final stage
quantizes), zeroes the weights that read them, and scores the model and its int8 model (the product's own
post-training quantization) before and after, on val and test. Zeroing changes nothing where the channels are
dead, which the fp32 scores check on val and test. `--qat-epochs N` adds the product's own remedy for a lossy
int8 model, N epochs of QAT (`deploy.qat_epochs`, at `deploy.qat_lr` or the training rate / 100) from the
saved model (`final/models/<stem>.pt`), without the zeroing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.config import SpaceConfig, from_dict  # noqa: E402
from netaug.errors import UserError  # noqa: E402


@dataclass
class DeadInputs:
    """The dead input channels of one layer and the weights that read them."""

    node: str
    channels: list[int]
    largest_dead: float  # the largest |weight| reading a dead channel
    largest_live: float  # the largest |weight| reading a live one


def fp32_models(run: Path, names: list[str] | None) -> list[Path]:
    folder = run / "final" / "models"
    found = sorted(p for p in folder.glob("*.onnx") if not p.name.endswith((".int8.onnx", ".qat.onnx")))
    if names:
        missing = [n for n in names if not (folder / f"{n}.onnx").is_file()]
        if missing:
            raise UserError(f"--models: {folder / (missing[0] + '.onnx')} is missing")
        found = [folder / f"{n}.onnx" for n in names]
    if not found:
        raise UserError(f"run: {folder} holds no fp32 ONNX model (the final stage has not exported one)")
    return found


def weighted_layers(model) -> list[tuple[object, object]]:
    """(node, weight initializer) for every Conv, and every Gemm with transB=1 (weights [out, in])."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv" or (node.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i == 1):
            out.append((node, inits[node.input[1]]))
    return out


def input_maxima(path: Path, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    """max |x| per channel of every weighted layer's input over `batches` (the graph's own input excluded)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(path))
    graph_inputs = {i.name for i in model.graph.input}
    wanted = sorted({node.input[0] for node, _ in weighted_layers(model)} - graph_inputs)
    present = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as named
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    maxima: dict[str, np.ndarray] = {}
    for x in batches:
        for name, value in zip(wanted, session.run(wanted, {feed: x})):
            value = np.abs(value.reshape(value.shape[0], value.shape[1], -1)).max(axis=(0, 2))
            maxima[name] = value if name not in maxima else np.maximum(maxima[name], value)
    return maxima


def zero_dead_inputs(path: Path, out: Path, maxima: dict[str, np.ndarray]) -> list[DeadInputs]:
    """Write `path` with the weights reading a dead input channel set to 0 to `out`; return what was found."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    found = []
    for node, init in weighted_layers(model):
        seen = maxima.get(node.input[0])
        if seen is None or not (dead := [int(c) for c in np.flatnonzero(seen == 0)]):
            continue
        w = numpy_helper.to_array(init).copy()
        groups = next((a.i for a in node.attribute if a.name == "group"), 1) if node.op_type == "Conv" else 1
        per_group_in, per_group_out = w.shape[1], w.shape[0] // groups
        reads = np.zeros(w.shape, dtype=bool)  # which weights read a dead channel
        for c in dead:
            g = c // per_group_in
            reads[g * per_group_out:(g + 1) * per_group_out, c % per_group_in] = True
        found.append(DeadInputs(node.name, dead, float(np.abs(w[reads]).max()),
                                float(np.abs(w[~reads]).max()) if (~reads).any() else 0.0))
        w[reads] = 0.0
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(out))
    return found


def top1(path: Path, split: tuple[list[np.ndarray], np.ndarray]) -> float:
    from netaug.train.quantize import onnx_logits

    return float((onnx_logits(path, split[0]).argmax(1) == split[1]).mean())


def qat_scores(path: Path, cfg: SpaceConfig, data, epochs: int, calibration, val, test, tmp: Path) -> list[float]:
    """int8 val and test top-1 after `epochs` of the product's QAT from the saved model at `path`.pt."""
    import dataclasses

    from netaug.train.deploy import export_onnx
    from netaug.train.export import load_exported
    from netaug.train.qat import qat_finetune
    from netaug.train.quantize import quantize_int8

    model = load_exported(path.with_suffix(".pt"))[0]
    tuned_cfg = dataclasses.replace(cfg, sharing=dataclasses.replace(cfg.sharing, enabled=False))  # as deploy does
    tuned = qat_finetune(model, tuned_cfg, data, epochs, cfg.deploy.qat_lr or cfg.training.lr / 100)
    shape = (data.in_channels, data.resolution, data.resolution)
    fp32 = export_onnx(tuned, tmp / f"{path.stem}.qat.onnx", shape)
    int8 = quantize_int8(fp32, tmp / f"{path.stem}.qat.int8.onnx", calibration)
    return [top1(int8, val), top1(int8, test)]


def arrays(batcher, split, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
    xs, ys = zip(*[(x.float().contiguous().numpy(), y.numpy()) for x, y in batcher.batches(split, batch_size)])
    return list(xs), np.concatenate(ys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run", type=Path, help="a run directory whose final stage exported its models")
    parser.add_argument("--models", nargs="+", metavar="STEM", help="e.g. reparam_s1 (default: every fp32 model)")
    parser.add_argument("--detail", action="store_true", help="list each layer's dead inputs and weights")
    parser.add_argument("--qat-epochs", type=int, default=0, metavar="N",
                        help="also score int8 after N epochs of the product's QAT (default 0: not run)")
    args = parser.parse_args(argv)
    try:
        space = args.run / "space.json"
        if not space.is_file():
            raise UserError(f"run: {space} is missing; pass the directory of a main job's run")
        cfg = from_dict(SpaceConfig, json.loads(space.read_text()))
        models = fp32_models(args.run, args.models)
        if args.qat_epochs < 0:
            raise UserError(f"--qat-epochs: {args.qat_epochs} is negative")
        missing = [p.with_suffix(".pt") for p in models if args.qat_epochs and not p.with_suffix(".pt").is_file()]
        if missing:
            raise UserError(f"--qat-epochs: {missing[0]} is missing (QAT starts from the saved model)")
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    from netaug.data import load_data, make_batcher
    from netaug.train.int8 import calibration_set
    from netaug.train.quantize import quantize_int8

    data = load_data(cfg.data)
    batcher = make_batcher(data, cfg.data)
    calibration = arrays(batcher, calibration_set(data, cfg.deploy.calib_images, cfg.data.split_seed), 64)[0]
    val, test = arrays(batcher, data.val, 512), arrays(batcher, data.test, 512)
    print(f"dead: 0 after the activation on all {cfg.deploy.calib_images} calibration images; top-1 on val "
          f"{len(val[1])} / test {len(test[1])}, int8 by the product's post-training quantization")
    print("| model | layers with dead inputs | dead inputs | largest weight on a dead input | on a live one "
          "| fp32 val | fp32 test | int8 val | int8 test | zeroed: fp32 val | fp32 test | int8 val | int8 test |"
          + (f" QAT {args.qat_epochs} ep: int8 val | int8 test |" if args.qat_epochs else ""))
    print("| --- " * (15 if args.qat_epochs else 13) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for path in models:
            zeroed = Path(tmp) / f"{path.stem}.zeroed.onnx"
            found = zero_dead_inputs(path, zeroed, input_maxima(path, calibration))
            scores = []
            for fp32 in (path, zeroed):
                int8 = quantize_int8(fp32, Path(tmp) / f"{fp32.stem}.int8.onnx", calibration)
                scores += [top1(fp32, val), top1(fp32, test), top1(int8, val), top1(int8, test)]
            if args.qat_epochs:
                scores += qat_scores(path, cfg, data, args.qat_epochs, calibration, val, test, Path(tmp))
            dead_w = max((f.largest_dead for f in found), default=0.0)
            live_w = max((f.largest_live for f in found), default=0.0)
            print(f"| {path.stem} | {len(found)} | {sum(len(f.channels) for f in found)} | {dead_w:.3g} | "
                  f"{live_w:.3g} | " + " | ".join(f"{s:.4f}" for s in scores) + " |", flush=True)
            if args.detail:
                for f in found:
                    print(f"    {f.node}: dead inputs {f.channels}, largest |w| on them {f.largest_dead:.4g}, "
                          f"on live ones {f.largest_live:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
