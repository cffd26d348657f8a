"""The study's answers quoted in docs/results/equal-compute.md, and the figures README's "What we found" takes from
them, are those of the committed Parquet files (studies/equal-compute/cell-*/final.parquet): each quoted paired
difference is recomputed here from the per-seed values with scipy (paired t-test, t interval) and Holm's step-down
written out, independently of netaug.stats."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import ROOT

STUDY = ROOT / "studies" / "equal-compute"
PAGE = ROOT / "docs" / "results" / "equal-compute.md"
README = ROOT / "README.md"
ANCHOR = "equal-compute.md#evidence-at-equal-compute-from-the-main-job-issue-41"
CELLS = sorted(p.parent.name for p in STUDY.glob("cell-*/final.parquet"))
BLOCK = re.compile(r"<!-- answers: (?P<path>\S+) -->\n```text\n(?P<body>.*?)\n```", re.S)
LINE = re.compile(
    r"^\s*(?P<arm>\S+) \(.*\) vs (?P<ref>\S+): (?P<metric>(?:int8 )?test top-1) (?P<mean>[+-]\d+\.\d\d) pts"
    r"(?: \[(?P<low>[+-]\d+\.\d\d), (?P<high>[+-]\d+\.\d\d)\])?"
    r"(?:, p = (?P<p>[0-9.e+-]+)(?: \(Holm (?P<holm>[0-9.e+-]+)\))?)?, (?P<n>\d+) seeds?: ")
TRIPLE = re.compile(r"([+−-]\d+\.\d\d) pts \[([+−-]\d+\.\d\d), ([+−-]\d+\.\d\d)\]")


def points(value: float) -> str:
    return f"{round(value * 100, 2) + 0.0:+.2f}"


def quoted_blocks(text: str) -> dict[str, list[str]]:
    """{Parquet path: its quoted answer lines} of a results page."""
    return {m["path"]: m["body"].splitlines() for m in BLOCK.finditer(text)}


def check_quote(final: pd.DataFrame, lines: list[str], confidence: float = 0.95) -> list[str]:
    """What in the quoted `lines` disagrees with `final` (one row per arm and seed): each comparison's mean,
    interval, p and Holm p, recomputed with scipy; each family (the lines under one "At equal ..." title) is one
    Holm family; at equal epochs both arms trained as many epochs; at equal compute the reference is
    baseline_equal."""
    errors, families, title = [], [], None
    for line in lines:
        if line.startswith("At equal"):
            title = line
            families.append((title, []))
        elif (m := LINE.match(line)) is not None:
            if title is None:
                errors.append(f"a comparison outside any family: {line}")
                continue
            families[-1][1].append(m)
    ok = final[final["status"] == "TERMINATED"]
    for title, matches in families:
        recomputed = []
        for m in matches:
            column = "int8_test_top1" if m["metric"].startswith("int8") else "test_top1"
            a = ok[ok["arm"] == m["arm"]].set_index("seed")[column]
            b = ok[ok["arm"] == m["ref"]].set_index("seed")[column]
            seeds = sorted(set(a.index) & set(b.index))
            d = a[seeds].to_numpy(float) - b[seeds].to_numpy(float)
            if title.startswith("At equal epochs"):
                if ok[ok["arm"] == m["arm"]]["epochs"].mean() != ok[ok["arm"] == m["ref"]]["epochs"].mean():
                    errors.append(f"{m['arm']} and {m['ref']} trained different epochs: {title}")
            elif m["ref"] != "baseline_equal":
                errors.append(f"at equal compute against {m['ref']}, not baseline_equal")
            p = float(scipy.stats.ttest_rel(a[seeds], b[seeds]).pvalue) if len(d) > 1 and np.ptp(d) > 1e-9 else math.nan
            recomputed.append((m, d, p))
        ps = [p for _, _, p in recomputed if not math.isnan(p)]
        order = sorted(ps)
        for m, d, p in recomputed:
            n = len(d)
            if int(m["n"]) != n:
                errors.append(f"{m['arm']}: {m['n']} seeds quoted, {n} in the Parquet")
            if m["mean"] != points(d.mean()):
                errors.append(f"{m['arm']} vs {m['ref']}: mean {m['mean']} quoted, {points(d.mean())} recomputed")
            if n > 1 and not math.isnan(p):
                sem = d.std(ddof=1) / math.sqrt(n)
                low, high = scipy.stats.t.interval(confidence, n - 1, loc=d.mean(), scale=sem)
                if (m["low"], m["high"]) != (points(low), points(high)):
                    errors.append(f"{m['arm']} vs {m['ref']}: [{m['low']}, {m['high']}] quoted, "
                                  f"[{points(low)}, {points(high)}] recomputed")
                if m["p"] != f"{p:.3g}":
                    errors.append(f"{m['arm']} vs {m['ref']}: p = {m['p']} quoted, {p:.3g} recomputed")
                if len(ps) > 1:  # Holm's step-down over the family, written out
                    rank = order.index(p)
                    adjusted = max(min(1.0, (len(ps) - i) * order[i]) for i in range(rank + 1))
                    if m["holm"] != f"{adjusted:.3g}":
                        errors.append(f"{m['arm']} vs {m['ref']}: Holm {m['holm']} quoted, {adjusted:.3g} recomputed")
    return errors


def readme_triples() -> list[tuple[str, str, str]]:
    """The (mean, low, high) figures of README's "What we found" bullets that cite this study."""
    text = README.read_text().split("## What we found", 1)[1].split("\n## ", 1)[0]
    bullets = re.split(r"\n- ", text)
    return [tuple(x.replace("−", "-") for x in t) for b in bullets if ANCHOR in b for t in TRIPLE.findall(b)]


@pytest.mark.parametrize("cell", CELLS)
def test_the_quoted_answers_are_the_parquets(cell):
    from netaug.stats import answer_lines

    path = f"studies/equal-compute/{cell}/final.parquet"
    blocks = quoted_blocks(PAGE.read_text())
    assert path in blocks, f"{PAGE} quotes no answers of {path}"
    final = pd.read_parquet(ROOT / path)
    rows = final[final["status"] == "TERMINATED"].to_dict("records")
    ours = answer_lines(rows, 0.95) + answer_lines(rows, 0.95, "int8_test_top1", int8=True)
    quoted = blocks[path]
    assert [line for line in quoted if line.strip()] == [line for line in ours if "To decide it" not in line]
    assert check_quote(final, quoted) == []


@pytest.mark.parametrize("cell", CELLS)
def test_the_page_quotes_what_quote_py_prints(cell):
    """studies/equal-compute/quote.py prints a cell's block as the page quotes it (and exits 2 without a cell)."""
    import subprocess
    import sys

    script = str(STUDY / "quote.py")
    out = subprocess.run([sys.executable, script, f"studies/equal-compute/{cell}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    path = f"studies/equal-compute/{cell}/final.parquet"
    assert quoted_blocks(out) == {path: quoted_blocks(PAGE.read_text())[path]}
    bad = subprocess.run([sys.executable, script, "studies/equal-compute/no-such-cell"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no-such-cell/final.parquet" in bad.stderr


def test_readme_figures_come_from_the_quoted_answers():
    triples = readme_triples()
    quoted = "\n".join(line for lines in quoted_blocks(PAGE.read_text()).values() for line in lines)
    for mean, low, high in triples:
        assert f"{mean} pts [{low}, {high}]" in quoted, (mean, low, high)


def test_the_checker_catches_a_wrong_figure():
    """On a synthetic final stage: the product's own lines pass, a figure changed by 0.01 pts does not."""
    from netaug.stats import answer_lines

    rng = np.random.default_rng(0)
    arms = {"winner": ("netaug", 10, 50.0), "reparam": ("reparam", 20, 49.0), "baseline_e10": ("baseline", 10, 10.0),
            "baseline_e20": ("baseline", 20, 20.0), "baseline_equal": ("baseline", 50, 50.0)}
    rows = [{"arm": arm, "mode": mode, "seed": s, "epochs": ep, "compute": c, "unit": "seconds", "description": arm,
             "status": "TERMINATED", "cost_width": c / ep, "cost_min_w": c / ep,
             "test_top1": 0.8 + 0.01 * i + rng.normal(0, 0.004), "int8_test_top1": 0.79 + rng.normal(0, 0.004)}
            for i, (arm, (mode, ep, c)) in enumerate(arms.items()) for s in range(5)]
    final = pd.DataFrame(rows)
    lines = answer_lines(rows, 0.95) + answer_lines(rows, 0.95, "int8_test_top1", int8=True)
    assert sum(bool(LINE.match(line)) for line in lines) == 8  # 2 at equal epochs, 2 at equal compute; x2 int8
    assert check_quote(final, lines) == []
    target = next(i for i, line in enumerate(lines) if LINE.match(line))
    m = LINE.match(lines[target])
    wrong = f"{float(m['mean']) + 0.01:+.2f}"
    doctored = [*lines[:target], lines[target].replace(f"{m['mean']} pts", f"{wrong} pts", 1), *lines[target + 1:]]
    assert any("mean" in e for e in check_quote(final, doctored))
    swapped = [line.replace("vs baseline_e20", "vs baseline_e10") for line in lines]
    assert any("different epochs" in e for e in check_quote(final, swapped))


@pytest.mark.parametrize("cell", [c for c in CELLS if (STUDY / c / "sweep" / "optuna.journal").is_file()])
def test_the_quoted_importances_at_the_first_rung_are_the_committed_studys(cell):
    """The page's importances at ASHA's first rung, recomputed by hand: each trial's val top-1 at the first epoch
    with `sweep.grace_period` plain epochs of compute spent (epochs.parquet), its parameters from the committed
    study, only the NetAug trials (they share the most parameters), and Optuna's fANOVA evaluator."""
    import json

    import optuna

    from netaug.study import load_study

    space = json.loads((STUDY / cell / "space.json").read_text())
    epochs = pd.read_parquet(STUDY / cell / "epochs.parquet")
    epochs = epochs[epochs["stage"] == "sweep"].dropna(subset=["compute", "val_top1"])
    rung = float(space["sweep"]["grace_period"])
    at_rung = {tid: rows[rows["compute"] >= rung].sort_values("epoch")["val_top1"].iloc[0]
               for tid, rows in epochs.groupby("trial_id") if (rows["compute"] >= rung).any()}
    trials = [t for t in load_study(STUDY / cell / "sweep" / "optuna.journal").trials
              if t.params["mode"] in ("netaug", "netaug_kd", "netaug_rkd") and t.user_attrs["tune_trial_id"] in at_rung]
    # what every NetAug trial reads: all it was given but a teacher's lambda_kd and reparam's k
    names = sorted(set.intersection(*(set(t.params) - {"lambda_kd", "reparam_k"} for t in trials)))
    by_hand = optuna.create_study(direction="maximize")
    for t in trials:
        by_hand.add_trial(optuna.trial.create_trial(
            value=float(at_rung[t.user_attrs["tune_trial_id"]]), params={k: t.params[k] for k in names},
            distributions={k: t.distributions[k] for k in names}))
    found = optuna.importance.get_param_importances(
        by_hand, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=names)
    quoted = ", ".join(f"`{k}` {v:.3f}" for k, v in found.items())
    assert quoted in " ".join(PAGE.read_text().split()), quoted


ZEROED = re.compile(r"<!-- int8 with dead inputs zeroed: (?P<path>\S+) -->\n```text\n(?P<body>.*?)\n```", re.S)
BENCH = ("int8_val", "int8_test", "zeroed_fp32_val", "zeroed_fp32_test", "zeroed_int8_val", "zeroed_int8_test")


def dead_channel_table(path) -> pd.DataFrame:
    """bench/int8_dead_channels.py's Markdown table as one row per saved model (arm, seed and its scores)."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("model", "---"):
            continue
        arm, seed = cells[0].rsplit("_s", 1)
        scores = dict(zip(("fp32_val", "fp32_test", *BENCH), map(float, cells[5:13]), strict=True))
        rows.append({"arm": arm, "seed": int(seed), "dead_inputs": int(cells[2]), **scores})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("cell", [c for c in CELLS if (STUDY / c / "int8_dead_channels.md").is_file()])
def test_the_int8_answers_with_dead_inputs_zeroed_are_the_benchs(cell):
    """The committed output of bench/int8_dead_channels.py scores every saved model as the final stage quantized it
    (its int8 test top-1 is final.parquet's) and with the weights on dead inputs zeroed (fp32 unmoved). The page's
    int8 answers with zeroing are the product's answer lines on final.parquet with those int8 figures."""
    from netaug.stats import answer_lines

    path = f"studies/equal-compute/{cell}/int8_dead_channels.md"
    table = dead_channel_table(ROOT / path).set_index(["arm", "seed"])
    final = pd.read_parquet(STUDY / cell / "final.parquet")
    ok = final[final["status"] == "TERMINATED"].set_index(["arm", "seed"])
    assert sorted(table.index) == sorted(ok.index)
    test_size = 10_000  # 4 decimals are exact on the test split
    assert (table["int8_test"] * test_size).round().tolist() == (ok.loc[table.index, "int8_test_top1"] * test_size
                                                                ).round().tolist()
    for split in ("val", "test"):  # zeroing weights that multiply 0 moves no fp32 score
        assert (table[f"zeroed_fp32_{split}"] == table[f"fp32_{split}"]).all()
    alive = table[table["dead_inputs"] == 0]  # nothing to zero: the same int8 model
    assert (alive["zeroed_int8_test"] == alive["int8_test"]).all()
    zeroed = ok.copy()
    zeroed["int8_test_top1"] = table.loc[ok.index, "zeroed_int8_test"]
    rows = zeroed.reset_index().to_dict("records")
    blocks = {m["path"]: m["body"].splitlines() for m in ZEROED.finditer(PAGE.read_text())}
    assert path in blocks, f"{PAGE} quotes no int8 answers of {path}"
    ours = [line for line in answer_lines(rows, 0.95, "int8_test_top1", int8=True) if "To decide it" not in line]
    assert [line for line in blocks[path] if line.strip()] == ours
    assert check_quote(zeroed.reset_index(), blocks[path]) == []
