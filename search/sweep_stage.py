"""Stage 3: the Optuna sweep of r, s, alpha, lambda_KD (optionally share_fraction and mode) on Ray Tune.

Each trial: SPOS uniform search restricted to its own (r, s) grid on the trained supernet (reusing
every evaluation already in the run), then NetAug(+RKD) training of the base with that a* as the
largest augmented model (or plain NetAug with `sweep.largest: fixed`). It reports every epoch with a
checkpoint; ASHA may stop it early. Its files go straight to the run's storage path:
`sweep/archs/<trial>.parquet`, `sweep/predictions/<trial>.parquet`, `sweep/tb/<trial>/`. The Optuna
study lives in `sweep/optuna.journal` (netaug/study.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
from ray import tune

from netaug.config import PLAIN_MODES, SWEPT_PARAMS, SpaceConfig, from_dict, params_of_mode, read_params
from netaug.io import atomic_path, write_parquet
from netaug.records import log_epoch
from netaug.study import STUDY_FILE, STUDY_NAME, TrialRecord, journal_storage, write_study
from search.archs import ARCHS_FILE, archs_table
from search.checkpoints import load_trainer_state
from search.cluster import resources_for
from search.data_parallel import Session, checkpoint_of, run_trial, trial_resources
from search.evaluation import cached_data, final_evaluation
from search.progress import LineReporter
from search.restore import restored_tuner

COMPUTE_KEY = "compute"  # reported each epoch: plain-training epochs spent so far, by compute.unit (ASHA's time)

EXPERIMENT = "sweep"
EXHAUSTED_FILE = "space_exhausted.json"
FAULT_ENV = "NETAUG_FAULT_TRIALS"  # tests: comma-separated trial numbers (0-based, by start order) that raise


def swept_params(config: dict) -> dict:
    return {k: config[k] for k in SWEPT_PARAMS if k in config}


def _sampled(params: dict) -> dict:
    """The parameters a trial sampled: a row of trials.parquet holds null (NaN) for those its mode did not."""
    return {k: v for k, v in params.items() if v is not None and v == v}


def trial_space(space: SpaceConfig, params: dict) -> SpaceConfig:
    """The space of one trial: the swept values applied (those its mode does not sample keep the space's
    values), training for sweep.epochs."""
    raw = space.to_dict()
    params = _sampled(params)
    for section, key, kind in (("netaug", "r", float), ("netaug", "s", int), ("netaug", "aug_loss_weight", float),
                               ("rkd", "lambda_kd", float)):
        if key in params:  # a mode that does not read it does not sample it
            raw[section][key] = kind(params[key])
    raw["training"]["mode"] = params.get("mode", space.sweep.modes()[0])
    raw["training"]["epochs"] = space.sweep.epochs
    raw["training"]["warmup_epochs"] = min(space.training.warmup_epochs, space.sweep.epochs)
    for key, kind in (("aug_every", int), ("aug_fraction", float)):
        if key in params:
            raw["netaug"][key] = kind(params[key])
    if "macs_limit" in params:
        raw["search"]["macs_limit"] = float(params["macs_limit"])
    if "share_fraction" in params:
        raw["sharing"].update(enabled=True, share_fraction=float(params["share_fraction"]))
    if "reparam_k" in params:
        raw["reparam"]["k"] = int(params["reparam_k"])
    if raw["training"]["mode"] in PLAIN_MODES:
        raw["sharing"]["enabled"] = False  # plain training and reparam share nothing
    return from_dict(SpaceConfig, raw)


def plan_trial(cfg: SpaceConfig, data, largest) -> tuple[SpaceConfig, dict]:
    """The trial's schedule from `sweep.budget`: its own cost measured against plain training (round-robin,
    compute.unit), then as many epochs as the budget buys. Under compute.unit: epochs, sweep.epochs."""
    from netaug.train.calibrate import calibrate, plan_epochs, with_epochs

    unit = cfg.compute.unit
    if unit == "epochs":
        return cfg, {"unit": unit, "budget": float(cfg.sweep.epochs), "cost_width": 1.0, "cost_min_w": 1.0,
                     "epochs_planned": cfg.sweep.epochs}
    costs = calibrate({"trial": (cfg, largest)}, data, unit, cfg.compute.calibration_steps,
                      cfg.compute.calibration_warmup)
    mine = costs["trial"]
    epochs = plan_epochs(cfg, mine.cost, cfg.sweep.budget)
    return with_epochs(cfg, epochs), {
        "unit": unit, "budget": cfg.sweep.budget, "cost_width": mine.cost.width, "cost_min_w": mine.cost.min_w,
        "epochs_planned": epochs, "plain_step_s": costs["baseline"].width.seconds,
        "plain_step_flops": costs["baseline"].width.flops}


def known_evaluations(run_dir: Path) -> dict[str, tuple[float, float]]:
    """Every inherited-weight evaluation already in the run (archs.parquet and trials' fragments)."""
    files = [run_dir / ARCHS_FILE, *sorted((run_dir / EXPERIMENT / "archs").glob("*.parquet"))]
    cache: dict[str, tuple[float, float]] = {}
    for f in files:
        if f.exists():
            t = pq.read_table(f, columns=["arch", "val_top1", "val_loss"]).to_pylist()
            cache.update({row["arch"]: (row["val_top1"], row["val_loss"]) for row in t})
    return cache


def search_for_trial(cfg: SpaceConfig, data, run_dir: Path, checkpoint_path: str, trial_id: str):
    """SPOS uniform search on the trial's (r, s) grid; returns a*."""
    from netaug.spos.astar import find_astar
    from netaug.spos.supernet import paths_from_json, supernet_scorer

    checkpoint = tune.Checkpoint(checkpoint_path)
    with checkpoint.as_directory() as folder:
        trained = from_dict(SpaceConfig, json.loads((Path(folder) / "space.json").read_text()))
    scorer = supernet_scorer(trained, data, load_trainer_state(checkpoint))
    known = known_evaluations(run_dir)  # reuse evaluations of the same supernet
    found = find_astar(scorer.supernet, scorer, (data.in_channels, data.resolution, data.resolution), cfg.netaug,
                       cfg.sweep.num_paths, cfg.search.seed, cfg.search.macs_limit,
                       known=dict(zip(paths_from_json([json.loads(a) for a in known]), known.values())))
    rows = archs_table(found.table, found.chosen, f"sweep-{trial_id}", "uniform", cfg.netaug.r, cfg.netaug.s)
    write_parquet(rows, run_dir / EXPERIMENT / "archs" / f"{trial_id}.parquet")
    return found.chosen.path


def setup_path(run_dir: Path, trial_id: str) -> Path:
    """A trial's a*, search time and plan (its measured cost and epochs), written before its first epoch: a trial
    interrupted before its first checkpoint resumes with the same a* and the same epochs, without searching or
    measuring again."""
    return run_dir / EXPERIMENT / "setup" / f"{trial_id}.json"


def write_setup(run_dir: Path, trial_id: str, setup: dict) -> None:
    path = setup_path(run_dir, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(setup, default=_plain_number))


def _plain_number(value):
    """numpy's scalars (a plan's measured numbers) as Python's, for JSON."""
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_setup(run_dir: Path, trial_id: str) -> dict | None:
    path = setup_path(run_dir, trial_id)
    if not path.is_file():
        return None
    from netaug.spos.supernet import paths_from_json

    setup = json.loads(path.read_text())
    if setup.get("largest") is not None:
        setup["largest"] = paths_from_json([setup["largest"]])[0]  # JSON lists back to the path's tuples
    return setup


def _maybe_fail(run_dir: Path, trial_id: str, spec: str, point: str = "start") -> None:
    """Fault injection for tests ($NETAUG_FAULT_TRIALS on the driver, comma-separated trial numbers, 0-based in
    start order): `N` raises on every attempt of trial N as it starts; `N@setup` raises once, on its first
    attempt, right after its setup (a*, plan) is written, so that its retry resumes from the setup."""
    wanted = {}
    for item in (x.strip() for x in spec.split(",")):
        if item:
            number, _, where = item.partition("@")
            wanted[int(number)] = where or "start"
    if not wanted:
        return
    order_file = run_dir / EXPERIMENT / "trial_order.txt"
    with open(order_file, "a+") as f:  # appends are atomic for short lines
        f.seek(0)
        seen = f.read().split()
        if trial_id not in seen:
            f.write(trial_id + "\n")
            seen.append(trial_id)
    if wanted.get(seen.index(trial_id)) != point:
        return
    if point == "setup":
        marker = setup_path(run_dir, trial_id).with_suffix(".failed")
        if marker.exists():
            return
        marker.touch()
    raise RuntimeError(f"injected failure in trial {trial_id} ({FAULT_ENV}, at {point})")


def sweep_trial(config: dict) -> None:
    """Tune trainable of one sweep trial, on `sweep.workers` data-parallel workers."""
    space = from_dict(SpaceConfig, json.loads(config["space_json"]))
    run_trial(sweep_body, config, space.sweep.workers, space.sweep.resources, Path(config["run_dir"]) / EXPERIMENT)


def sweep_body(config: dict, session: Session) -> None:
    """One sweep trial: a* search (rank 0), then training; rank 0 evaluates, writes and checkpoints."""
    started = time.perf_counter()
    started_at = time.time()
    import ray
    from torch.utils.tensorboard import SummaryWriter

    from netaug.models import profile_macs
    from netaug.train.calibrate import spent, with_epochs
    from netaug.train.cost import PhaseCost
    from netaug.train.runtime import configure_threads
    from netaug.train.trainer import Trainer

    configure_threads()
    space = from_dict(SpaceConfig, json.loads(config["space_json"]))
    params = swept_params(config)
    cfg = trial_space(space, params)
    run_dir = Path(config["run_dir"])
    trial_id = session.trial_id
    (run_dir / EXPERIMENT).mkdir(parents=True, exist_ok=True)
    if session.lead:
        _maybe_fail(run_dir, trial_id, config.get("fault_trials", ""))
    data = cached_data(cfg)
    checkpoint = session.checkpoint()
    state = load_trainer_state(checkpoint) if checkpoint is not None else None
    search_s = state.get("search_s", 0.0) if state is not None else 0.0
    saved = read_setup(run_dir, trial_id) if state is None and session.lead else None  # stopped before epoch 1
    if state is not None:
        largest = state.get("largest")
    elif space.sweep.largest == "searched" and cfg.training.mode not in PLAIN_MODES:
        t0 = time.perf_counter()
        found = None
        if session.lead:
            found = saved["largest"] if saved else search_for_trial(cfg, data, run_dir, config["supernet_checkpoint"],
                                                                     trial_id)
        largest = session.from_lead(found)
        search_s = saved["search_s"] if saved else time.perf_counter() - t0
    else:
        largest = None
    if state is not None and "plan" in state:
        plan = state["plan"]
    elif saved is not None or not session.lead:
        plan = session.from_lead(saved["plan"] if saved else None)
    else:
        t0 = time.perf_counter()
        plan = session.from_lead(plan_trial(cfg, data, largest)[1])
        plan["calibration_s"] = time.perf_counter() - t0
        write_setup(run_dir, trial_id, {"largest": largest, "search_s": search_s, "plan": plan})
        _maybe_fail(run_dir, trial_id, config.get("fault_trials", ""), "setup")
    cfg = with_epochs(cfg, plan["epochs_planned"])
    cost = PhaseCost(plan["cost_width"], plan["cost_min_w"])
    trainer = Trainer(cfg, data, largest=largest)
    history: list[dict] = []
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        history = list(state.get("history", []))
        session.replay(history, config["space_json"])
    if not session.lead:
        session.follow(trainer, config["space_json"])
        return
    aug = trainer.augmented
    shape = (data.in_channels, data.resolution, data.resolution)
    base_macs = profile_macs(trainer.export_base(), shape)[0]
    aug_macs = profile_macs(aug.export("max"), shape)[0] if aug is not None else base_macs
    arch = aug.config("max") if aug is not None else None
    writer = SummaryWriter(str(run_dir / EXPERIMENT / "tb" / trial_id))
    step_s = state.get("step_s", 0.0) if state else 0.0
    fixed = {"arch": json.dumps(arch), "mode": cfg.training.mode, "base_macs": base_macs, "aug_macs": aug_macs,
             "search_s": search_s, "node_id": ray.get_runtime_context().get_node_id(), "started_at": started_at,
             "workers": session.world, **plan}
    setup_s = time.perf_counter() - started

    def on_epoch(result) -> None:
        nonlocal step_s
        step_s += result.busy_s
        metrics = {**result.metrics, "step_s": step_s, "setup_s": setup_s,
                   COMPUTE_KEY: spent(cfg, cost, trainer.epoch), **fixed}
        log_epoch(writer, metrics)
        if trainer.epoch == cfg.training.epochs:
            t0 = time.perf_counter()
            metrics.update(final_evaluation(trainer, predictions_fragment(run_dir, trial_id), trial_id))
            step_s += time.perf_counter() - t0
            metrics["step_s"] = step_s
        metrics["trial_s"] = time.perf_counter() - started
        history.append(metrics)
        state = {"trainer": trainer.state_dict(), "largest": largest, "step_s": step_s, "search_s": search_s,
                 "plan": plan, "history": history if session.train else []}
        session.report(metrics, state, config["space_json"])

    trainer.run_epochs(on_epoch)
    writer.close()


def predictions_fragment(run_dir: Path, trial_id: str) -> Path:
    return run_dir / EXPERIMENT / "predictions" / f"{trial_id}.parquet"


def late_path(run_dir: Path, trial_id: str) -> Path:
    """The test metrics of a trial that the scheduler stopped early, written once evaluated from its last
    checkpoint: a resumed run does not evaluate it again."""
    return run_dir / EXPERIMENT / "late" / f"{trial_id}.json"


def read_late(run_dir: Path, trial_id: str) -> dict | None:
    """A stopped trial's evaluation from before, if both its metrics and its predictions are on disk."""
    path = late_path(run_dir, trial_id)
    if not (path.is_file() and predictions_fragment(run_dir, trial_id).is_file()):
        return None
    return json.loads(path.read_text())


def evaluate_stopped_trial(config: dict, trial_id: str, checkpoint_path: str) -> dict:
    """The final evaluation of a trial that ASHA stopped early, from its last checkpoint (kept in `late_path`)."""
    from netaug.data import load_data
    from netaug.train.calibrate import with_epochs
    from netaug.train.runtime import configure_threads
    from netaug.train.trainer import Trainer

    configure_threads()
    space = from_dict(SpaceConfig, json.loads(config["space_json"]))
    cfg = trial_space(space, swept_params(config))
    state = load_trainer_state(tune.Checkpoint(checkpoint_path))
    if "plan" in state:
        cfg = with_epochs(cfg, state["plan"]["epochs_planned"])
    trainer = Trainer(cfg, load_data(cfg.data), largest=state.get("largest"))
    trainer.load_state_dict(state["trainer"])
    run_dir = Path(config["run_dir"])
    out = final_evaluation(trainer, predictions_fragment(run_dir, trial_id), trial_id)
    path = late_path(run_dir, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, default=_plain_number))
    return out


def finalize_stopped(grid, cfg: SpaceConfig) -> dict[str, dict]:
    """Test metrics and predictions for trials stopped early, by trial id: those evaluated before are read back,
    the others are evaluated from their last checkpoints in parallel Ray tasks."""
    import ray

    from search.trials import trial_id_of

    done, todo = {}, {}
    for result in grid:
        m = result.metrics or {}
        checkpoint = checkpoint_of(result)
        if result.error is None and checkpoint is not None and m.get("test_top1") is None:
            tid = trial_id_of(result)
            if (known := read_late(Path(result.config["run_dir"]), tid)) is not None:
                done[tid] = known
            else:
                todo[tid] = (result.config, tid, checkpoint.path)
    if todo:
        res = resources_for(cfg.sweep.resources)
        task = ray.remote(evaluate_stopped_trial).options(num_cpus=res["cpu"], num_gpus=res["gpu"])
        pending = {tid: task.remote(*args) for tid, args in todo.items()}
        done.update(zip(pending, ray.get(list(pending.values()))))
    return done


# ---------------------------------------------------------------------------- driver side


def search_domains(cfg: SpaceConfig) -> dict:
    """Every parameter the sweep may sample, as Tune domains (the union over the swept modes)."""
    sw = cfg.sweep

    def float_range(rng):
        return tune.loguniform(rng.low, rng.high) if rng.log else tune.uniform(rng.low, rng.high)

    space = {"r": float_range(sw.r), "aug_loss_weight": float_range(sw.aug_loss_weight),
             "lambda_kd": float_range(sw.lambda_kd),
             "s": tune.choice(sw.s.values()) if sw.s.choices is not None else tune.randint(sw.s.low, sw.s.high + 1)}
    if sw.share_fraction is not None:
        space["share_fraction"] = float_range(sw.share_fraction)
    if sw.aug_fraction is not None:
        space["aug_fraction"] = float_range(sw.aug_fraction)
    if sw.macs_limit is not None:
        space["macs_limit"] = float_range(sw.macs_limit)
    for key in ("aug_every", "reparam_k"):
        rng = getattr(sw, key)
        if rng is not None:
            space[key] = tune.choice(rng.values()) if rng.choices is not None else tune.randint(rng.low, rng.high + 1)
    if len(sw.modes()) > 1:
        space["mode"] = tune.choice(sw.modes())
    return {k: v for k, v in space.items() if k == "mode" or any(k in params_of_mode(m) for m in sw.modes())}


def distributions(cfg: SpaceConfig) -> dict:
    """The sweep's parameters as Optuna distributions (the study file's)."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch.convert_search_space(search_domains(cfg))


def param_space(cfg: SpaceConfig, run_dir: Path, supernet_checkpoint: str | None) -> dict:
    """Tune's param_space: what every trial gets besides the parameters the searcher samples."""
    return {"space_json": json.dumps(cfg.to_dict()), "run_dir": str(run_dir),
            "fault_trials": os.environ.get(FAULT_ENV, ""), "supernet_checkpoint": supernet_checkpoint}


def study_path(run_dir: Path) -> Path:
    """The sweep's Optuna study: `optuna-dashboard <this file>` opens it."""
    return run_dir / EXPERIMENT / STUDY_FILE


def make_sampler(cfg: SpaceConfig):
    """The sweep's Optuna sampler, seeded by sweep.seed. TPE models the conditional space jointly
    (multivariate, grouped by the parameters a mode samples) and, with trials running at once, treats the
    running ones as bad (constant liar) so that they are not drawn twice."""
    import warnings

    import optuna

    sw = cfg.sweep
    startup = sw.n_startup_trials()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sw.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=sw.seed, n_startup_trials=startup, multivariate=True, group=True,
                                              constant_liar=sw.concurrency > 1)
        if sw.sampler == "gp":
            return optuna.samplers.GPSampler(seed=sw.seed, n_startup_trials=startup)
        return optuna.samplers.RandomSampler(seed=sw.seed)


def exhausted_path(run_dir: Path) -> Path:
    """Written by the searcher when the sweep's space has no configuration left that no trial ran."""
    return run_dir / EXPERIMENT / EXHAUSTED_FILE


def make_searcher(cfg: SpaceConfig, run_dir: Path):
    """The sweep's searcher on its conditional space, asking and telling through the run's journal file."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from search.sweep_search import ConditionalSpace, SweepSearch

    metric, mode = metric_mode(cfg)
    study_path(run_dir).unlink(missing_ok=True)  # a fresh sweep: nothing from an attempt Tune never recorded
    exhausted_path(run_dir).unlink(missing_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = SweepSearch(space=ConditionalSpace(distributions(cfg), cfg.sweep.modes()), metric=metric, mode=mode,
                           sampler=make_sampler(cfg), storage=journal_storage(study_path(run_dir)),
                           study_name=STUDY_NAME, exhausted_file=str(exhausted_path(run_dir)))
    return ConcurrencyLimiter(searcher, max_concurrent=cfg.sweep.concurrency)


def record_study(grid, cfg: SpaceConfig, run_dir: Path) -> int:
    """Rewrite the study file from Tune's records of the finished sweep: one Optuna trial per Tune
    trial (a resumed sweep may have left trials Tune never recorded); a trial the scheduler stopped
    early is PRUNED. Returns the number of trials."""
    from search.trials import trial_id_of, trial_number

    metric, mode = metric_mode(cfg)
    records = []
    for result in sorted(grid, key=lambda r: (trial_number(r), trial_id_of(r))):  # in the order Tune made them
        frame = result.metrics_dataframe
        steps = {}
        if frame is not None and metric in frame and "epoch" in frame:
            steps = {int(e): float(v) for e, v in zip(frame["epoch"], frame[metric]) if v == v}
        m = result.metrics or {}
        value = m.get(metric)
        state = ("FAIL" if result.error is not None or value is None
                 else "COMPLETE" if m.get("epoch", 0) >= planned_epochs(m, cfg) else "PRUNED")
        params = read_params(swept_params(result.config), result.config.get("mode", cfg.sweep.modes()[0]))
        records.append(TrialRecord(trial_id_of(result), {k: v for k, v in params.items() if v is not None},
                                   None if value is None else float(value), steps, state))
    return write_study(study_path(run_dir), records, distributions(cfg), "maximize" if mode == "max" else "minimize")


def planned_epochs(metrics: dict, cfg: SpaceConfig) -> int:
    """The epochs a trial's plan gave it (sweep.epochs for trials that reported no plan)."""
    planned = metrics.get("epochs_planned")
    return int(planned) if planned is not None and planned == planned else cfg.sweep.epochs


def time_attr(cfg: SpaceConfig) -> tuple[str, float]:
    """(the reported key ASHA's rungs are on, its maximum): cumulative compute in plain epochs, or epochs."""
    if cfg.compute.unit == "epochs":
        return "epoch", float(cfg.sweep.epochs)
    return COMPUTE_KEY, cfg.sweep.budget


def make_scheduler(cfg: SpaceConfig):
    """ASHA with its rungs on cumulative compute (plain epochs, `compute.unit`), or on epochs under the epochs
    unit; FIFO with `sweep.scheduler: none`."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sw = cfg.sweep
    if sw.scheduler != "asha":
        return FIFOScheduler()
    attr, max_t = time_attr(cfg)
    return ASHAScheduler(time_attr=attr, max_t=max_t, grace_period=min(sw.grace_period, max_t),
                         reduction_factor=sw.reduction_factor)


def metric_mode(cfg: SpaceConfig) -> tuple[str, str]:
    return cfg.sweep.metric, "max" if cfg.sweep.metric == "val_top1" else "min"


def run_sweep(cfg: SpaceConfig, run_dir: Path, resume: bool = False) -> tune.ResultGrid:
    """Run (or continue) the sweep; returns Tune's ResultGrid."""
    path = run_dir / EXPERIMENT
    trainable = tune.with_resources(sweep_trial, trial_resources(cfg.sweep.workers, cfg.sweep.resources))
    if (tuner := restored_tuner(path, run_dir, "sweep", resume, trainable, resume_unfinished=True,
                                resume_errored=False)) is not None:
        return tuner.fit()
    checkpoint = None
    if cfg.sweep.searches_largest():
        from search.supernet_stage import latest_checkpoint

        checkpoint = latest_checkpoint(run_dir)[0].path
    metric, mode = metric_mode(cfg)
    sw = cfg.sweep
    max_t = time_attr(cfg)[1]
    scheduler = make_scheduler(cfg)
    reporter = LineReporter("sweep", ("val_top1", "train_loss", "epoch_s"), None, budget=max_t,
                            work=sw.trials * max_t, unit=cfg.compute.unit)
    tuner = tune.Tuner(
        trainable, param_space=param_space(cfg, run_dir, checkpoint),
        tune_config=tune.TuneConfig(search_alg=make_searcher(cfg, run_dir), scheduler=scheduler, num_samples=sw.trials,
                                    metric=metric, mode=mode,
                                    reuse_actors=sw.workers == 1),  # a Train driver's actor is not reusable
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(run_dir), verbose=0, callbacks=[reporter],
            failure_config=tune.FailureConfig(max_failures=sw.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    return tuner.fit()

