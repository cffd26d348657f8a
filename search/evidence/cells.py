"""The study's cells and arms: what one training run of the evidence study is, and the order they run in."""

from __future__ import annotations

from dataclasses import dataclass

ARMS = ("baseline", "netaug", "netaug_sortaug", "netaug_rkd_sampled", "netaug_rkd_fwd", "netaug_rkd",
        "netaug_rkd_astar", "netaug_astar", "netaug_share", "netaug_full", "baseline_equal", "reparam")
ARM_COLOR = dict(zip(ARMS, [f"C{i}" for i in range(10)] + ["black", "olive"]))  # one colour per arm in both panels
TEACHERS = {"netaug_rkd_sampled": "sampled", "netaug_rkd_fwd": "max_fwd"}  # rkd.teacher of the cheaper-teacher arms
ASTAR_ARMS = ("netaug_rkd_astar", "netaug_astar", "netaug_full")  # arms whose largest model is the SPOS a*
# x baseline step, measured (docs/results/); the arms a study must finish first come first in `plan`
ARM_COST = {"baseline": 1, "netaug": 6, "netaug_sortaug": 6, "netaug_rkd_sampled": 6, "netaug_rkd_fwd": 9,
            "netaug_rkd": 25, "netaug_rkd_astar": 20, "netaug_astar": 6, "netaug_share": 6, "netaug_full": 6,
            "baseline_equal": 4.4, "reparam": 2}
# issue 27's order: the seed's full method, RKD, the equal-compute baseline, SPOS a*, then share and sortaug
ARM_TIER = {"baseline": 0, "netaug": 0, "netaug_full": 1, "netaug_rkd_sampled": 2, "baseline_equal": 3,
            "netaug_astar": 4, "netaug_share": 5, "netaug_sortaug": 6, "netaug_rkd_fwd": 7, "netaug_rkd": 8,
            "netaug_rkd_astar": 9, "reparam": 3}
BACKFILL_TIER = 4  # --backfill reruns come after the must-cells (issue 27: full, RKD, equal compute, a*)
DEFAULT_SPACE = "spaces/netaug-official.yaml"
RESULTS, EPOCHS, PLOT = "evidence.parquet", "evidence_epochs.parquet", "evidence.png"


@dataclass(frozen=True)
class Cell:
    """One training run of the study."""

    base: str  # "mobilenetv2_tiny" or "mobilenetv2@0.1" (model name @ width multiplier)
    epochs: int
    arm: str
    seed: int
    train_epochs: int | None = None  # baseline_equal: the epochs it trains (its schedule), not `epochs`

    @property
    def id(self) -> str:
        arm = self.arm if self.train_epochs is None else f"{self.arm}-t{self.train_epochs}"
        return f"{self.base.replace('@', '-w')}_e{self.epochs}_{arm}_s{self.seed}"

    @property
    def schedule(self) -> int:
        """Epochs this cell trains: the comparison's schedule, or its own for the equal-compute baseline."""
        return self.train_epochs or self.epochs

    def cost(self) -> float:
        unit = 1 if self.train_epochs else ARM_COST[self.arm]
        return self.schedule * unit * (1.4 if self.base == "mobilenetv2_tiny" else 1.0)


def base_overrides(base: str) -> list[str]:
    name, _, width = base.partition("@")
    return [f"model.name={name}"] + ([f"model.width_mult={width}"] if width else [])


# The schedule the convergence study began with (issue 17): warm-up from near 0, min_w over all epochs.
# Kept by default, so that every arm stays paired with the finished cells; --schedule official drops it.
SCHEDULES = {"issue17": ["training.warmup=linear", "netaug.min_w_of=all"], "official": []}


def study_space(args, base: str, epochs: int):
    """The study's space for one base and schedule: the official recipe's warm-up share (5 of 150 epochs)."""
    from netaug.config import load_space

    warmup = round(epochs * 5 / 150, 4)
    pins = SCHEDULES[getattr(args, "schedule", "issue17")]
    return load_space(args.space, [*pins, *args.overrides, *base_overrides(base), f"training.epochs={epochs}",
                                   f"final.epochs={epochs}", f"training.warmup_epochs={warmup}"])


def arm_of(name: str, space, astar: list | None, teacher: str = "sampled"):
    from search.arms import Arm

    n = space.netaug
    common = {"r": n.r, "s": n.s, "aug_loss_weight": n.aug_loss_weight}
    share = space.sharing.share_fraction
    if name == "baseline":
        return Arm("baseline", "baseline", "plain training")
    if name == "baseline_equal":
        return Arm("baseline_equal", "baseline", "plain training at NetAug's compute")
    if name == "reparam":
        return Arm("reparam", "reparam", f"reparam (k={space.reparam.k}), folded at export", reparam_k=space.reparam.k)
    if name == "netaug_astar":
        return Arm("netaug_astar", "netaug", "netaug, SPOS a*", largest=astar, **common)
    if name == "netaug_share":
        return Arm("netaug_share", "netaug", f"netaug, every layer at r={n.r:g}, share-then-unshare {share:g}",
                   share_fraction=share, **common)
    if name == "netaug_full":
        return Arm("netaug_full", "netaug_rkd", f"netaug_rkd (teacher {teacher}), SPOS a*, share-then-unshare "
                   f"{share:g}", lambda_kd=space.rkd.lambda_kd, largest=astar, share_fraction=share, **common)
    if name == "netaug":
        return Arm("netaug", "netaug", f"netaug, every layer at r={n.r:g}", **common)
    if name == "netaug_sortaug":
        return Arm("netaug_sortaug", "netaug", f"netaug, every layer at r={n.r:g}, sort: augmented", **common)
    if name in TEACHERS:
        return Arm(name, "netaug_rkd", f"netaug_rkd, every layer at r={n.r:g}, teacher {TEACHERS[name]}",
                   lambda_kd=space.rkd.lambda_kd, **common)
    if name == "netaug_rkd":
        return Arm("netaug_rkd", "netaug_rkd", f"netaug_rkd, every layer at r={n.r:g}",
                   lambda_kd=space.rkd.lambda_kd, **common)
    return Arm("netaug_rkd_astar", "netaug_rkd", "netaug_rkd, SPOS a*", lambda_kd=space.rkd.lambda_kd,
               largest=astar, **common)



def plan(args) -> list[Cell]:
    seeds = {a: args.seeds for a in args.arms}
    seeds.update(args.arm_seeds)
    cells = [Cell(b, e, a, args.seed + i, args.equal_epochs if a == "baseline_equal" else None)
             for b in args.bases for e in args.epochs for a in args.arms for i in range(seeds[a])]
    cells += [Cell(b, e, "baseline", args.seed) for b in (args.curve_bases or args.bases) for e in args.curve_epochs]
    return sorted(dict.fromkeys(cells), key=lambda c: (ARM_TIER[c.arm], c.cost(), c.seed))
