"""`python -m netaug.train --space spaces/mbv2.yaml --mode netaug [--set key=value ...] [--out DIR]`.

Trains the base model (plain or with NetAug), shows a progress bar, writes TensorBoard scalars,
logs every sampled sub-network to archs.jsonl, and saves the exported base (base.pt) and the
final metrics (metrics.json) in the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from netaug.config import MODES, TEACHER_MODES, load_space
from netaug.errors import UserError, exit_on_user_error
from netaug.io import atomic_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m netaug.train", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", required=True, help="space file (YAML), e.g. spaces/mbv2.yaml")
    p.add_argument("--mode", choices=MODES, default=None, help="training mode (default: training.mode of the space)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a space key, e.g. --set training.epochs=5 (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default: runs/train-<mode>-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    return p.parse_args(argv)


def write_json(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = args.overrides + ([f"training.mode={args.mode}"] if args.mode else [])
    cfg = load_space(args.space, overrides)
    mode = cfg.training.mode
    out = Path(args.out or f"runs/train-{mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a folder")

    # Heavy imports after validation, so that bad input fails fast.
    from torch.utils.tensorboard import SummaryWriter

    from netaug.data import load_data
    from netaug.models import profile_macs
    from netaug.train.export import save_exported
    from netaug.train.runtime import configure_threads
    from netaug.train.trainer import Trainer

    threads = configure_threads()
    data = load_data(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "space.json", cfg.to_dict())
    arch_file = open(out / "archs.jsonl", "w", buffering=1)

    def log_arch(entry: dict) -> None:
        arch_file.write(json.dumps(entry) + "\n")

    trainer = Trainer(cfg, data, arch_log=log_arch)
    input_shape = (data.in_channels, data.resolution, data.resolution)
    base_macs, base_params = profile_macs(trainer.export_base() if mode == "reparam" else trainer.model, input_shape)
    print(f"data: {data.name} train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, "
          f"{data.num_classes} classes, {data.resolution}px | device {trainer.device}, {threads} threads")
    line = f"model: {cfg.model.label} base {base_macs / 1e6:.2f}M MACs {base_params / 1e6:.3f}M params"
    if trainer.augmented is not None:
        trainer.augmented.set_active("max")
        aug_macs, aug_params = profile_macs(trainer.model, input_shape)
        trainer.augmented.set_active("min")
        line += (f" | largest augmented {aug_macs / 1e6:.2f}M MACs {aug_params / 1e6:.3f}M params "
                 f"(r={cfg.netaug.r:g}, s={cfg.netaug.s}, alpha={cfg.netaug.aug_loss_weight:g})")
    if mode == "reparam":  # what a training step runs; the exported base is the model above
        rep_macs, rep_params = profile_macs(trainer.model, input_shape)
        line += f" | branched while training {rep_macs / 1e6:.2f}M MACs {rep_params / 1e6:.3f}M params"
    print(f"{line} | mode {mode}", flush=True)

    writer = SummaryWriter(str(out / "tb"))
    bar = tqdm(total=cfg.training.epochs * trainer.steps_per_epoch, unit="step", dynamic_ncols=True,
               disable=True if args.no_progress else None, file=sys.stderr)

    def on_step(losses: dict) -> None:
        bar.update(1)
        if bar.n % 20 == 1:  # reading a device-side loss is a host sync: not every step
            bar.set_postfix(loss=f"{float(losses['loss']):.3f}", epoch=trainer.epoch + 1, refresh=False)

    def on_epoch(rec) -> None:
        for key in ("train_loss", "base_loss", "aug_loss", "teacher_loss", "distill_loss", "lr", "epoch_s"):
            writer.add_scalar(f"train/{key}", getattr(rec, key), rec.epoch)
        for key in ("train_s", "train_flops"):  # cumulative training cost (netaug/train/cost.py)
            writer.add_scalar(f"cost/{key}", getattr(rec, key), rec.epoch)
        for key, value in rec.val.items():
            writer.add_scalar(f"val/base_{key}", value, rec.epoch)
        parts = [f"base {rec.base_loss:.4f}"]
        if mode in trainer.AUG_MODES:
            parts.append(f"aug {rec.aug_loss:.4f}")
        if mode in TEACHER_MODES:
            parts += [f"teacher {rec.teacher_loss:.4f}", f"distill {rec.distill_loss:.4f}"]
        msg = (f"epoch {rec.epoch + 1}/{cfg.training.epochs} loss {rec.train_loss:.4f} ({', '.join(parts)}) "
               f"val top1 {rec.val['top1']:.4f} lr {rec.lr:.4f} {rec.epoch_s:.1f}s")
        tqdm.write(msg, file=sys.stdout)

    start = time.perf_counter()
    history = trainer.fit(on_epoch=on_epoch, progress=on_step)
    train_s = time.perf_counter() - start
    bar.close()
    arch_file.close()

    subnets = trainer.sub_networks() or [("base", "min")]
    results = {split: trainer.evaluate(split, subnets) for split in ("val", "test")}
    exported = trainer.export_base()
    save_exported(out / "base.pt", exported, data, {"model_name": cfg.model.label, "mode": mode,
                                                    "space": cfg.to_dict()})
    metrics = {
        "mode": mode, "epochs": len(history), "train_s": train_s, "train_step_s": trainer.train_seconds,
        "train_flops": trainer.train_flops,
        "mean_step_s": sum(r.step_s for r in history) / max(1, len(history)),
        "base_macs": base_macs, "base_params": base_params,
        **{f"{split}_{name}_{key}": value for split, res in results.items()
           for name, r in res.items() for key, value in r.summary().items()},
        "history": [vars(r) for r in history],
    }
    write_json(out / "metrics.json", metrics)
    for split, res in results.items():
        writer.add_scalar(f"final/{split}_base_top1", res["base"].top1, len(history))
    writer.close()

    for split in ("val", "test"):
        parts = [f"{name} top1 {r.top1:.4f} top5 {r.top5:.4f}" for name, r in results[split].items()]
        print(f"{split}: " + " | ".join(parts))
    print(f"training cost: {trainer.train_seconds:.1f}s of steps, {trainer.train_flops / 1e12:.4g} TFLOP "
          "(forward + backward of every pass)")
    print(f"trained in {train_s:.1f}s; exported base -> {out / 'base.pt'}; metrics -> {out / 'metrics.json'}; "
          f"TensorBoard -> {out / 'tb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
