"""Paired comparisons over seeds: mean difference, a t interval and a two-sided paired t-test.

Every arm of the final stage is trained once per seed, and for one seed all arms start from the
same weights and see the same batches, so arm and baseline are paired by seed. The statistic is
the per-seed difference d_i = arm_i - baseline_i; docs/metrics.md says why a paired t-test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the paired differences with its confidence interval and two-sided p-value."""

    n: int
    mean: float
    sd: float  # sample standard deviation of the differences (ddof = 1); nan for n < 2
    low: float  # interval bounds; nan when n < 2 or the differences do not vary
    high: float
    p_value: float  # nan when n < 2 or the differences do not vary
    confidence: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < 1 - self.confidence

    def verdict(self, better: str = "the arm", worse: str = "the baseline", significant: bool | None = None,
                how: str = "") -> str:
        """Plain words for the result; `significant` and `how` (e.g. "after Holm over 2 arms") come from a
        multiple-comparison correction when this difference is one of several."""
        if self.n < 2:
            return "one seed: no interval, no test (set final.seeds >= 2)"
        if math.isnan(self.p_value):
            return "identical differences on every seed: no test"
        level = f"{round((1 - self.confidence) * 100, 6):g}%" + (f" {how}" if how else "")
        if not (self.significant if significant is None else significant):
            return f"not significant at {level}"
        return f"significant at {level}: {better if self.mean > 0 else worse} is better"


def paired_difference(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Paired t statistics of arm - baseline (equal-length sequences, paired by position)."""
    a, b = np.asarray(arm, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    if n == 0:
        raise ValueError("no pairs")
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(n, mean, float("nan"), float("nan"), float("nan"), float("nan"), confidence)
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # the same difference on every seed (up to float rounding)
        return PairedDifference(n, mean, 0.0, float("nan"), float("nan"), float("nan"), confidence)
    se = sd / math.sqrt(n)
    t = mean / se
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(t), n - 1))
    return PairedDifference(n, mean, sd, mean - half, mean + half, p, confidence)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input's order;
    nan stays nan and does not count as a comparison. Reject at level a where adjusted < a."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def format_points(value: float) -> str:
    """A top-1 difference (a fraction) in percentage points with its sign, e.g. +0.83."""
    if math.isnan(value):
        return "nan"
    points = round(value * 100, 2)
    return f"{points + 0.0:+.2f}"  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class ArmComparison:
    """One arm against the baseline arm, paired by seed."""

    arm: str
    description: str
    baseline: str
    metric: str
    seeds: tuple[int, ...]
    arm_mean: float
    baseline_mean: float
    result: PairedDifference
    holm_p: float = float("nan")  # p adjusted by Holm over the `family` arms compared with the baseline together
    family: int = 1

    @property
    def significant(self) -> bool:
        """Significant at the result's level after the Holm correction over the arms compared together."""
        p = self.result.p_value if self.family <= 1 else self.holm_p
        return not math.isnan(p) and p < 1 - self.result.confidence

    def line(self) -> str:
        r = self.result
        interval = "" if math.isnan(r.low) else f" [{format_points(r.low)}, {format_points(r.high)}]"
        p = "" if math.isnan(r.p_value) else f", p = {r.p_value:.3g}"
        how = ""
        if self.family > 1 and not math.isnan(self.holm_p):
            p += f" (Holm {self.holm_p:.3g})"
            how = f"after Holm over {self.family} arms"
        what = self.metric.replace("_top1", " top-1").replace("_", " ")
        seeds = f"{r.n} seed{'s' if r.n != 1 else ''}"
        verdict = r.verdict(self.arm, self.baseline, self.significant, how)
        return (f"{self.arm} ({self.description}) vs {self.baseline}: {what} {format_points(r.mean)} pts"
                f"{interval}{p}, {seeds}: {verdict}")


def arm_comparisons(rows: Sequence[dict], metric: str = "test_top1", baseline: str = "baseline",
                    confidence: float = 0.95) -> list[ArmComparison]:
    """Every arm but `baseline` against it, on the seeds both have a value for (rows: one per arm and seed).

    The arms form one family: each comparison carries its p-value adjusted by Holm over the arms that have
    one, and is called significant on that (a single arm keeps its own p)."""
    arms = [a for a in dict.fromkeys(r["arm"] for r in rows) if a != baseline]
    if not any(r["arm"] == baseline for r in rows):
        return []
    return paired_comparisons(rows, {a: baseline for a in arms}, metric, confidence)


def paired_comparisons(rows: Sequence[dict], pairs: dict[str, str], metric: str = "test_top1",
                       confidence: float = 0.95) -> list[ArmComparison]:
    """Each arm of `pairs` against its own reference arm (e.g. plain training of as many epochs), paired by
    seed; all of them one family for Holm's correction."""
    by_arm: dict[str, dict[int, float]] = {}
    descriptions: dict[str, str] = {}
    for row in rows:
        if row.get(metric) is None or (isinstance(row[metric], float) and math.isnan(row[metric])):
            continue
        by_arm.setdefault(row["arm"], {})[int(row["seed"])] = float(row[metric])
        descriptions[row["arm"]] = row.get("description") or row.get("mode") or row["arm"]
    out = []
    for arm, reference in pairs.items():
        values, base = by_arm.get(arm, {}), by_arm.get(reference, {})
        seeds = tuple(sorted(set(values) & set(base)))
        if arm == reference or not seeds:
            continue
        a, b = [values[s] for s in seeds], [base[s] for s in seeds]
        out.append(ArmComparison(arm, descriptions[arm], reference, metric, seeds, float(np.mean(a)),
                                 float(np.mean(b)), paired_difference(a, b, confidence)))
    adjusted = holm([c.result.p_value for c in out])
    family = sum(not math.isnan(p) for p in adjusted)
    return [replace(c, holm_p=p, family=family) for c, p in zip(out, adjusted)]


def comparison_lines(comparisons: Sequence[ArmComparison], rows: Sequence[dict],
                     title: str = "Did NetAug help here? (paired by seed; docs/metrics.md)",
                     noun: str = "NetAug arm") -> list[str]:
    """The answer to "did NetAug help here?" (or `title`): one line per arm, then one plain sentence. `noun`
    names the arms compared with plain training ("NetAug arm", "reparam arm", "arm")."""
    if not comparisons:
        arms = sorted({r["arm"] for r in rows})
        return [f"no paired comparison: the final stage needs a baseline arm and another one (ran: {', '.join(arms)})"]
    lines = [title]
    what = comparisons[0].metric.replace("_top1", " top-1").replace("_", " ")
    lines += ["  " + c.line() for c in comparisons]
    tie = 5e-5  # below half a hundredth of a point: the same accuracy (float rounding of equal counts)
    better = [c for c in comparisons if c.significant and c.result.mean > 0]
    worse = [c for c in comparisons if c.significant and c.result.mean < 0]
    behind = [c for c in comparisons if c.result.mean < -tie]
    level = [c for c in comparisons if abs(c.result.mean) <= tie]
    how = "significantly for " + ", ".join(c.arm for c in worse) if worse else "not significantly"
    family = max(c.family for c in comparisons)
    holm_note = f" (Holm over {family} arms)" if family > 1 else ""
    if better:
        lines.append("Answer: yes. " + "; ".join(f"{c.arm} beat plain training by {format_points(c.result.mean)} pts"
                                                 for c in better) + f", significantly{holm_note}.")
    elif len(behind) == len(comparisons):
        lines.append(f"Answer: no. Plain training beat every {noun} here ({how}).")
    elif len(behind) + len(level) == len(comparisons):
        tied = ", ".join(c.arm for c in level)
        lines.append(f"Answer: no. No {noun} beat plain training here: {tied} tied with it on mean {what}"
                     + (f", {', '.join(c.arm for c in behind)} fell behind ({how})." if behind else "."))
    elif max(c.result.n for c in comparisons) < 2:
        lines.append("Answer: not tested. One seed per arm gives no interval; set final.seeds to 3 or more.")
    elif worse:
        rest = [c.arm for c in comparisons if c not in worse]
        lines.append(f"Answer: no. No {noun} beat plain training significantly, and "
                     f"{', '.join(c.arm for c in worse)} fell significantly behind it"
                     + (f"; {', '.join(rest)} did not differ significantly." if rest else "."))
    else:
        lines.append(f"Answer: not shown. No arm differs significantly{holm_note} from plain training with "
                     f"{max(c.result.n for c in comparisons)} seeds; more seeds or longer training would tell.")
    return lines


def _median_text(values: list, fmt: str) -> str:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return fmt.format(float(np.median(values))) if values else "-"


def final_table_lines(rows: Sequence[dict]) -> list[str]:
    """Per arm: seeds finished and mean ± std of train, val and test top-1."""
    ok = [r for r in rows if r.get("status", "TERMINATED") == "TERMINATED"]
    errored = sum(r.get("status") == "ERROR" for r in rows)
    lines = [f"final: {len(rows)} trials ({len(ok)} finished, {errored} errored)",
             f"  {'arm':<15}{'mode':<12}{'seeds':>6}{'epochs':>7}{'compute':>9}{'train s':>9}{'train top-1':>18}"
             f"{'val top-1':>18}{'test top-1':>18}"]

    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return f"{np.mean(values):.4f} ± {sd:.4f}"

    arms = list(dict.fromkeys(r["arm"] for r in ok))
    for arm in arms:
        mine = [r for r in ok if r["arm"] == arm]
        cols = [cell([float(r[m]) for r in mine if r.get(m) is not None]) for m in ("train_top1", "val_top1",
                                                                                     "test_top1")]
        cost = [_median_text([r.get(k) for r in mine], fmt) for k, fmt in (("epochs", "{:.0f}"), ("compute", "{:.1f}"),
                                                                             ("train_s", "{:.0f}"))]
        lines.append(f"  {arm:<15}{mine[0]['mode']:<12}{len(mine):>6}{cost[0]:>7}{cost[1]:>9}{cost[2]:>9}"
                     + "".join(f"{c:>18}" for c in cols))
    if any(r.get("compute") is not None for r in ok):
        lines.append("  (epochs, compute in plain epochs by compute.unit and measured training seconds: seed medians)")
    return lines


PLAIN_ARMS = ("baseline", "baseline_equal")
UNIT_WORDS = {"seconds": "training seconds measured here", "flops": "training FLOPs counted",
              "epochs": "epochs"}


def _mean_of(rows: Sequence[dict], arm: str, key: str) -> float:
    values = [float(r[key]) for r in rows if r["arm"] == arm and r.get(key) is not None
              and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(np.mean(values)) if values else float("nan")


def matched_name(epochs: int) -> str:
    """The name of the plain arm trained `epochs` epochs as the equal-epochs partner of arms that final.budget
    gives their own epochs (final.arms: baseline_matched)."""
    return f"baseline_e{epochs}"


def is_matched(arm: str) -> bool:
    return arm.startswith("baseline_e") and arm[len("baseline_e"):].isdigit()


def _question(modes: set[str]) -> tuple[str, str]:
    """(question, noun) for the arms compared with plain training: NetAug's, reparam's, or both kinds."""
    if modes <= {"reparam"}:
        return "did reparam help?", "reparam arm"
    if "reparam" in modes:
        return "did NetAug or reparam help?", "arm"
    return "did NetAug help?", "NetAug arm"


def answer_families(rows: Sequence[dict]) -> list[tuple[str, dict[str, str], list[dict]]]:
    """(title, {arm: its reference arm}, rows) of each question the final stage answers, paired by seed:

    - at equal epochs: every method arm (NetAug or reparam) against the plain arm trained as many epochs:
      `baseline`, or the `baseline_e<N>` that final.arms' baseline_matched adds when final.budget sets the
      methods' epochs; one family for Holm even where the references differ;
    - at equal compute: every method arm whose compute (plain epochs, `compute` column) is within one plain
      epoch (or 5%) of `baseline_equal`'s, or below it by less than one of its own epochs (the most epochs that
      final.budget buys), against it.
    """
    families = []
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    mode_of = {r["arm"]: r.get("mode") for r in rows}
    plain_mode = {a for a in arms if mode_of[a] == "baseline"}  # e.g. a winner that is plain training
    methods = [a for a in arms if a not in PLAIN_ARMS and a not in plain_mode and not is_matched(a)]
    references = [a for a in arms if a == "baseline"] + [a for a in arms if is_matched(a)]
    epochs_of = {a: _mean_of(rows, a, "epochs") for a in arms}
    pairs = {}
    for m in methods:
        ref = next((b for b in references if epochs_of[b] == epochs_of[m]), None)
        if ref is not None:
            pairs[m] = ref
    if pairs:
        question, _ = _question({mode_of[m] for m in pairs})
        used = list(dict.fromkeys(pairs.values()))
        if len(used) == 1 and epochs_of[used[0]] == epochs_of[used[0]]:
            title = f"At equal epochs ({epochs_of[used[0]]:g} each): {question} (paired by seed; docs/metrics.md)"
        elif len(used) == 1:
            title = f"{question[0].upper()}{question[1:-1]} here? (paired by seed; docs/metrics.md)"
        else:
            each = ", ".join(f"{m} {epochs_of[m]:g}" for m in pairs)
            title = (f"At equal epochs (each against plain training of as many epochs: {each}): {question} "
                     "(paired by seed; docs/metrics.md)")
        families.append((title, pairs, [r for r in rows if r["arm"] in (*used, *pairs)]))
    if "baseline_equal" in arms:
        budget = _mean_of(rows, "baseline_equal", "compute")
        unit = next((r.get("unit") for r in rows if r.get("unit")), "seconds")
        near = [a for a in methods if _at_budget(rows, a, budget)]
        if near:
            what = {"seconds": "time", "flops": "FLOPs"}.get(unit, "compute")
            title = (f"At equal compute ({budget:.1f} plain epochs; {UNIT_WORDS.get(unit, unit)}): better than "
                     f"training plain for the same {what}? (paired by seed)")
            families.append((title, {a: "baseline_equal" for a in near},
                             [r for r in rows if r["arm"] in ("baseline_equal", *near)]))
    return families


def _at_budget(rows: Sequence[dict], arm: str, budget: float) -> bool:
    """Whether `arm` trained at the budget: within one plain epoch (or 5%) of it, or below it by less than one
    of its own epochs (one more would have overspent)."""
    spent = _mean_of(rows, arm, "compute")
    if abs(spent - budget) <= max(1.0, 0.05 * budget):
        return True
    epoch = max(_mean_of(rows, arm, "cost_width"), _mean_of(rows, arm, "cost_min_w"))
    return spent <= budget < spent + epoch


def seeds_to_decide(result: PairedDifference, family: int = 1, limit: int = 1000) -> int | None:
    """Seeds at which a difference of this mean and spread would be significant even at the level Bonferroni
    gives one of `family` comparisons (which Holm's adjusted p then passes too); None: never, or beyond `limit`."""
    if result.n < 2 or not result.sd or math.isnan(result.sd) or result.mean == 0:
        return None
    alpha = (1 - result.confidence) / max(1, family)
    for n in range(max(3, result.n + 1), limit + 1):
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * result.sd / math.sqrt(n)
        if half < abs(result.mean):
            return n
    return None


def answer_lines(rows: list[dict], confidence: float, metric: str = "test_top1", int8: bool = False,
                 rerun=None) -> list[str]:
    """The paired answers at equal epochs and at equal compute (each a family with its own Holm correction), and
    for an answer that is not significant, the command that would decide it (`rerun(overrides)` builds one)."""
    lines = []
    for title, pairs, family in answer_families(rows):
        if int8:
            title = title.replace("? (paired", " at int8? (int8 models, paired")
        comparisons = paired_comparisons(family, pairs, metric, confidence)
        modes = {r.get("mode") for r in family if r["arm"] in pairs}
        lines += comparison_lines(comparisons, family, title, _question(modes)[1])
        if rerun is not None and comparisons and not any(c.significant for c in comparisons):
            lines.append(decide_line(comparisons, rerun, _longer(family, pairs)))
    if not lines:
        arms = sorted({r["arm"] for r in rows})
        lines.append(f"no paired comparison: the final stage needs a NetAug or reparam arm with baseline, "
                     f"baseline_equal or baseline_matched (ran: {', '.join(arms)})")
    return lines


def _longer(family: Sequence[dict], pairs: dict[str, str]) -> str:
    """The override that doubles a family's schedule: final.budget where compute sets the methods' epochs
    (at equal compute, or at equal epochs against baseline_matched's arms), else final.epochs."""
    refs = set(pairs.values())
    key = "compute" if refs == {"baseline_equal"} or any(is_matched(r) for r in refs) else "epochs"
    if key == "compute" and refs != {"baseline_equal"}:
        size = float(np.mean([r["compute"] for r in family if r["arm"] in pairs and r.get("compute") is not None]
                             or [float("nan")]))
        return f"final.budget={2 * size:.4g}"
    ref = [r for r in family if r["arm"] in refs]
    size = float(np.mean([r[key] for r in ref if r.get(key) is not None] or [float("nan")]))
    return f"final.budget={2 * size:.4g}" if key == "compute" else f"final.epochs={int(2 * size)}"


def decide_line(comparisons, rerun, longer: str) -> str:
    """What would decide an answer that is not significant: the seeds that the largest difference's mean and
    spread would need, or, when that is more than 30, a longer schedule."""
    needs = [(seeds_to_decide(c.result, c.family), c) for c in comparisons]
    need, c = min(needs, key=lambda nc: (nc[0] is None, nc[0] or 0, -abs(nc[1].result.mean)))
    if need is not None and need <= 30:
        return (f"  To decide it: if {c.arm}'s difference keeps its mean and spread, {need} seeds separate it from "
                f"0: {rerun([f'final.seeds={need}'])}")
    if c.result.n < 2:
        return f"  To decide it (one seed gives no interval): {rerun(['final.seeds=3'])}"
    return (f"  To decide it: {c.arm}'s difference is too small for its spread to separate from 0 within 30 seeds; "
            f"twice the schedule may move it: {rerun(['final.seeds=3', longer])}")
