"""CUDA checks (skipped without a GPU; bench/gpu_check.sh runs them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from netaug.config import load_space
from netaug.data import load_data, make_batcher
from netaug.train.trainer import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

OVERRIDES = ["data.resolution=32", "training.batch_size=64", "netaug.r=2", "training.bn_calib_batches=2"]


@pytest.fixture(scope="module")
def digits32():
    return load_data(load_space(None, OVERRIDES).data)


def space(*extra: str):
    return load_space(None, [*OVERRIDES, *extra])


def test_memory_splits_live_on_the_device_and_batches_match_the_cpu(digits32):
    gpu = Trainer(space("training.device=cuda"), digits32)
    assert gpu.data.train.images.is_cuda and not digits32.train.images.is_cuda
    cpu_batcher = make_batcher(digits32, gpu.cfg.data, "cpu")
    args = {"shuffle": True, "augment": True, "drop_last": True}
    for (xg, yg), (xc, yc) in zip(gpu.batcher.batches(gpu.data.train, 64, generator=torch.Generator().manual_seed(3),
                                                      **args),
                                  cpu_batcher.batches(digits32.train, 64, generator=torch.Generator().manual_seed(3),
                                                      **args)):
        assert xg.is_cuda and torch.equal(yg.cpu(), yc)
        assert torch.allclose(xg.cpu(), xc, atol=1e-5)  # same crops and flips, normalised on either device


@pytest.mark.parametrize("mode", ["netaug", "netaug_rkd", "supernet"])
def test_a_step_makes_no_host_synchronisation(digits32, mode):
    trainer = Trainer(space("training.device=cuda", "training.bf16=true"), digits32, mode=mode)
    batches = trainer.batcher.batches(trainer.data.train, 64, shuffle=True, augment=True,
                                      generator=torch.Generator().manual_seed(0), drop_last=True)
    x, y = next(batches)
    trainer.step(x, y)  # warm-up: lazy CUDA initialisation may synchronise
    x, y = next(batches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = trainer.step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.is_cuda for v in losses.values()) and torch.isfinite(losses["loss"]).item()


def test_bf16_and_channels_last_train_close_to_fp32(digits32):
    losses = {}
    for bf16 in (False, True):
        trainer = Trainer(space("training.device=cuda", f"training.bf16={str(bf16).lower()}",
                                "training.channels_last=true"), digits32, mode="netaug_rkd")
        conv = trainer.model.stem.conv.weight
        assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)
        x, y = next(trainer.batcher.batches(trainer.data.train, 64))
        assert x.is_contiguous(memory_format=torch.channels_last)
        losses[bf16] = {k: float(v) for k, v in trainer.step(x, y).items()}
    for key in ("base_loss", "aug_loss", "teacher_loss"):  # same weights, same batch: bf16 rounding only
        assert losses[True][key] == pytest.approx(losses[False][key], rel=0.05), key


def test_cuda_step_matches_the_cpu_step_in_fp32(digits32):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    grads = {}
    for device in ("cpu", "cuda"):
        trainer = Trainer(space(f"training.device={device}", "training.channels_last=false"), digits32,
                          mode="netaug")
        for group in trainer.optimizer.param_groups:
            group.update(lr=0.0, momentum=0.0, nesterov=False, weight_decay=0.0)
        trainer.scheduler.base_lrs = [0.0, 0.0]
        x, y = next(trainer.batcher.batches(trainer.data.train, 64))
        trainer.step(x, y)
        grads[device] = torch.cat([p.grad.detach().cpu().flatten() for p in trainer.model.parameters()])
    rel = (grads["cuda"] - grads["cpu"]).norm() / grads["cpu"].norm()
    assert rel < 1e-3, rel.item()
