"""Stage 1: train the SPOS supernet as one Ray Tune trial (on `supernet.workers` Ray Train workers
when more than one) with a checkpoint every epoch.

A failed or killed trial is retried from its last checkpoint (FailureConfig); an interrupted run
continues with `--resume` (Tuner.restore). Every sampled path is logged to
`<run>/supernet/sampled_archs.jsonl` and TensorBoard scalars to `<run>/supernet/tb/`, both in the
run's storage path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ray import tune

from netaug.config import SpaceConfig, from_dict
from netaug.errors import StageIncomplete, UserError
from netaug.records import log_epoch
from search.checkpoints import load_trainer_state
from search.data_parallel import Session, checkpoint_of, run_trial, trial_resources
from search.progress import LineReporter
from search.restore import restored_tuner

EXPERIMENT = "supernet"
ARCH_LOG = "sampled_archs.jsonl"


def _keep_log_before(path: Path, step: int) -> None:
    """After a resume, drop log lines of steps the restored checkpoint had not reached."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] < step]
    path.write_text("".join(ln + "\n" for ln in lines))


def train_supernet(config: dict) -> None:
    """Tune trainable: the one trainer in supernet mode, on `supernet.workers` data-parallel workers."""
    cfg: SpaceConfig = from_dict(SpaceConfig, config["space"])
    run_trial(supernet_body, config, cfg.supernet.workers, cfg.supernet.resources,
              Path(config["run_dir"]) / EXPERIMENT)


def supernet_body(config: dict, session: Session) -> None:
    """Train the supernet, resuming from the trial's checkpoint if any; rank 0 evaluates, logs and checkpoints."""
    from torch.utils.tensorboard import SummaryWriter

    from netaug.data import load_data
    from netaug.train.runtime import configure_threads
    from netaug.train.trainer import Trainer

    cfg: SpaceConfig = from_dict(SpaceConfig, config["space"])
    configure_threads()
    data = load_data(cfg.data)
    log_path = Path(config["run_dir"]) / EXPERIMENT / ARCH_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data, mode=Trainer.SUPERNET)
    checkpoint = session.checkpoint()
    if checkpoint is not None:
        trainer.load_state_dict(load_trainer_state(checkpoint))
    if not session.lead:
        session.follow(trainer, config["space"])
        return
    start_epoch = trainer.epoch
    busy_s = 0.0  # seconds inside training and evaluation steps since this (re)start
    _keep_log_before(log_path, trainer.global_step)
    writer = SummaryWriter(str(Path(config["run_dir"]) / EXPERIMENT / "tb"))

    def on_epoch(result) -> None:
        nonlocal busy_s
        busy_s += result.busy_s
        metrics = {**result.metrics, "start_epoch": start_epoch, "pid": os.getpid(), "step_s": busy_s,
                   "workers": session.world}
        log_epoch(writer, metrics)
        session.report(metrics, trainer.state_dict(), config["space"])

    with open(log_path, "a", buffering=1) as log:
        trainer.arch_log = lambda entry: log.write(json.dumps(entry) + "\n")
        trainer.run_epochs(on_epoch, evals=(("val", "val", "min"), ("val_max", "val", "max")),
                           eval_every=cfg.supernet.eval_every)
    writer.close()


def experiment_path(run_dir: Path) -> Path:
    return run_dir / EXPERIMENT


def run_supernet(cfg: SpaceConfig, run_dir: Path, resume: bool = False) -> tune.Checkpoint:
    """Train (or finish training) the supernet; return its final checkpoint."""
    path = experiment_path(run_dir)
    reporter = LineReporter("supernet", ("train_loss", "val_top1", "val_max_top1", "epoch_s"),
                            cfg.supernet.epochs)
    tuner = restored_tuner(path, run_dir, "supernet", resume, _trainable(cfg), resume_errored=True)
    if tuner is not None:
        results = tuner.fit()
    else:
        trainable = _trainable(cfg)
        tuner = tune.Tuner(
            trainable,
            param_space={"space": cfg.to_dict(), "run_dir": str(run_dir)},
            run_config=tune.RunConfig(
                name=EXPERIMENT, storage_path=str(run_dir), verbose=0, callbacks=[reporter],
                failure_config=tune.FailureConfig(max_failures=cfg.supernet.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        results = tuner.fit()
    result = results[0]
    if result.error is not None:
        raise RuntimeError(f"supernet training failed: {result.error}")
    done = int((result.metrics or {}).get("epoch", 0) or 0)
    checkpoint = checkpoint_of(result)
    if checkpoint is None or done < cfg.supernet.epochs:
        raise StageIncomplete(f"supernet: stopped after {done} of {cfg.supernet.epochs} epochs")
    return checkpoint


def _trainable(cfg: SpaceConfig):
    return tune.with_resources(train_supernet, trial_resources(cfg.supernet.workers, cfg.supernet.resources))


def latest_checkpoint(run_dir: Path) -> tuple[tune.Checkpoint, dict]:
    """The finished supernet's last checkpoint in the run's storage path, and its last reported metrics.

    A supernet that stopped before its last epoch is refused: no later stage starts on an unfinished one.
    """
    path = experiment_path(run_dir)
    if not tune.Tuner.can_restore(str(path)):
        raise UserError(f"--out: no supernet run under {run_dir}; run --stage supernet first")
    results = tune.Tuner.restore(str(path), trainable=train_supernet).get_results()
    result = results[0]
    checkpoint = checkpoint_of(result)
    if checkpoint is None:
        raise UserError(f"--out: the supernet run under {run_dir} has no checkpoint yet; run --stage supernet")
    metrics = dict(result.metrics or {})
    with checkpoint.as_directory() as folder:
        planned = from_dict(SpaceConfig, json.loads((Path(folder) / "space.json").read_text())).supernet.epochs
    if int(metrics.get("epoch", 0) or 0) < planned:
        raise UserError(f"--out: the supernet under {run_dir} stopped after {metrics.get('epoch', 0)} of {planned} "
                        "epochs; finish it with --stage supernet --resume")
    return checkpoint, metrics
