"""Dead channels and int8: why an int8 model can collapse while its fp32 twin is fine.

    python bench/int8_dead_channels.py studies/equal-compute/cell-a                  # every final model
    python bench/int8_dead_channels.py studies/equal-compute/cell-a --models reparam_s1 --detail
    python bench/int8_dead_channels.py studies/equal-compute/cell-a --models reparam_s1 --qat-epochs 1

A channel that is exactly 0 after its activation on every calibration image (a "dead" channel) gives the
weights that read it no gradient, and a BatchNorm that normalises it (a reparam branch's, say) can end with a
running variance near 0, so folding it multiplies those weights by up to 1/sqrt(eps). In fp32 they multiply
0 and do no harm. At int8 they do: a conv's weights are quantized per output channel, so one huge weight on a
dead input sets its output channel's scale, and that channel's other weights round to 0.

The final stage quantizes without those weights (`deploy.zero_dead_inputs`, on by default; netaug/train/dead_inputs.py).
For each saved model of a run's final stage (`final/models/<arm>_s<seed>.pt`) this scores, on val and test, the
fp32 model and its int8 model (the product's post-training quantization, calibrated on the run's own
`deploy.calib_images`) as they are and with the weights on dead channels zeroed: the fp32 scores check that
zeroing changed nothing. `--qat-epochs N` adds the other remedy, N epochs of QAT (`deploy.qat_epochs`, at
`deploy.qat_lr` or the training rate / 100) from the saved model, without the zeroing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.config import SpaceConfig, from_dict  # noqa: E402
from netaug.errors import UserError  # noqa: E402


def saved_models(run: Path, names: list[str] | None) -> list[Path]:
    folder = run / "final" / "models"
    found = sorted(p for p in folder.glob("*.pt"))
    if names:
        missing = [n for n in names if not (folder / f"{n}.pt").is_file()]
        if missing:
            raise UserError(f"--models: {folder / (missing[0] + '.pt')} is missing")
        found = [folder / f"{n}.pt" for n in names]
    if not found:
        raise UserError(f"run: {folder} holds no saved model (the final stage has not exported one)")
    return found


def top1(path: Path, split: tuple[list[np.ndarray], np.ndarray]) -> float:
    from netaug.train.quantize import onnx_logits

    return float((onnx_logits(path, split[0]).argmax(1) == split[1]).mean())


def qat_scores(path: Path, cfg: SpaceConfig, data, epochs: int, calibration, val, test, tmp: Path) -> list[float]:
    """int8 val and test top-1 after `epochs` of the product's QAT from the saved model at `path`."""
    import dataclasses

    from netaug.train.deploy import export_onnx
    from netaug.train.export import load_exported
    from netaug.train.qat import qat_finetune
    from netaug.train.quantize import quantize_int8

    model = load_exported(path)[0]
    tuned_cfg = dataclasses.replace(cfg, sharing=dataclasses.replace(cfg.sharing, enabled=False))  # as deploy does
    tuned = qat_finetune(model, tuned_cfg, data, epochs, cfg.deploy.qat_lr or cfg.training.lr / 100)
    shape = (data.in_channels, data.resolution, data.resolution)
    fp32 = export_onnx(tuned, tmp / f"{path.stem}.qat.onnx", shape)
    int8 = quantize_int8(fp32, tmp / f"{path.stem}.qat.int8.onnx", calibration)
    return [top1(int8, val), top1(int8, test)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run", type=Path, help="a run directory whose final stage saved its models")
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
        models = saved_models(args.run, args.models)
        if args.qat_epochs < 0:
            raise UserError(f"--qat-epochs: {args.qat_epochs} is negative")
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    from netaug.data import load_data, make_batcher
    from netaug.train.dead_inputs import without_dead_inputs
    from netaug.train.deploy import export_onnx
    from netaug.train.export import load_exported
    from netaug.train.int8 import arrays, calibration_set
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
    shape = (data.in_channels, data.resolution, data.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        for path in models:
            model = load_exported(path)[0]
            zeroed, found = without_dead_inputs(model, calibration)
            scores = []
            for net, name in ((model, path.stem), (zeroed, f"{path.stem}.zeroed")):
                fp32 = export_onnx(net, Path(tmp) / f"{name}.onnx", shape)
                int8 = quantize_int8(fp32, Path(tmp) / f"{name}.int8.onnx", calibration)
                scores += [top1(fp32, val), top1(fp32, test), top1(int8, val), top1(int8, test)]
            if args.qat_epochs:
                scores += qat_scores(path, cfg, data, args.qat_epochs, calibration, val, test, Path(tmp))
            dead_w = max((f.largest_dead for f in found), default=0.0)
            live_w = max((f.largest_live for f in found), default=0.0)
            print(f"| {path.stem} | {len(found)} | {sum(len(f.channels) for f in found)} | {dead_w:.3g} | "
                  f"{live_w:.3g} | " + " | ".join(f"{s:.4f}" for s in scores) + " |", flush=True)
            if args.detail:
                for f in found:
                    print(f"    {f.layer}: dead inputs {f.channels}, largest |w| on them {f.largest_dead:.4g}, "
                          f"on live ones {f.largest_live:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
