"""The study's report: paired deltas with Holm, P/R/F1@k, reruns, the table (evidence.md) and the plot."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

from search.evidence.cells import ARM_COLOR, ARMS, EPOCHS, PLOT, RESULTS, Cell

PRF_KS = (1, 3)  # the seed's precision/recall/F1@k on test (macro, torchmetrics' semantics)


def load_rows(out: Path) -> tuple[list[dict], list[dict], list[dict]]:
    import pyarrow.parquet as pq

    def read(folder: str) -> list[dict]:
        files = sorted((out / folder).glob("*.parquet"))
        return [r for f in files for r in pq.read_table(f).to_pylist()]

    reruns = read("reruns")
    return with_reruns(read("cells"), reruns), read("epochs"), reruns


KEY = tuple(f.name for f in fields(Cell))  # a cell's identity in its row


def cell_key(row: dict) -> tuple:
    """The identity (KEY) of the cell a cell's or rerun's row belongs to."""
    return tuple(row.get(k) for k in KEY)


def with_reruns(rows: list[dict], reruns: list[dict]) -> list[dict]:
    """The cells' rows, with test precision/recall/F1 filled in from the reruns that reproduced them
    exactly (`prf_from_rerun`); a rerun that did not reproduce its cell is ignored here and reported."""
    done = {cell_key(r): r for r in reruns if r["reproduced"]}
    out = []
    for row in rows:
        rerun = done.get(cell_key(row))
        if rerun is not None and (row.get(PRF_COLUMNS[0]) is None or _isnan(row[PRF_COLUMNS[0]])):
            row = {**row, **{c: rerun[c] for c in PRF_COLUMNS}, "prf_from_rerun": True}
        out.append(row)
    return out


def rerun_lines(reruns: list[dict]) -> list[str]:
    """The reruns of --backfill: how many reproduced their cell exactly, then a line for each that did not."""
    if not reruns:
        return []
    same = sum(r["reproduced"] for r in reruns)
    lines = [f"Reruns (--backfill, for the test predictions the first run did not store): {same} of {len(reruns)} "
             "reproduced their cell's train/val/test top-1, test loss and every epoch's val top-1 bit for bit."]
    for r in reruns:
        if not r["reproduced"]:
            diffs = ", ".join(f"{k.removeprefix('max_abs_diff_')} {v:.3g}" for k, v in r.items()
                              if k.startswith("max_abs_diff"))
            lines.append(f"- {r['arm']} seed {r['seed']} differs (code {r['code']} vs {r['stored_code']}): {diffs}; "
                         "its predictions are not the cell's (its own figures are in the table of reruns)")
    return lines


REFERENCES = ("baseline", "netaug")  # every arm is compared with both, paired by seed
PRF_COLUMNS = [f"test_{m}@{k}" for k in PRF_KS for m in ("precision", "recall", "f1")]


def comparisons(rows: list[dict]) -> dict[tuple, object]:
    """{(base, epochs, arm, reference): ArmComparison} of test top-1, paired by seed, against each of
    REFERENCES (netaug against baseline once), with Holm's p over every comparison that has a p-value."""
    from dataclasses import replace

    from netaug.stats import arm_comparisons, holm

    comps: dict[tuple, object] = {}
    for base, epochs in sorted({(r["base"], r["epochs"]) for r in rows}):
        mine = [r for r in rows if r["base"] == base and r["epochs"] == epochs]
        for ref in REFERENCES:
            for c in arm_comparisons(mine, baseline=ref):
                if c.arm not in REFERENCES[:REFERENCES.index(ref) + 1]:  # no reverse or self comparisons
                    comps[(base, epochs, c.arm, ref)] = c
    keys = list(comps)
    adjusted = holm([comps[k].result.p_value for k in keys])
    family = sum(not math.isnan(p) for p in adjusted)
    return {k: replace(comps[k], holm_p=p, family=family) for k, p in zip(keys, adjusted)}


def _delta(c) -> tuple[str, str]:
    """("+0.60 [−0.06, +1.26], p = 0.066 (n=5)", "0.2 *") for one comparison, or dashes."""
    from netaug.stats import format_points

    if c is None:
        return "—", "—"
    res = c.result
    ci = "" if math.isnan(res.low) else f" [{format_points(res.low)}, {format_points(res.high)}]"
    p = "" if math.isnan(res.p_value) else f", p = {res.p_value:.3g}"
    holm_p = "—" if math.isnan(c.holm_p) else f"{c.holm_p:.3g}" + (" *" if c.holm_p < 0.05 else "")
    return f"{format_points(res.mean)}{ci}{p} (n={res.n})", holm_p


def report_lines(rows: list[dict], reruns: list[dict] = ()) -> tuple[list[str], dict]:
    """The report's Markdown: per base and schedule, each arm's train/val/test top-1 at the end and its
    paired Δ test top-1 against baseline and netaug with Holm's p; then test precision/recall/F1@k; then
    the reruns that did not reproduce their cell, with their own test top-1 and P/R/F1@k."""
    comps = comparisons(rows)
    lines = ["| base | epochs | arm | seeds | train top-1 | val top-1 | test top-1 | Δ test vs baseline (pts) "
             "[95% CI], p | Holm p | Δ test vs netaug (pts) [95% CI], p | Holm p |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    prf = ["| base | epochs | arm | seeds with predictions | " + " | ".join(
        c.replace("test_", "") for c in PRF_COLUMNS) + " |", "|" + " --- |" * (4 + len(PRF_COLUMNS))]
    for base, epochs in sorted({(r["base"], r["epochs"]) for r in rows}):
        mine = [r for r in rows if r["base"] == base and r["epochs"] == epochs]
        for arm in [a for a in ARMS if any(r["arm"] == a for r in mine)]:
            rs = [r for r in mine if r["arm"] == arm]
            cells = [_mean_sd([r[k] for r in rs]) for k in ("train_top1", "val_top1", "test_top1")]
            vs = [x for ref in REFERENCES for x in _delta(comps.get((base, epochs, arm, ref)))]
            name = arm if arm != "baseline_equal" else f"baseline_equal ({rs[0]['train_epochs']} epochs)"
            lines.append(f"| {base} | {epochs} | {name} | {len(rs)} | " + " | ".join(cells + vs) + " |")
            have = [r for r in rs if r.get(PRF_COLUMNS[0]) is not None and not _isnan(r[PRF_COLUMNS[0]])]
            if have:
                rerun = sum(bool(r.get("prf_from_rerun")) for r in have)
                prf.append(f"| {base} | {epochs} | {name} | {len(have)} of {len(rs)}"
                           + (f" ({rerun} from reruns)" if rerun else "") + " | "
                           + " | ".join(_mean_sd([r[c] for r in have]) for c in PRF_COLUMNS) + " |")
    family = next(iter(comps.values())).family if comps else 0
    lines += ["", f"Holm p: adjusted over all {family} comparisons with a p-value in this table (both columns); "
              "* marks Holm p < 0.05. The intervals are the plain paired 95% intervals."]
    if len(prf) > 2:
        lines += ["", "Test precision / recall / F1 at k (macro, torchmetrics' definitions; docs/metrics.md), "
                  "mean ± sd over the seeds whose cell stored its test predictions (or whose rerun reproduced the cell "
                  "exactly and stored them):", "", *prf]
    lines += differing_reruns_table(rows, reruns)
    return lines, comps


def differing_reruns_table(rows: list[dict], reruns: list[dict]) -> list[str]:
    """Per arm, the reruns that did not reproduce their cell bit for bit (same seeds and recipe, another
    machine's rounding or another commit), so a second sample of the arm, not its table's cells. Their test top-1
    (beside the stored cells' of the same seeds) and their own test precision/recall/F1@k."""
    differ = [r for r in reruns if not r["reproduced"] and not _isnan(r.get(PRF_COLUMNS[0], math.nan))]
    if not differ:
        return []
    stored = {cell_key(r): r for r in rows}
    out = ["", "Reruns that did not reproduce their cell bit for bit (same seed and recipe; each one's code and the "
           "cell's are in the lines below). Their own test figures, beside the stored cells' test top-1 of the same "
           "seeds:",
           "", "| base | epochs | arm | seeds | stored test top-1 | rerun test top-1 | "
           + " | ".join(c.replace("test_", "") for c in PRF_COLUMNS) + " |", "|" + " --- |" * (6 + len(PRF_COLUMNS))]
    groups = sorted({(r["base"], r["epochs"], r["arm"]) for r in differ}, key=lambda k: (k[0], k[1], ARMS.index(k[2])))
    for key in groups:
        rs = sorted((r for r in differ if (r["base"], r["epochs"], r["arm"]) == key), key=lambda r: r["seed"])
        cells = [stored[cell_key(r)]["test_top1"] for r in rs]
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(str(r['seed']) for r in rs)} | {_mean_sd(cells)} | "
                   + " | ".join(_mean_sd([r[c] for r in rs]) for c in ["test_top1", *PRF_COLUMNS]) + " |")
    return out


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def report(args) -> None:
    import pyarrow as pa

    from netaug.io import atomic_path, write_parquet

    out = Path(args.out)
    rows, epoch_rows, reruns = load_rows(out)
    if not rows:
        print(f"no finished cells under {out / 'cells'}")
        return
    write_parquet(pa.Table.from_pylist(rows), out / RESULTS)
    write_parquet(pa.Table.from_pylist(epoch_rows), out / EPOCHS)
    lines, comps = report_lines(rows, reruns)
    notes = rerun_lines(reruns)
    lines += ["", *notes] if notes else []
    print("\n".join(lines))
    with atomic_path(out / "evidence.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    deltas = [(b, e, a, c.result) for (b, e, a, ref), c in comps.items() if ref == "baseline"]
    plot(out, deltas, epoch_rows)
    print(f"wrote {out / RESULTS}, {out / EPOCHS}, {out / 'evidence.md'}, {out / PLOT}")


def _mean_sd(values: list[float]) -> str:
    import numpy as np

    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def seed_band(rows) -> tuple[list[int], list[float], list[float], list[float], list[int]]:
    """Train top-1 per epoch over the seeds of one arm and schedule: epochs every seed has, then the
    mean, min and max over the seeds at each, and the seeds."""
    by_seed: dict[int, dict[int, float]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["epoch"]] = r["train_top1"]
    seeds = sorted(by_seed)
    xs = sorted(set.intersection(*(set(c) for c in by_seed.values())))
    vals = [[by_seed[s][e] for s in seeds] for e in xs]
    return xs, [sum(v) / len(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals], seeds


def plot(out: Path, deltas: list, epoch_rows: list[dict]) -> None:
    """Per base size: Δ test top-1 of each arm against baseline with its paired interval (against the
    schedule length when there are several, per arm when there is one), and train top-1 per epoch:
    every arm at its longest schedule plus baseline at every schedule (the plateau), the mean over
    the finished seeds with their min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from netaug.io import atomic_path

    bases = sorted({r["base"] for r in epoch_rows})
    fig, axes = plt.subplots(2, len(bases), figsize=(6.5 * len(bases), 8), squeeze=False)
    for j, base in enumerate(bases):
        ax = axes[0][j]
        mine = [(e, a, r) for b, e, a, r in deltas if b == base]
        schedules = sorted({e for e, _, _ in mine})
        arms = [a for a in ARMS[1:] if any(x == a for _, x, _ in mine)]
        for k, arm in enumerate(arms):
            pts = sorted((e, r) for e, a, r in mine if a == arm)
            xs = [e for e, _ in pts] if len(schedules) > 1 else [k]
            ys = [r.mean * 100 for _, r in pts]
            err = [[(r.mean - r.low) * 100 if not math.isnan(r.low) else 0 for _, r in pts],
                   [(r.high - r.mean) * 100 if not math.isnan(r.high) else 0 for _, r in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, color=ARM_COLOR[arm],
                        label=f"{arm} (n={pts[-1][1].n})")
        ax.axhline(0, color="black", lw=0.8)
        if len(schedules) > 1:
            ax.set_xlabel("schedule (epochs)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xticks(range(len(arms)), arms, fontsize=8)
            ax.set_xlim(-0.5, max(len(arms), 1) - 0.5)
            ax.set_xlabel(f"arm ({schedules[0]} epochs)" if schedules else "arm")
        if not mine:
            ax.text(0.5, 0.5, "no paired comparison has finished yet", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set(title=f"{base}: Δ test top-1 vs baseline, paired by seed", ylabel="Δ (pts), 95% CI")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax = axes[1][j]
        for arm in ARMS:
            rows = [r for r in epoch_rows if r["base"] == base and r["arm"] == arm]
            if not rows:
                continue
            longest = max(r["epochs"] for r in rows)
            schedules = sorted({r["epochs"] for r in rows}) if arm == "baseline" else [longest]
            for n, epochs in enumerate(schedules):
                xs, mean, low, high, seeds = seed_band(r for r in rows if r["epochs"] == epochs)
                # baseline's shorter schedules (the plateau curves) in greys, lighter the shorter
                grey = str(0.3 + 0.5 * (len(schedules) - 1 - n) / len(schedules))
                color = ARM_COLOR[arm] if epochs == longest else grey
                who = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of {len(seeds)} seeds, band min-max"
                trained = xs[-1] if xs else epochs  # baseline_equal trains its own schedule, longer than `epochs`
                ax.plot(xs, mean, marker=".", color=color, label=f"{arm}, {trained}-epoch schedule, {who}")
                if len(seeds) > 1:
                    ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
        ax.set(title=f"{base}: train top-1 per epoch (fixed train subset)", xlabel="epoch", ylabel="train top-1")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / PLOT) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

