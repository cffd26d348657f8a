"""Stage 4: retrain the sweep's winner from scratch against plain training, paired over seeds.

Arms (`final.arms`): `winner` (the best sweep trial by sweep.metric: its mode, parameters and a*),
`baseline` (plain training of the same base) and `netaug_fixed` (plain NetAug at the winner's r, s
and alpha, every layer at r). Each arm x seed is one Tune trial, checkpointed every epoch, trained
for `final.epochs` (on `final.workers` Ray Train workers when more than one). For one seed every arm
sees the same batches and augmentation draws (the trainer seeds them from training.seed alone; with
several workers, the digest is rank 0's share of each batch), and starts from the same base weights
unless the method's own init differs (netaug.init=augmented, the official NetAug init, is a slice of
the augmented model's); each trial reports digests of its initial base weights and of its batches to show it.

Each epoch records the base's top-1 on a fixed, un-augmented subset of the training split
(`train_top1`): NetAug claims to lift the tiny model's training accuracy, and this is where to see
it. The last epoch writes per-sample predictions (model `final:<arm>:s<seed>`) and the exported
base (`final/models/<arm>_s<seed>.pt`). The driver then writes final.parquet, compares every arm
with baseline (paired t over seeds, netaug.stats) and delivers the best model (search/deliverable.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune

from netaug.config import SpaceConfig, from_dict
from netaug.errors import StageIncomplete
from netaug.io import atomic_path, write_parquet
from netaug.records import (
    EPOCHS_SCHEMA,
    FINAL_SCHEMA,
    INT8_COLUMNS,
    PREDICTIONS_SCHEMA,
    TEST_METRICS,
    current_names,
    log_epoch,
)
from search.arms import (  # noqa: F401 (re-exported)
    NO_SWEEP_ARMS,
    PLAIN_ARMS,
    Arm,
    _num,
    arm_space,
    arms_for,
    augmented_of,
    final_epochs,
    winner_of,
    without_twins,
)
from search.checkpoints import load_trainer_state
from search.data_parallel import run_trial, trial_resources
from search.evaluation import cached_data, final_evaluation
from search.progress import LineReporter
from search.restore import restored_tuner

EXPERIMENT = "final"
FINAL_FILE = "final.parquet"
ARMS_FILE = "arms.json"


def train_eval_subset(data, size: int, split_seed: int):
    """A fixed subset of the training split (chosen by the data's split seed, not the training seed)."""
    n = len(data.train)
    if size >= n:
        return data.train
    keep = np.sort(np.random.default_rng(split_seed + 7).permutation(n)[:size])
    return data.train.take(keep)


def weights_digest(module) -> str:
    """A short digest of a module's parameters (names, shapes and values)."""
    h = hashlib.sha1()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class BatchDigest:
    """A digest of every training batch (inputs after augmentation, and labels) of one epoch.

    On CPU it hashes the bytes. On a GPU it keeps per-batch sums on the device and reads them once,
    at the end of the epoch, so that the hook adds no host synchronisation to a step.
    """

    def __init__(self) -> None:
        self.hash = hashlib.sha1()
        self.sums: list = []

    def __call__(self, x, y) -> None:
        if x.device.type == "cpu":
            self.hash.update(x.detach().contiguous().numpy().tobytes())
            self.hash.update(y.detach().numpy().tobytes())
        else:
            import torch

            xd, yd = x.detach().double(), y.detach().double()
            self.sums.append(torch.stack([xd.sum(), xd.square().sum(), yd.sum(),
                                          (yd * torch.arange(len(yd), device=yd.device)).sum()]))

    def hexdigest(self) -> str:
        if self.sums:
            import torch

            self.hash.update(torch.stack(self.sums).cpu().numpy().tobytes())
            self.sums = []
        return self.hash.hexdigest()


def final_trial(config: dict) -> None:
    """Tune trainable of one arm x seed, on `final.workers` data-parallel workers."""
    space = from_dict(SpaceConfig, json.loads(config["space_json"]))
    run_trial(final_body, config, space.final.workers, space.final.resources, Path(config["run_dir"]) / EXPERIMENT)


def final_body(config: dict, session) -> None:
    """One arm x seed: train from scratch (or resume); rank 0 evaluates, exports and reports with a checkpoint
    every epoch."""
    started = time.perf_counter()
    from torch.utils.tensorboard import SummaryWriter

    from netaug.models import profile_macs
    from netaug.train.calibrate import spent
    from netaug.train.cost import PhaseCost
    from netaug.train.runtime import configure_threads
    from netaug.train.trainer import Trainer

    configure_threads()
    space = from_dict(SpaceConfig, json.loads(config["space_json"]))
    arm, seed = Arm(**config["arms"][config["arm"]]), int(config["seed"])
    cfg = arm_space(space, arm, seed)
    run_dir = Path(config["run_dir"])
    trial_id = session.trial_id
    data = cached_data(cfg)
    trainer = Trainer(cfg, data, largest=arm.largest)
    aug = trainer.augmented
    init_digest = weights_digest(trainer.base_layers())
    checkpoint = session.checkpoint()
    state = load_trainer_state(checkpoint) if checkpoint is not None else None
    epoch_digests: list[str] = []
    step_s = 0.0
    history: list[dict] = []
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        epoch_digests, step_s = list(state["epoch_digests"]), state["step_s"]
        init_digest = state["init_digest"]
        history = list(state.get("history", []))
        session.replay(history, config["space_json"])
    if not session.lead:
        session.follow(trainer, config["space_json"])
        return
    shape = (data.in_channels, data.resolution, data.resolution)
    base_macs = profile_macs(trainer.base_layers(), shape)[0]
    aug_macs = profile_macs(aug.export("max"), shape)[0] if aug is not None else None
    subset = train_eval_subset(data, cfg.final.train_eval_size, cfg.data.split_seed)
    epochs = cfg.training.epochs
    cost = PhaseCost(arm.cost_width, arm.cost_min_w)
    fixed = {"arm": arm.name, "mode": arm.mode, "seed": seed, "base_macs": base_macs, "aug_macs": aug_macs,
             "largest": json.dumps(aug.config("max")) if aug is not None else None, "init_digest": init_digest,
             "workers": session.world, "unit": space.compute.unit, "cost_width": arm.cost_width,
             "cost_min_w": arm.cost_min_w, "epochs_planned": epochs, "compute_planned": spent(cfg, cost, epochs),
             "budget": config.get("budget")}
    writer = SummaryWriter(str(run_dir / EXPERIMENT / "tb" / trial_id))
    digest = BatchDigest()

    def before_epoch(trainer) -> None:
        nonlocal digest
        digest = trainer.batch_hook = BatchDigest()

    def on_epoch(result) -> None:
        nonlocal step_s
        epoch_digests.append(digest.hexdigest())
        step_s += result.busy_s
        metrics = {**fixed, **result.metrics,
                   "batch_digest": hashlib.sha1("".join(epoch_digests).encode()).hexdigest()[:16],
                   "compute": spent(cfg, cost, trainer.epoch)}
        log_epoch(writer, metrics)
        if trainer.epoch == epochs:
            t0 = time.perf_counter()
            metrics.update(deliverables(trainer, cfg, data, run_dir, arm, seed, trial_id))
            step_s += time.perf_counter() - t0
        metrics["step_s"] = step_s
        metrics["trial_s"] = time.perf_counter() - started
        history.append(metrics)
        state = {"trainer": trainer.state_dict(), "epoch_digests": epoch_digests, "step_s": step_s,
                 "init_digest": init_digest, "history": history if session.train else []}
        session.report(metrics, state, config["space_json"])

    trainer.run_epochs(on_epoch, evals=(("val", "val", "min"), ("train", subset, "min")), before_epoch=before_epoch,
                       eval_every=cfg.final.eval_every)
    writer.close()


def deliverables(trainer, cfg: SpaceConfig, data, run_dir: Path, arm: Arm, seed: int, trial_id: str) -> dict:
    """After an arm x seed's last epoch: test metrics and predictions, the exported base (and its int8 model)."""
    from netaug.train.export import save_exported

    fragment = run_dir / EXPERIMENT / "predictions" / f"{arm.file_stem(seed)}.parquet"
    metrics = final_evaluation(trainer, fragment, trial_id, arm.model_name(seed), with_aug=False)
    model_file = Path(EXPERIMENT) / "models" / f"{arm.file_stem(seed)}.pt"
    base = trainer.export_base()
    save_exported(run_dir / model_file, base, data,
                  {"model_name": cfg.model.label, "arm": arm.name, "mode": arm.mode, "seed": seed,
                   "classes": data.class_names(), "space": cfg.to_dict()})
    metrics["model_file"] = str(model_file)
    if cfg.deploy.int8:
        from netaug.train.int8 import int8_model

        figures = int8_model(base, cfg, data, trainer.batcher, run_dir / model_file.with_suffix(""))
        metrics.update({k: v for k, v in figures.items() if v is not None})
        metrics["int8_file"] = str(model_file.with_suffix(".int8.onnx"))
    return metrics


# ---------------------------------------------------------------------------- driver side


def run_final(cfg: SpaceConfig, run_dir: Path, resume: bool = False) -> tuple[tune.ResultGrid, list[Arm]]:
    """Run (or continue) the final trials; returns Tune's ResultGrid and the arms."""
    path = run_dir / EXPERIMENT
    trainable = tune.with_resources(final_trial, trial_resources(cfg.final.workers, cfg.final.resources))
    if (tuner := restored_tuner(path, run_dir, "final", resume, trainable, resume_unfinished=True,
                                resume_errored=True)) is not None:
        arms = [Arm(**a) for a in json.loads((path / ARMS_FILE).read_text())]
        return tuner.fit(), arms
    if cfg.deploy.int8:  # before any trial trains: a calibration set larger than the training split is bad input
        from netaug.train.int8 import calibration_set

        calibration_set(cached_data(cfg), cfg.deploy.calib_images, cfg.data.split_seed)
    from search.equal_compute import calibration_lines, measure, plan_arms

    winner = winner_of(run_dir, cfg) if set(cfg.final.arms) - set(NO_SWEEP_ARMS) else None
    arms = arms_for(cfg, winner, augmented_of(run_dir, cfg) if winner is not None else None)
    if cfg.compute.unit == "epochs" and any(a.name == "baseline_equal" for a in arms):
        print("final: compute.unit is epochs, so baseline_equal would be baseline again; not trained", flush=True)
        arms = [a for a in arms if a.name != "baseline_equal"]
    calibration = measure(cfg, arms, run_dir)
    arms, budget = plan_arms(cfg, arms, calibration)
    arms, twins = without_twins(arms)
    print("\n".join([*calibration_lines(cfg, arms, calibration, budget), *twins]), flush=True)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / ARMS_FILE) as tmp:
        tmp.write_text(json.dumps([asdict(a) for a in arms], indent=2) + "\n")
    seeds = [cfg.training.seed + i for i in range(cfg.final.seeds)]
    print(f"final: {len(arms)} arms x {len(seeds)} seeds: "
          + "; ".join(f"{a.name} ({a.description}, {a.epochs} epochs)" for a in arms), flush=True)
    work = len(seeds) * sum(_planned_compute(cfg, a) for a in arms)
    reporter = LineReporter("final", ("arm", "seed", "train_top1", "val_top1", "epoch_s"), None, work=work,
                            unit=cfg.compute.unit)
    tuner = tune.Tuner(
        trainable,
        param_space={"space_json": json.dumps(cfg.to_dict()), "run_dir": str(run_dir),
                     "arms": {a.name: asdict(a) for a in arms}, "budget": budget,
                     # longest arms first: the last trials to start are short ones, so no CPU idles at the end
                     "seed": tune.grid_search(seeds), "arm": tune.grid_search(
                         [a.name for a in sorted(arms, key=lambda a: -_planned_compute(cfg, a))])},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=cfg.final.workers == 1),  # Train drivers: not
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(run_dir), verbose=0, callbacks=[reporter],
            failure_config=tune.FailureConfig(max_failures=cfg.final.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    return tuner.fit(), arms


def _planned_compute(cfg: SpaceConfig, arm: Arm) -> float:
    from netaug.train.calibrate import spent
    from netaug.train.cost import PhaseCost

    space = arm_space(cfg, arm, cfg.training.seed)
    return spent(space, PhaseCost(arm.cost_width, arm.cost_min_w), space.training.epochs)


def final_rows(grid, arms: list[Arm], epochs: int) -> tuple[list[dict], list[dict]]:
    """(final.parquet rows, epochs.parquet rows) from the final stage's ResultGrid."""
    from search.results import cost_of, epoch_rows_of
    from search.trials import error_text, trial_id_of

    by_name = {a.name: a for a in arms}
    rows, epoch_rows = [], []
    for result in grid:
        m = dict(result.metrics or {})
        config = result.config or {}
        arm = by_name.get(config.get("arm")) or Arm(**config["arms"][config["arm"]])
        seed = int(config["seed"])
        tid = trial_id_of(result)
        done = int(m.get("epoch", 0) or 0)
        planned = arm.epochs if arm.epochs is not None else epochs
        status = "ERROR" if result.error is not None else "TERMINATED" if done >= planned else "INCOMPLETE"
        row = {"arm": arm.name, "mode": arm.mode, "seed": seed, "r": arm.r, "s": arm.s,
               "aug_loss_weight": arm.aug_loss_weight, "lambda_kd": arm.lambda_kd, "largest": m.get("largest"),
               "base_macs": m.get("base_macs"), "aug_macs": _num(m.get("aug_macs"), int), "epochs": done,
               "train_top1": m.get("train_top1"), "val_top1": m.get("val_top1"), "test_top1": m.get("test_top1"),
               **{k: m.get(k) for k in TEST_METRICS}, "wall_s": m.get("time_total_s"), "step_s": m.get("step_s"),
               "trial_id": tid, "status": status, "error": error_text(result.error),
               "description": arm.description, "share_fraction": arm.share_fraction, "val_loss": m.get("val_loss"),
               "init_digest": m.get("init_digest"), "batch_digest": m.get("batch_digest"),
               "model_file": m.get("model_file"), **{k: m.get(k) for k in INT8_COLUMNS}, **cost_of(m)}
        rows.append(row)
        epoch_rows += epoch_rows_of(result.metrics_dataframe, tid, "final", arm.name, seed)
    order = {a.name: i for i, a in enumerate(arms)}
    rows.sort(key=lambda r: (order.get(r["arm"], 99), r["seed"]))
    return rows, epoch_rows


def write_final_results(grid, arms: list[Arm], run_dir: Path, epochs: int) -> list[dict]:
    """final.parquet; the final trials' epochs and predictions merged into epochs/predictions.parquet."""
    rows, epoch_rows = final_rows(grid, arms, epochs)
    write_parquet(pa.Table.from_pylist(rows, schema=FINAL_SCHEMA), run_dir / FINAL_FILE)
    epochs_path = run_dir / "epochs.parquet"
    kept = []
    if epochs_path.is_file():
        old = pq.read_table(epochs_path).to_pylist()
        kept = [{**{k: None for k in EPOCHS_SCHEMA.names}, "stage": "sweep", **current_names(r)} for r in old]
        kept = [r for r in kept if r["stage"] != "final"]
    write_parquet(pa.Table.from_pylist(kept + epoch_rows, schema=EPOCHS_SCHEMA), epochs_path)
    preds_path = run_dir / "predictions.parquet"
    tables = []
    if preds_path.is_file():
        old = pq.read_table(preds_path, schema=PREDICTIONS_SCHEMA)
        keep = [not str(m).startswith("final:") for m in old["model"].to_pylist()]
        tables.append(old.filter(pa.array(keep)))
    names = {f"{r['arm']}_s{r['seed']}" for r in rows if r["status"] == "TERMINATED"}
    tables += [pq.read_table(f, schema=PREDICTIONS_SCHEMA)
               for f in sorted((run_dir / EXPERIMENT / "predictions").glob("*.parquet")) if f.stem in names]
    write_parquet(pa.concat_tables(tables) if tables else PREDICTIONS_SCHEMA.empty_table(), preds_path)
    return rows


def run_final_stage(cfg: SpaceConfig, run_dir: Path, resume: bool = False, rerun=None) -> list[str]:
    """The whole stage as the driver runs it: trials, Parquet, the answers, the deliverable. Returns the
    summary lines. `rerun(overrides)` gives the command line that reruns the job with more `--set`s."""
    from netaug.stats import answer_lines, final_table_lines
    from search.deliverable import deliver

    grid, arms = run_final(cfg, run_dir, resume)
    finished = grid.num_terminated + grid.num_errors
    expected = len(arms) * cfg.final.seeds
    if finished < len(grid) or len(grid) < expected:
        raise StageIncomplete(f"final: {finished} of {expected} trials finished")
    rows = write_final_results(grid, arms, run_dir, final_epochs(cfg))
    ok = [r for r in rows if r["status"] == "TERMINATED"]
    lines = final_table_lines(rows)
    lines += answer_lines(ok, cfg.final.confidence, rerun=rerun)
    if cfg.deploy.int8:
        lines += [x for x in answer_lines(ok, cfg.final.confidence, "int8_test_top1", int8=True)
                  if not x.startswith("no paired comparison")]  # said once, for fp32
    if ok:
        lines += deliver(cfg, run_dir, ok)
    else:
        lines.append("no final trial finished: nothing to deliver")
    lines.append(f"final results: {run_dir / FINAL_FILE}")
    return lines
