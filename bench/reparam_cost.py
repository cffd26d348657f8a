"""What does a re-parameterized training step cost against a plain step and a NetAug step?

    python bench/reparam_cost.py                       # both cells, 1 thread, 24 timed steps per recipe
    python bench/reparam_cost.py --fmnist-root DIR     # Fashion-MNIST somewhere else

Two cells, one after the other in one run; within a cell the recipes step round-robin on the same real training
batches (the product's own calibration, netaug/train/calibrate.py), so the machine's noise hits them alike:
- the study cell: MobileNetV2 width 0.1, 16 px, Fashion-MNIST (27,000 training images), batch 128, as
  `python -m search.evidence` trains it;
- MobileNetV2-Tiny at 32 px, batch 128 (digits resized to 32 px: the images' content does not change a step's cost).
Recipes: plain training, NetAug (r, s of the space; its width-augmented and its min_w phase) and reparam at
k = 0 (1x1 + identity branches only), 1 and 2. Printed per recipe: median ms per step and training FLOPs per step,
each against plain and against NetAug's width-augmented step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netaug.errors import exit_on_user_error  # noqa: E402

REPARAM_K = (0, 1, 2)


def cells(args) -> dict:
    """The two spaces timed, by name."""
    from types import SimpleNamespace

    from netaug.config import load_space
    from search.evidence.cells import study_space

    study = study_space(SimpleNamespace(space="spaces/netaug-official.yaml", schedule="official",
                                        overrides=["data.subset=27000", f"data.root={args.fmnist_root}",
                                                   "training.batch_size=128"]), "mobilenetv2@0.1", 40)
    tiny = load_space("spaces/mbv2.yaml", ["data.resolution=32", "training.batch_size=128", "training.epochs=40",
                                           "model.name=mobilenetv2_tiny"])
    return {"study cell: MobileNetV2 w0.1, 16 px, FMNIST 27k, batch 128": study,
            "MobileNetV2-Tiny, 32 px, batch 128": tiny}


def time_cell(space, steps: int) -> dict:
    """Every recipe's RecipeCost on this cell, measured round-robin."""
    from bench.equal_compute import with_keys
    from netaug.train.calibrate import calibrate
    from search.evaluation import cached_data

    recipes = {"netaug": (with_keys(space, training={"mode": "netaug"}), None)}
    for k in REPARAM_K:
        recipes[f"reparam k={k}"] = (with_keys(space, training={"mode": "reparam"}, reparam={"k": k}), None)
    return calibrate(recipes, cached_data(space), "seconds", steps, 4)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fmnist-root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--steps", type=int, default=24, help="timed steps per recipe and phase (after 4 warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the study's jobs use 1)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for title, space in cells(args).items():
        timed = time_cell(space, args.steps)
        plain, netaug = timed["baseline"].width, timed["netaug"].width
        print(f"{title}: {args.threads} thread(s), median of {args.steps} steps per recipe, round-robin")
        print(f"  {'recipe':<22}{'ms/step':>9}{'x plain':>9}{'x netaug':>10}{'GFLOP/step':>12}{'x plain':>9}"
              f"{'x netaug':>10}")
        rows = [("plain", plain), ("netaug (width phase)", netaug), ("netaug (min_w phase)", timed["netaug"].min_w)]
        rows += [(name, timed[name].width) for name in timed if name.startswith("reparam")]
        for name, step in rows:
            print(f"  {name:<22}{step.seconds * 1e3:9.1f}{step.seconds / plain.seconds:9.2f}"
                  f"{step.seconds / netaug.seconds:10.2f}{step.flops / 1e9:12.4f}{step.flops / plain.flops:9.2f}"
                  f"{step.flops / netaug.flops:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
