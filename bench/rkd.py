"""What RKD costs: the Gram-matrix form against the direct (N, N, D) form, and NetAug+RKD's epoch.

    python bench/rkd.py                                  # the loss alone, then the study cell's epoch
    python bench/rkd.py --no-cell                        # the loss alone (seconds)

1. Forward + backward of w_d RKD-D + w_a RKD-A (student with a gradient, teacher without) at
   N = 128 and D in {10, 448, 1280}, both forms interleaved, median of repeats: the direct form
   builds the (N, N, D) unit differences and an N x N x N batched matmul (O(N³·D), what RKD's
   reference code and this project did before issue 27); the Gram form is `netaug.losses.rkd_loss`.
2. On the study cell of search/evidence (MobileNetV2 w0.1, Fashion-MNIST 16 px, 27,000 images):
   Trainer.step of netaug, netaug_rkd[sampled] and netaug_rkd[max_fwd] round-robin on the same
   batches, in the width-augmented and the min_w phase, and the 40-epoch schedule's cost of each
   relative to netaug (the same weighting as bench/equal_compute.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def direct_loss(student: torch.Tensor, teacher: torch.Tensor, w_d: float = 1.0, w_a: float = 2.0) -> torch.Tensor:
    """RKD as the direct form computes it (float32, F.normalize of every difference vector)."""

    def rel(e):
        d = torch.cdist(e, e, compute_mode="donot_use_mm_for_euclid_dist")
        d = d / d[d > 0].mean()
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return d, torch.bmm(diff, diff.transpose(1, 2))

    with torch.no_grad():
        td, ta = rel(teacher)
    sd, sa = rel(student)
    return w_d * F.smooth_l1_loss(sd, td) + w_a * F.smooth_l1_loss(sa, ta)


def loss_times(n: int, dims: list[int], repeats: int) -> None:
    from netaug.losses import rkd_loss

    print(f"RKD forward+backward, N = {n}, teacher width 2D, {torch.get_num_threads()} threads, median of {repeats}")
    print(f"  {'D':>5}  {'direct ms':>10}  {'Gram ms':>9}  {'speed-up':>8}  {'|Δ loss| / loss':>15}")
    for d in dims:
        g = torch.Generator().manual_seed(d)
        s = torch.randn(n, d, generator=g).relu().requires_grad_(True)  # pooled features are non-negative
        t = torch.randn(n, 2 * d, generator=g).relu()
        times: dict[str, list[float]] = {"direct": [], "gram": []}
        values = {}
        for rep in range(repeats + 1):
            for name, fn in (("direct", direct_loss), ("gram", rkd_loss)):
                s.grad = None
                start = time.perf_counter()
                loss = fn(s, t)
                loss.backward()
                if rep:
                    times[name].append(time.perf_counter() - start)
                values[name] = loss.item()
        a, b = statistics.median(times["direct"]), statistics.median(times["gram"])
        rel = abs(values["direct"] - values["gram"]) / abs(values["direct"])
        print(f"  {d:5d}  {a * 1000:10.2f}  {b * 1000:9.2f}  {a / b:7.1f}x  {rel:15.2e}", flush=True)


def cell_times(args) -> None:
    from bench.equal_compute import median_steps, with_keys
    from netaug.train.trainer import Trainer, min_w_start
    from search.evaluation import cached_data
    from search.evidence.cells import study_space

    torch.set_num_threads(args.threads)
    space = study_space(args, args.base, args.epochs)
    data = cached_data(space)
    rows = {"netaug": with_keys(space, training={"mode": "netaug"}),
            "netaug_rkd[sampled]": with_keys(space, training={"mode": "netaug_rkd"}, rkd={"teacher": "sampled"}),
            "netaug_rkd[max_fwd]": with_keys(space, training={"mode": "netaug_rkd"}, rkd={"teacher": "max_fwd"})}
    trainers = {}
    for name, cfg in rows.items():
        trainers[f"{name}, width phase"] = Trainer(cfg, data)
        late = Trainer(cfg, data)
        late.epoch = args.epochs - 1
        trainers[f"{name}, min_w phase"] = late
    step = median_steps(trainers, data, space, args.steps)
    half = sum(1 for e in range(args.epochs) if e >= min_w_start(space))  # min_w epochs
    print(f"study cell {args.base}, {len(data.train)} images, batch {space.training.batch_size}, "
          f"{args.threads} thread(s), median of {args.steps} steps, same batches round-robin")
    print(f"  {'mode':>22}  {'width ms':>9}  {'min_w ms':>9}  {'schedule x netaug':>17}")
    cost = {name: (args.epochs - half) * step[f"{name}, width phase"] + half * step[f"{name}, min_w phase"]
            for name in rows}
    for name in rows:
        print(f"  {name:>22}  {step[f'{name}, width phase'] * 1000:9.1f}  {step[f'{name}, min_w phase'] * 1000:9.1f}"
              f"  {cost[name] / cost['netaug']:17.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="batch size N of the loss timing")
    p.add_argument("--dims", type=int, nargs="+", default=[10, 448, 1280], help="student widths D")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-cell", dest="cell", action="store_false", help="skip the study cell's step timing")
    p.add_argument("--space", default="spaces/netaug-official.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=["data.subset=27000"], metavar="KEY=VALUE")
    p.add_argument("--base", default="mobilenetv2@0.1")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps", type=int, default=40, help="timed steps per trainer on the study cell")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the cell timing (the study's: 1)")
    args = p.parse_args()
    loss_times(args.n, args.dims, args.repeats)
    if args.cell:
        cell_times(args)


if __name__ == "__main__":
    main()
