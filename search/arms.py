"""The arms of the final stage: one method each (mode, parameters, largest augmented model, epochs and
per-epoch cost), resolved against the sweep's winner, and the space one arm x seed trains with."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from netaug.config import PLAIN_MODES, SpaceConfig, from_dict, params_of_mode
from netaug.errors import UserError
from netaug.records import best_trial

PLAIN_ARMS = ("baseline", "baseline_equal")  # plain training
NO_SWEEP_ARMS = (*PLAIN_ARMS, "reparam", "baseline_matched")  # arms that need no sweep


@dataclass(frozen=True)
class Arm:
    """One method the final stage retrains: everything a trial needs besides the seed."""

    name: str
    mode: str
    description: str  # e.g. "netaug_rkd, a*" or "plain training"
    r: float | None = None
    s: int | None = None
    aug_loss_weight: float | None = None
    lambda_kd: float | None = None
    share_fraction: float | None = None
    largest: list | None = None  # the largest augmented model (a* of the winner); None: every layer at r
    aug_every: int | None = None
    aug_fraction: float | None = None
    reparam_k: int | None = None  # mode reparam: reparam.k (None: the space's)
    epochs: int | None = None  # None: final.epochs
    cost_width: float = 1.0  # one epoch in plain epochs, by compute.unit (calibrated), width-augmented phase
    cost_min_w: float = 1.0  # ... in NetAug's min_w phase

    def model_name(self, seed: int) -> str:
        return f"final:{self.name}:s{seed}"

    def file_stem(self, seed: int) -> str:
        return f"{self.name}_s{seed}"


def _num(value, kind=float):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else kind(value)


def _finished(run_dir: Path, cfg: SpaceConfig) -> list[dict]:
    path = run_dir / "trials.parquet"
    if not path.is_file():
        raise UserError(f"--out: no finished sweep in {run_dir} (trials.parquet is missing); run the sweep first")
    metric = cfg.sweep.metric
    rows = [t for t in pq.read_table(path).to_pylist() if t["status"] != "ERROR" and t.get(metric) is not None]
    if not rows:
        raise UserError(f"--out: no sweep trial in {path} has a {metric}; the final stage needs a winner")
    return rows


def _samples_r(trial: dict) -> bool:
    """Whether the trial trained with a sampled r: its mode reads r (a sweep started before the space was
    conditional on mode gave plain trials an r too) and the sweep drew one."""
    return "r" in params_of_mode(trial.get("mode") or "netaug") and _num(trial.get("r")) is not None


def winner_of(run_dir: Path, cfg: SpaceConfig) -> dict:
    """The best finished sweep trial by sweep.metric, from trials.parquet."""
    return best_trial(_finished(run_dir, cfg), cfg.sweep.metric)


def augmented_of(run_dir: Path, cfg: SpaceConfig) -> dict | None:
    """The best finished sweep trial that sampled NetAug's r, s and alpha (None: no such trial)."""
    rows = [t for t in _finished(run_dir, cfg) if _samples_r(t)]
    return best_trial(rows, cfg.sweep.metric)


def arms_for(cfg: SpaceConfig, winner: dict | None, augmented: dict | None = None) -> list[Arm]:
    """The arms of `final.arms`, resolved against the sweep's winner. netaug_fixed takes r, s and alpha from the
    winner, or, when the winner is plain training or reparam (which sample none of them), from `augmented`, the
    best NetAug trial, or else from the space's netaug section."""
    arms = []
    for name in cfg.final.arms:
        if name == "baseline":
            arms.append(Arm("baseline", "baseline", "plain training"))
            continue
        if name == "baseline_equal":
            arms.append(Arm("baseline_equal", "baseline", "plain training at equal compute"))
            continue
        if name == "baseline_matched":  # plan_arms turns it into one plain arm per other arm's epoch count
            arms.append(Arm("baseline_matched", "baseline", "plain training at each other arm's epochs"))
            continue
        if name == "reparam":
            r = cfg.reparam
            parts = [f"k={r.k}"] + (["1x1"] if r.conv1x1 else []) + (["identity"] if r.identity else [])
            arms.append(Arm("reparam", "reparam", f"reparam ({', '.join(parts)}), folded at export", reparam_k=r.k))
            continue
        if winner is None:
            raise UserError(f"final.arms: '{name}' needs a finished sweep (trials.parquet)")
        source = winner if _samples_r(winner) else augmented
        common = ({"r": float(source["r"]), "s": int(source["s"]), "aug_loss_weight": float(source["aug_loss_weight"]),
                   "share_fraction": _num(source.get("share_fraction"))} if source is not None else
                  {"r": cfg.netaug.r, "s": cfg.netaug.s, "aug_loss_weight": cfg.netaug.aug_loss_weight,
                   "share_fraction": None})
        if name == "winner" and winner["mode"] == "baseline":
            arms.append(Arm("winner", "baseline", "baseline: the sweep found plain training best"))
            continue
        if name == "winner" and winner["mode"] == "reparam":
            k = _num(winner.get("reparam_k"), int)
            k = cfg.reparam.k if k is None else k
            arms.append(Arm("winner", "reparam", f"reparam (k={k}): the sweep found re-parameterization best",
                            reparam_k=k))
            continue
        cheaper = {"aug_every": _num(winner.get("aug_every"), int), "aug_fraction": _num(winner.get("aug_fraction"))}
        if name == "winner":
            searched = cfg.sweep.largest == "searched" and winner.get("arch")
            largest = json.loads(winner["arch"]) if searched else None
            lam = float(winner["lambda_kd"]) if winner["mode"] in ("netaug_kd", "netaug_rkd") else None
            what = "a*" if searched else f"every layer at r={common['r']:.3g}"
            what += "".join(f", {k}={v:g}" for k, v in cheaper.items() if v is not None)
            arms.append(Arm("winner", winner["mode"], f"{winner['mode']}, {what}", lambda_kd=lam,
                            largest=largest, **common, **cheaper))
        elif name == "netaug_fixed":
            whose = ("" if source is winner else " (r, s, alpha of the best NetAug trial)" if source is not None
                     else " (r, s, alpha of the space's netaug section)")
            arms.append(Arm("netaug_fixed", "netaug", f"netaug, every layer at r={common['r']:.3g}{whose}", **common))
    return arms


NOT_TRAINING = ("name", "description", "cost_width", "cost_min_w")  # Arm fields that do not change what trains


def without_twins(arms: list[Arm]) -> tuple[list[Arm], list[str]]:
    """The arms less a winner that would train exactly what another arm trains (plain training for as many
    epochs as baseline_equal, say), with a line saying so. Only the winner is left out: the other arms are the
    references and methods the answers name (baseline and baseline_equal may coincide, as two questions)."""
    def what(a: Arm) -> str:
        return json.dumps({k: v for k, v in asdict(a).items() if k not in NOT_TRAINING}, sort_keys=True)

    others = {what(a): a.name for a in reversed(arms) if a.name != "winner"}  # the first of equal arms
    twin = {a.name: others[what(a)] for a in arms if a.name == "winner" and what(a) in others}
    notes = [f"final: {a.name} ({a.description}, {a.epochs} epochs) trains exactly what {twin[a.name]} trains; "
             "not trained twice" for a in arms if a.name in twin]
    return [a for a in arms if a.name not in twin], notes


def final_epochs(cfg: SpaceConfig) -> int:
    return cfg.final.epochs if cfg.final.epochs is not None else cfg.training.epochs


def arm_space(space: SpaceConfig, arm: Arm, seed: int) -> SpaceConfig:
    """The space one final trial trains with: the arm's method and parameters, the seed, final.epochs."""
    raw = space.to_dict()
    epochs = arm.epochs if arm.epochs is not None else final_epochs(space)
    raw["training"].update(mode=arm.mode, seed=seed, epochs=epochs,
                           warmup_epochs=min(space.training.warmup_epochs, epochs))
    if arm.r is not None:
        raw["netaug"].update(r=arm.r, s=arm.s, aug_loss_weight=arm.aug_loss_weight)
    for key in ("aug_every", "aug_fraction"):
        if getattr(arm, key) is not None:
            raw["netaug"][key] = getattr(arm, key)
    if arm.lambda_kd is not None:
        raw["rkd"]["lambda_kd"] = arm.lambda_kd
    if arm.reparam_k is not None:
        raw["reparam"]["k"] = arm.reparam_k
    if arm.share_fraction is not None:
        raw["sharing"].update(enabled=True, share_fraction=arm.share_fraction)
    elif arm.mode in PLAIN_MODES:
        raw["sharing"]["enabled"] = False
    return from_dict(SpaceConfig, raw)
