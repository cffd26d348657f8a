"""Data-parallel training: 2 gloo workers equal 1 worker on the same global batch.

Two worker processes (torch.distributed, gloo, on CPU) each take batch_size images of every global
batch of 2 x batch_size at 2 x lr; the reference is one process at batch 2 x batch_size and lr 2 x lr
whose steps split the batch into 2 micro-batches (so BatchNorm sees the same per-worker statistics)
and average their gradients in the all-reduce's order. Both run one thread: this network amplifies
float rounding so much (measured: a 1e-7 relative change of one step grows to O(1) within 5 steps)
that only the same floating-point operations give the same weights after several steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from netaug.config import load_space
from netaug.data import Batcher, load_data

BATCH = 32
OVERRIDES = ["data.resolution=16", "data.subset=320", "training.epochs=2", "training.warmup_epochs=0",
             "training.lr=0.001", "training.bn_calib_batches=1", "netaug.r=2", "netaug.s=2", "rkd.lambda_kd=0.5",
             "sharing.enabled=true", "sharing.share_fraction=0.3"]


def space(batch: int, lr_mult: int):
    cfg = load_space(None, [*OVERRIDES, f"training.batch_size={batch}", "supernet.epochs=2", "supernet.e_max=2"])
    cfg.training.lr *= lr_mult
    return cfg


def train(cfg, mode: str, micro_batches: int = 1) -> tuple[dict, list, list]:
    """Two epochs; returns the weights, the logged sub-networks and the per-epoch train losses."""
    from netaug.train.trainer import Trainer

    archs: list = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: float results depend on the thread count
    trainer = Trainer(cfg, load_data(cfg.data), mode=mode, arch_log=lambda a: archs.append(a["config"]),
                      micro_batches=micro_batches)
    losses = [trainer.train_epoch().train_loss for _ in range(cfg.training.epochs)]
    torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, archs, losses


def _worker(rank: int, world: int, folder: str, mode: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=world)
    try:
        weights, archs, losses = train(space(BATCH, 1), mode)
        torch.save({"weights": weights, "archs": archs, "losses": losses}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["netaug_rkd", "supernet"])
def test_two_gloo_workers_equal_one_worker_on_the_same_global_batch(tmp_path, mode):
    mp.start_processes(_worker, args=(2, str(tmp_path), mode), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    one, one_archs, _ = train(space(2 * BATCH, 2), mode, micro_batches=2)
    params = [k for k in one if "running" not in k and "num_batches" not in k]
    # The workers hold the same weights and trained the same sub-networks, step by step.
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in params)
    assert ranks[0]["archs"] == ranks[1]["archs"] == one_archs and len(one_archs) == 2 * 320 // (2 * BATCH)
    # And the weights one worker reaches on the same global batches (2 epochs x 5 steps, with channel
    # sorting at each epoch and the release of shared weights at step 3).
    worst = max((ranks[0]["weights"][k] - one[k]).abs().max().item() for k in params)
    assert worst <= 1e-6, worst
    # Sanity: a plain 1-worker run at batch 32 (BatchNorm over all 32) lands measurably elsewhere.
    plain, _, _ = train(space(2 * BATCH, 2), mode)
    assert max((plain[k] - one[k]).abs().max().item() for k in params) > 100 * max(worst, 1e-7)
    if os.environ.get("NETAUG_PRINT_DP"):
        print(json.dumps({"mode": mode, "max_abs_weight_diff": worst}))


def test_sharded_batches_are_the_whole_batch(digits16):
    batcher = Batcher(digits16.mean, digits16.std, crop_padding=2, flip=True)
    whole = list(batcher.batches(digits16.train, 30, shuffle=True, augment=True,
                                 generator=torch.Generator().manual_seed(4), drop_last=True))
    parts = [list(batcher.batches(digits16.train, 30, shuffle=True, augment=True,
                                  generator=torch.Generator().manual_seed(4), drop_last=True, shard=(r, 3)))
             for r in range(3)]
    assert len(whole) == len(parts[0]) == len(digits16.train) // 30
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
