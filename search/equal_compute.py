"""The final stage at equal compute: calibrate every arm's cost, then give each arm its epochs.

Before the final trials start, one Ray task (with a final trial's resources, so on the hardware the
trials run on) times every NetAug arm's steps, in its width-augmented and its min_w phase, round-robin
with plain training on the same real batches (netaug/train/calibrate.py). That gives each arm's epoch
in plain epochs by `compute.unit`. The winner's schedule at `final.epochs` then costs B plain epochs
(or B is `final.budget`), and `baseline_equal` trains round(B) epochs of plain training, its warm-up
and cosine spanning them. With `final.budget`, the winner, netaug_fixed and reparam train as many epochs
as B buys, and `baseline_matched` becomes one plain arm per epoch count they train (`baseline_e<N>`): their
partners at equal epochs. The calibration is written to `final/calibration.json`; `--resume` reuses it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from netaug.config import SpaceConfig
from netaug.io import atomic_path

CALIBRATION_FILE = "calibration.json"


def calibration_task(space_json: str, arms: list[dict], seed: int) -> dict:
    """Ray task: each non-plain arm's measured cost (RecipeCost dicts by arm name, plus "baseline")."""
    from netaug.config import from_dict
    from netaug.train.calibrate import calibrate
    from netaug.train.runtime import configure_threads
    from search.arms import Arm, arm_space
    from search.evaluation import cached_data

    configure_threads()
    space = from_dict(SpaceConfig, json.loads(space_json))
    recipes = {}
    for a in arms:
        arm = Arm(**a)
        if arm.mode != "baseline":
            recipes[arm.name] = (arm_space(space, arm, seed), arm.largest)
    if not recipes:
        return {}
    data = cached_data(space)
    costs = calibrate(recipes, data, space.compute.unit, space.compute.calibration_steps,
                      space.compute.calibration_warmup)
    return {name: cost.to_dict() for name, cost in costs.items()}


def measure(cfg: SpaceConfig, arms: list, run_dir: Path) -> dict:
    """The calibration of this run's final stage: read back from final/calibration.json, else measured in a
    Ray task and written there."""
    import ray

    from search.cluster import resources_for

    path = run_dir / "final" / CALIBRATION_FILE
    names = sorted(a.name for a in arms if a.mode != "baseline")
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("unit") == cfg.compute.unit and sorted(saved.get("arms_measured", [])) == names:
            saved["reused"] = True
            return saved
    res = resources_for(cfg.final.resources)
    task = ray.remote(calibration_task).options(num_cpus=res["cpu"], num_gpus=res["gpu"])
    if cfg.compute.unit == "epochs":
        costs = {}
    else:
        print(f"final: calibrating {', '.join(names) or 'nothing'} against plain training "
              f"({cfg.compute.unit}, {cfg.compute.calibration_steps} steps each, round-robin)", flush=True)
        costs = ray.get(task.remote(json.dumps(cfg.to_dict()), [dataclasses.asdict(a) for a in arms],
                                    cfg.training.seed))
    saved = {"unit": cfg.compute.unit, "steps": cfg.compute.calibration_steps,
             "warmup": cfg.compute.calibration_warmup, "seed": cfg.training.seed, "arms_measured": names,
             "costs": costs, "machine": machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(saved, indent=2) + "\n")
    saved["reused"] = False
    return saved


def machine() -> dict:
    """Where the calibration ran (the driver's view: CPU model, torch)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None}


def plan_arms(cfg: SpaceConfig, arms: list, calibration: dict) -> tuple[list, float]:
    """The arms with their epochs and per-epoch costs; and the budget B in plain epochs that the
    equal-compute comparison is at."""
    from netaug.train.calibrate import RecipeCost, plan_epochs, spent
    from netaug.train.cost import PhaseCost
    from search.arms import arm_space, final_epochs

    epochs = final_epochs(cfg)
    costs = {name: RecipeCost.from_dict(c).cost for name, c in calibration["costs"].items()}
    priced = [dataclasses.replace(a, cost_width=costs[a.name].width, cost_min_w=costs[a.name].min_w)
              if a.name in costs else a for a in arms]
    budget = cfg.final.budget
    if budget is None:
        methods = [a for a in priced if a.mode != "baseline"]  # the winner when it is a NetAug recipe
        reference = next((a for a in methods if a.name == "winner"), methods[0] if methods else None)
        if reference is None:
            budget = float(epochs)
        else:
            budget = spent(arm_space(cfg, reference, cfg.training.seed),
                           PhaseCost(reference.cost_width, reference.cost_min_w), epochs)
    planned = []
    for a in priced:
        if a.name == "baseline_equal":
            a = dataclasses.replace(a, epochs=max(1, round(budget)))
        elif cfg.final.budget is not None and a.name != "baseline":
            cost = PhaseCost(a.cost_width, a.cost_min_w)
            a = dataclasses.replace(a, epochs=plan_epochs(arm_space(cfg, a, cfg.training.seed), cost, budget))
        else:
            a = dataclasses.replace(a, epochs=epochs)
        planned.append(a)
    return matched_baselines(planned), budget


def matched_baselines(arms: list) -> list:
    """`baseline_matched` replaced by one plain arm per epoch count of the method arms (NetAug, reparam) that
    no `baseline` arm already trains: each method's partner at equal epochs when final.budget sets its epochs."""
    from netaug.stats import matched_name

    if not any(a.name == "baseline_matched" for a in arms):
        return arms
    taken = {a.epochs for a in arms if a.name == "baseline"}
    users: dict[int, list[str]] = {}
    for a in arms:
        if a.mode != "baseline" and a.epochs not in taken:
            users.setdefault(a.epochs, []).append(a.name)
    out = []
    for a in arms:
        if a.name != "baseline_matched":
            out.append(a)
            continue
        for n, names in sorted(users.items()):
            out.append(dataclasses.replace(a, name=matched_name(n), epochs=n,
                                           description=f"plain training, {n} epochs (as many as {', '.join(names)})"))
    return out


def calibration_lines(cfg: SpaceConfig, arms: list, calibration: dict, budget: float) -> list[str]:
    """The summary's statement of the calibration: each NetAug arm's epoch in plain epochs, and what baseline_equal
    was given."""
    unit = calibration["unit"]
    if unit == "epochs":
        return [f"compute: unit epochs (compute.unit): every arm trains {arms[0].epochs} epochs; no equal-compute "
                "comparison"]
    how = {"seconds": "seconds measured here", "flops": "training FLOPs counted"}[unit]
    reused = " (reused from final/calibration.json)" if calibration.get("reused") else ""
    lines = [f"compute calibration ({how}, round-robin on the same batches{reused}):"]
    plain = calibration["costs"].get("baseline")
    for a in arms:
        if a.mode == "baseline" or a.name not in calibration["costs"]:
            continue
        step = _step_text(calibration["costs"][a.name], unit)
        base = _step_text(plain, unit) if plain else "?"
        phases = (f" ({a.cost_min_w:.2f} in its min_w epochs)" if abs(a.cost_min_w - a.cost_width) > 1e-9 else "")
        lines.append(f"  1 {a.name} epoch = {a.cost_width:.2f} plain epochs here{phases}: a step {step} against "
                     f"plain {base}; {a.epochs} epochs")
    equal = next((a for a in arms if a.name == "baseline_equal"), None)
    if equal is not None:
        reference = next((a.name for a in arms if a.mode != "baseline"), "winner")
        source = ("final.budget" if cfg.final.budget is not None
                  else f"{reference}'s {cfg.final.epochs or cfg.training.epochs} epochs")
        lines.append(f"  budget: {budget:.2f} plain epochs ({source}) -> baseline_equal trains {equal.epochs} epochs")
    return lines


def _step_text(cost: dict, unit: str) -> str:
    width = cost["width"]
    return f"{width['seconds'] * 1e3:.1f} ms" if unit == "seconds" else f"{width['flops'] / 1e9:.3g} GFLOP"
