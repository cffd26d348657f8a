"""NetAug on users' own PyTorch models: groups found, sizes, the step's cost, and the base's exactness.

    python bench/generic.py --steps 20            # the spaces/models files and MobileNetV2-Tiny
    .venv-zoo/bin/python bench/generic.py --zoo   # plus torchvision and timm models (the zoo extra)

Per model, in one process: the coupled channel groups found by tracing (width and middle groups), params
and MACs of the base and of the largest augmented model (r = 3, s = 2, expands up to 3), the median
`Trainer.step` of NetAug (netaug mode) over that of plain training (baseline mode) on the same random
batches, round-robin, and max |logit difference| between the "min" sub-network and the user's model in
train and eval mode. Then the built-in MobileNetV2-Tiny (32 px, batch 128) twice, through the one augmenter
and through the former hand-written twin (kept in tests/reference as the conformance suite's oracle), same
seeds, round-robin: the one augmenter's NetAug step over the hand-written one's, and their largest logit
difference over drawn sub-networks.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ROOT / "spaces" / "models"
LOCAL = [  # (label, factory, kwargs, input shape)
    ("ResNet-8 (MLPerf Tiny)", f"{MODELS}/resnet8.py:resnet8", {"num_classes": 10, "in_channels": 3}, (3, 32, 32)),
    ("DS-CNN (MLPerf Tiny)", f"{MODELS}/dscnn.py:dscnn", {"num_classes": 12, "in_channels": 1}, (1, 49, 10)),
    ("SE net (spaces/models/se_net.py)", f"{MODELS}/se_net.py:se_net", {"num_classes": 10, "in_channels": 1},
     (1, 16, 16)),
    ("MobileNetV2-Tiny as a module", "netaug.models:build_model",
     {"name": "mobilenetv2_tiny", "num_classes": 10, "in_channels": 3, "resolution": 32}, (3, 32, 32)),
]
ZOO = [
    ("torchvision mobilenet_v2(0.35)", "torchvision.models:mobilenet_v2", {"width_mult": 0.35, "num_classes": 10},
     (3, 32, 32)),
    ("torchvision mnasnet0_5", "torchvision.models:mnasnet0_5", {"num_classes": 10}, (3, 32, 32)),
    ("torchvision mobilenet_v3_small", "torchvision.models:mobilenet_v3_small", {"num_classes": 10}, (3, 32, 32)),
    ("timm mobilenetv3_small_050", "timm:create_model", {"model_name": "mobilenetv3_small_050", "num_classes": 10},
     (3, 32, 32)),
]


def median_steps(trainers: dict, shape: tuple[int, ...], classes: int, batch: int, steps: int) -> dict[str, float]:
    """Median seconds of `Trainer.step` per trainer, round-robin on the same random batches."""
    import torch

    from bench.equal_compute import round_robin

    g = torch.Generator().manual_seed(0)
    batches = ((torch.randn(batch, *shape, generator=g), torch.randint(classes, (batch,), generator=g))
               for _ in iter(int, 1))
    return round_robin(trainers, batches, steps)


def min_difference(module, aug, shape) -> float:
    """Largest |logit difference| of the min sub-network against the user's model, train and eval mode."""
    import torch

    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    for train in (True, False):
        ref, twin = copy.deepcopy(module).train(train), copy.deepcopy(aug).train(train)
        twin.set_active("min")
        torch.manual_seed(2)
        want = ref(x)
        torch.manual_seed(2)
        worst = max(worst, (twin(x) - want).abs().max().item())
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per trainer (after 3 warm-up steps)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--zoo", action="store_true", help="also torchvision and timm models (needs the zoo extra)")
    p.add_argument("--configs", type=int, default=50, help="drawn sub-networks compared, hand-written vs one augmenter")
    p.add_argument("--batch-builtin", type=int, default=128, help="batch of the MobileNetV2-Tiny step comparison")
    p.add_argument("--builtin-only", action="store_true", help="only the MobileNetV2-Tiny comparison")
    args = p.parse_args(argv)

    import torch

    from netaug.augment import augment, augment_module
    from netaug.augment.generic import ModuleNet
    from netaug.config import load_space
    from netaug.data import load_data
    from netaug.models import build_model, profile_macs
    from netaug.models.user import load_factory
    from netaug.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    grid = [1.0, 2.0, 3.0]
    data = load_data(load_space(None, ["data.resolution=16"]).data)  # the trainer needs splits; steps use their own
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.steps} timed steps; "
          "r = 3, s = 2 (widths 1, 2, 3), expands 1, 2, 3")
    print("| model | input | width / middle groups | base params / MACs | largest params / MACs | NetAug step ÷ plain "
          "| min vs user's model (max abs logit) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    sys.path.insert(0, str(ROOT / "tests"))
    from reference.twin import augment as reference_augment  # the former hand-written twin

    for label, ref, kwargs, shape in [] if args.builtin_only else LOCAL + (ZOO if args.zoo else []):
        torch.manual_seed(0)
        module = load_factory(ref)(**kwargs)
        aug = augment_module(module, grid, grid, torch.zeros(1, *shape))
        base_macs, base_params = profile_macs(aug.export("min"), shape)
        aug.set_active("max")
        max_macs, max_params = profile_macs(aug, shape)
        diff = min_difference(module, aug, shape)
        trainers = {}
        for mode in ("baseline", "netaug"):
            cfg = load_space(None, [f"training.mode={mode}", "netaug.r=3", "netaug.s=2", "training.batch_size="
                                    f"{args.batch}"])
            trainers[mode] = Trainer(cfg, data, mode, base=ModuleNet(copy.deepcopy(module), shape))
        times = median_steps(trainers, shape, kwargs["num_classes"], args.batch, args.steps)
        print(f"| {label} | {'x'.join(map(str, shape))} | {aug.num_width_groups} / {aug.num_expand_groups} | "
              f"{base_params / 1e3:.1f}k / {base_macs / 1e6:.2f}M | {max_params / 1e3:.1f}k / {max_macs / 1e6:.2f}M | "
              f"{times['netaug'] / times['baseline']:.2f} ({times['netaug'] * 1e3:.1f} / "
              f"{times['baseline'] * 1e3:.1f} ms) | {diff:.1e} |", flush=True)

    # the built-in MobileNetV2-Tiny: the one augmenter against the former hand-written twin (the conformance oracle)
    shape = (3, 32, 32)
    torch.manual_seed(0)
    base = build_model("mobilenetv2_tiny", 10, 3, resolution=32)
    torch.manual_seed(1)
    one = augment(base, grid, grid, init="augmented")
    torch.manual_seed(1)
    hand = reference_augment(base, grid, grid, init="augmented")
    g_one, g_hand = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = torch.randn(4, *shape)
    worst = 0.0
    one.eval(), hand.eval()
    with torch.no_grad():
        for i in range(args.configs):
            one.set_active("random" if i else "max", g_one)
            hand.set_active("random" if i else "max", g_hand)
            worst = max(worst, (hand(x) - one(x)).abs().max().item())
    steppers = {"hand": NetAugStep(hand, args.batch_builtin), "one": NetAugStep(one, args.batch_builtin)}
    times = round_robin_calls(steppers, args.steps)
    print(f"\nMobileNetV2-Tiny {'x'.join(map(str, shape))}, batch {args.batch_builtin}, NetAug step (base + one "
          f"random sub-network, forward, backward, SGD): one augmenter {times['one'] * 1e3:.1f} ms / hand-written "
          f"{times['hand'] * 1e3:.1f} ms = {times['one'] / times['hand']:.3f}; max |logit difference| over "
          f"{args.configs} drawn sub-networks (same seeds): {worst:.1e}")


class NetAugStep:
    """One NetAug step on an augmented model: the base's loss and one random sub-network's, then SGD."""

    def __init__(self, model, batch: int) -> None:
        import torch

        self.model = model.train()
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(5)
        self.x, self.y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(10, (batch,), generator=g)
        self.gen = torch.Generator().manual_seed(6)

    def __call__(self) -> None:
        import torch.nn.functional as F

        self.opt.zero_grad(set_to_none=True)
        self.model.set_active("min")
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.model.set_active("random", self.gen)
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()


def round_robin_calls(calls: dict, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each callable, called in turn (so machine load falls on all alike)."""
    import statistics
    import time

    seconds: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(warmup + steps):
        for k, call in calls.items():
            t = time.perf_counter()
            call()
            if i >= warmup:
                seconds[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in seconds.items()}


if __name__ == "__main__":
    main()
