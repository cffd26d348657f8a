"""Trials that scale out: a Tune trial trains on `<stage>.workers` Ray Train workers (Train V2 in Tune).

Tune schedules the trials and Train scales each one: with `workers: 1` the trial body runs in the
Tune trial itself; with N > 1 the Tune trial is a light driver (no CPU of its own) that launches a
`TorchTrainer` of N workers, each with `<stage>.resources` (gloo on CPU, NCCL when the workers have
GPUs). Every worker runs the same body; the trainer shards each global batch, averages gradients
with one all-reduce per step and seeds sub-networks by step (netaug/train/trainer.py). Rank 0
evaluates, writes files, and reports; `TuneReportCallback` forwards its metrics to Tune (ASHA and
the reporters see them as from any trial). Its checkpoints live in Train's storage,
`<run>/<stage>/train/<trial id>/`, and their path rides along in the metrics as `checkpoint_path`.
A retried or resumed trial relaunches the TorchTrainer under the same name, and Train restores the
workers from that run's latest checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ray import tune

from netaug.config import ResourcesConfig
from search.checkpoints import trainer_checkpoint
from search.cluster import DRIVER_CPU, resources_for

CHECKPOINT_PATH_KEY = "checkpoint_path"  # what TuneReportCallback adds to the metrics


@dataclass
class Session:
    """Where a trial body gets its checkpoint and reports: Tune itself, or a Ray Train worker."""

    trial_id: str
    rank: int = 0
    world: int = 1
    train: bool = False  # a Ray Train worker (else the Tune trial itself)

    @property
    def lead(self) -> bool:
        """Rank 0: the one that evaluates, writes files and checkpoints."""
        return self.rank == 0

    def checkpoint(self) -> tune.Checkpoint | None:
        if self.train:
            import ray.train

            return ray.train.get_checkpoint()
        return tune.get_checkpoint()

    def from_lead(self, value):
        """Rank 0's `value` on every worker (it is already there with one worker)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def follow(self, trainer, space: dict | str) -> None:
        """A rank other than 0: train the remaining epochs alongside rank 0, which evaluates, writes and
        checkpoints; report each epoch (every worker reports as often as rank 0)."""
        while trainer.epoch < trainer.cfg.training.epochs:
            trainer.train_epoch()
            self.report({"epoch": trainer.epoch}, None, space)

    def replay(self, history: list[dict], space: dict | str) -> None:
        """After a restart from a Train checkpoint, report the epochs it holds again: Tune restarted
        the trial (it has no Tune checkpoint of its own) and dropped their results. One worker: a no-op
        (Tune restored its own checkpoint and kept them)."""
        if not self.train:
            return
        for metrics in history:
            self.report(metrics if self.lead else {"epoch": metrics["epoch"]}, None, space)

    def report(self, metrics: dict, state: dict | None, space: dict | str) -> None:
        """Report `metrics` with a checkpoint of `state` (rank 0 only; the others report no checkpoint)."""
        space = json.loads(space) if isinstance(space, str) else space
        if self.train:
            import ray.train

            if self.lead and state is not None:
                with trainer_checkpoint(state, space) as ckpt:
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt.path))
            else:
                ray.train.report(metrics, checkpoint=None)
            return
        if state is None:
            tune.report(metrics)
            return
        with trainer_checkpoint(state, space) as ckpt:
            tune.report(metrics, checkpoint=ckpt)


Body = Callable[[dict, Session], None]


def _worker_loop(body: Body, config: dict) -> None:
    import ray.train

    context = ray.train.get_context()
    body(config, Session(config["trial_id"], context.get_world_rank(), context.get_world_size(), train=True))


def run_trial(body: Body, config: dict, workers: int, resources: ResourcesConfig, stage_dir: Path) -> None:
    """Run a trial body from its Tune trainable: here (1 worker) or on `workers` Ray Train workers."""
    trial_id = tune.get_context().get_trial_id()
    if workers <= 1:
        body(config, Session(trial_id))
        return
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = resources_for(resources)
    per_worker = {"CPU": res["cpu"], **({"GPU": res["gpu"]} if res["gpu"] > 0 else {})}
    trainer = TorchTrainer(
        partial(_worker_loop, body), train_loop_config={**config, "trial_id": trial_id},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=res["gpu"] > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(name=trial_id, storage_path=str(stage_dir / "train"),
                                       callbacks=[TuneReportCallback()],
                                       failure_config=ray.train.FailureConfig(max_failures=0)))
    trainer.fit()


def trial_resources(workers: int, resources: ResourcesConfig) -> dict[str, float]:
    """What the Tune trial itself holds: its resources (1 worker), or nothing (a Train driver)."""
    return resources_for(resources) if workers <= 1 else {"cpu": DRIVER_CPU, "gpu": 0}


def checkpoint_of(result) -> tune.Checkpoint | None:
    """A trial's latest checkpoint: Tune's own, or the Train run's whose path rode in the metrics."""
    if result.checkpoint is not None:
        return result.checkpoint
    path = (result.metrics or {}).get(CHECKPOINT_PATH_KEY)
    return tune.Checkpoint(path) if path else None
