"""The study runner (python -m search.evidence): every cell's row, paired deltas that match scipy, resume,
the a* arm, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--space", "spaces/netaug-official.yaml", "--set", "data.name=digits", "--set", "data.resolution=8",
        "--set", "training.batch_size=128", "--set", "training.bn_calib_batches=1", "--set", "netaug.r=1.8",
        "--set", "netaug.s=1", "--set", "netaug.expand_r=1.6", "--set", "netaug.expand_s=1",
        "--set", "final.train_eval_size=100", "--bases", "mobilenetv2@0.1", "--epochs", "1", "--jobs", "2"]


def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.evidence", "--out", str(out), *TINY, *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)


def load_evidence(monkeypatch):
    """The study's report and cells (what the plot tests read)."""
    from types import SimpleNamespace

    from search.evidence import cells, report

    return SimpleNamespace(seed_band=report.seed_band, plot=report.plot, ARM_COLOR=cells.ARM_COLOR, ARMS=cells.ARMS)


ARMS = ["baseline", "netaug", "netaug_full", "baseline_equal"]
EXTRA = ["--seeds", "2", "--arms", *ARMS, "--equal-epochs", "2", "--curve-epochs", "2", "--supernet-epochs", "1",
         "--paths", "2"]


def test_cells_paired_deltas_resume_and_the_seed_extensions(tmp_path):
    from netaug.metrics import precision_recall_f1_at_k

    out = tmp_path / "study"
    first = run(out, *EXTRA)
    assert first.returncode == 0, first.stderr[-3000:]
    df = pd.read_parquet(out / "evidence.parquet")
    assert sorted(zip(df.arm, df.epochs, df.seed)) == sorted(
        [(a, 1, s) for a in ARMS for s in (0, 1)] + [("baseline", 2, 0)])
    assert df[["train_top1", "val_top1", "test_top1", "base_macs"]].notna().all().all()
    assert df.test_top1.between(0, 1).all() and (df.base_macs == df.base_macs.iloc[0]).all()
    # the full method: NetAug + RKD (sampled teacher) with the searched a* as its largest model + sharing
    astar = json.loads((out / "astar" / "mobilenetv2-w0.1.json").read_text())
    full = df[df.arm == "netaug_full"]
    assert all(json.loads(x) == astar["arch"] for x in full.largest) and (full["mode"] == "netaug_rkd").all()
    assert (full.teacher == "sampled").all() and (full.share_fraction == 0.25).all()
    assert (df[df.arm == "netaug"].aug_macs > df[df.arm == "netaug"].base_macs).all()
    # the equal-compute baseline trains its own schedule and is paired with the 1-epoch cells
    equal = df[df.arm == "baseline_equal"]
    assert (equal.train_epochs == 2).all() and (equal["mode"] == "baseline").all()
    epochs = pd.read_parquet(out / "evidence_epochs.parquet")
    assert sorted(epochs[epochs.arm == "baseline_equal"].epoch) == [1, 1, 2, 2]
    # the printed deltas are paired t-tests of test top-1 over seeds (scipy as the oracle), vs baseline and netaug
    one = df[df.epochs == 1].pivot(index="seed", columns="arm", values="test_top1")
    line = next(x for x in first.stdout.splitlines() if x.startswith("| mobilenetv2@0.1 | 1 | netaug_full |"))
    for ref in ("baseline", "netaug"):
        d = (one.netaug_full - one[ref]).mean() * 100
        p = ttest_rel(one.netaug_full, one[ref]).pvalue
        constant = float(np.ptp(one.netaug_full - one[ref])) < 1e-9  # no spread: no t-test (scipy's p is rounding)
        shown = f"p = {p:.3g}" in line or p != p or (constant and f"{d + 0.0:+.2f} (n=" in line)
        assert f"{d + 0.0:+.2f}" in line and shown
    # test precision/recall/F1@1,3 of each cell, recomputed from its stored test predictions
    for cell in df.to_dict("records"):
        arm = cell["arm"] if cell["arm"] != "baseline_equal" else "baseline_equal-t2"
        stem = f"mobilenetv2-w0.1_e{cell['epochs']}_{arm}_s{cell['seed']}"
        preds = pd.read_parquet(out / "predictions" / f"{stem}.parquet")
        topk = pd.DataFrame(preds.topk.tolist()).to_numpy()
        for k in (1, 3):
            m = precision_recall_f1_at_k(topk, preds.label.to_numpy(), k, 10)
            assert [cell[f"test_{x}@{k}"] for x in ("precision", "recall", "f1")] == pytest.approx(
                [m["precision"], m["recall"], m["f1"]], abs=1e-12)
        assert len(preds) == 359 and (topk[:, 0] == preds.label).mean() == pytest.approx(cell["test_top1"], abs=1e-12)
    assert len(epochs) == 2 * (3 * 1 + 2) + 2 and set(epochs.columns) >= {"epoch", "train_top1", "val_top1", "lr"}
    assert (out / "evidence.png").stat().st_size > 10_000 and not list(out.rglob("*.tmp"))
    assert "precision@1" in (out / "evidence.md").read_text()
    # a rerun finds every cell finished and trains nothing
    again = run(out, *EXTRA)
    assert again.returncode == 0 and "0 to run" in again.stdout and "epoch 1/1" not in again.stdout

    def ordered(frame):
        return frame.sort_values(["arm", "epochs", "seed"]).reset_index(drop=True)[["test_top1"]]

    assert ordered(pd.read_parquet(out / "evidence.parquet")).equals(ordered(df))


@pytest.mark.parametrize("bad, key", [(["--set", "netaug.r=0.5"], "netaug.r"),
                                      (["--set", "data.name=idx", "--set", "data.root=/no/such/dir"], "data.root")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, bad, key):
    res = run(tmp_path / "x", *bad)
    assert res.returncode == 2 and key in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_ctrl_c_leaves_a_cell_that_resumes_from_its_last_epoch(tmp_path):
    import os
    import signal

    out = tmp_path / "study"
    args = [sys.executable, "-m", "search.evidence", "--out", str(out), *TINY, "--set", "training.batch_size=32",
            "--epochs", "6", "--seeds", "1", "--arms", "baseline", "--curve-epochs", "--jobs", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    for line in proc.stdout:
        if "epoch 2/6" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in a terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "rerun the same command" in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["mobilenetv2-w0.1_e6_baseline_s0.pt"]
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = [line for line in again.stdout.splitlines() if "epoch " in line and "/6" in line]
    assert resumed and "epoch 1/6" not in again.stdout and resumed[-1].split("epoch ")[1].startswith("6/6")
    epochs = pd.read_parquet(out / "evidence_epochs.parquet")
    assert sorted(epochs.epoch) == list(range(1, 7))  # every epoch once, the interrupted run's kept
    assert not list((out / "checkpoints").iterdir())


def test_the_plot_band_is_the_mean_min_and_max_over_seeds_of_the_epochs_every_seed_has(monkeypatch):
    evidence = load_evidence(monkeypatch)
    rows = [{"seed": s, "epoch": e, "train_top1": 0.5 + 0.01 * e + 0.003 * s * s}
            for s in (0, 1, 4) for e in range(1, 6) if (s, e) != (4, 5)]  # seed 4 lacks epoch 5
    xs, mean, low, high, seeds = evidence.seed_band(reversed(rows))
    table = pd.DataFrame(rows).pivot(index="epoch", columns="seed", values="train_top1").dropna()
    assert xs == list(table.index) == [1, 2, 3, 4] and seeds == [0, 1, 4]
    assert mean == pytest.approx(list(table.mean(axis=1)), abs=1e-15)
    assert low == list(table.min(axis=1)) and high == list(table.max(axis=1))
    one = evidence.seed_band(r for r in rows if r["seed"] == 1)
    assert one[0] == [1, 2, 3, 4, 5] and one[1] == one[2] == one[3] == [r["train_top1"] for r in rows if r["seed"] == 1]


def test_backfill_reruns_cells_without_predictions_and_keeps_only_exact_reproductions(tmp_path):
    import pyarrow.parquet as pq
    import torch

    out = tmp_path / "study"
    extra = ["--seeds", "1", "--arms", "baseline", "netaug", "--curve-epochs"]
    assert run(out, *extra).returncode == 0
    prf = [f"test_{m}@{k}" for k in (1, 3) for m in ("precision", "recall", "f1")]
    stem = "mobilenetv2-w0.1_e1_{}_s0"
    original = {arm: pd.read_parquet(out / "cells" / f"{stem.format(arm)}.parquet") for arm in ("baseline", "netaug")}
    for arm, row in original.items():  # make them look like the issue-17 cells: no predictions, no P/R/F1
        (out / "predictions" / f"{stem.format(arm)}.parquet").unlink()
        table = pq.read_table(out / "cells" / f"{stem.format(arm)}.parquet").drop_columns(prf)
        if arm == "netaug":  # a stored figure the rerun cannot give again
            table = table.set_column(table.schema.get_field_index("test_top1"), "test_top1",
                                     [[row.test_top1.iloc[0] + 0.01]])
        pq.write_table(table, out / "cells" / f"{stem.format(arm)}.parquet")
    res = run(out, *extra, "--backfill")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "backfill: 2 finished cells without test predictions to rerun" in res.stdout
    reruns = {arm: pd.read_parquet(out / "reruns" / f"{stem.format(arm)}.parquet").iloc[0]
              for arm in ("baseline", "netaug")}
    # same seed, same numbers: the untouched cell is reproduced bit for bit, the tampered one is not
    assert reruns["baseline"].reproduced and reruns["baseline"].max_abs_diff_epoch_val_top1 == 0
    assert not reruns["netaug"].reproduced
    assert reruns["netaug"].max_abs_diff_test_top1 == pytest.approx(0.01, abs=1e-9)
    assert reruns["netaug"].test_top1 == original["netaug"].test_top1.iloc[0]
    assert (out / "predictions" / f"{stem.format('baseline')}.parquet").is_file()
    assert not (out / "predictions" / f"{stem.format('netaug')}.parquet").exists()
    df = pd.read_parquet(out / "evidence.parquet").set_index("arm")
    assert df.loc["baseline", prf].tolist() == original["baseline"][prf].iloc[0].tolist()
    assert df.loc["netaug", prf].isna().all()
    md = (out / "evidence.md").read_text()
    assert "1 of 2 reproduced" in md and "netaug seed 0 differs" in md and "1 of 1 (1 from reruns)" in md
    # the rerun that differs is reported as a sample of its own: its test top-1 and P/R/F1, beside the stored cell's
    line = next(ln for ln in md.splitlines() if ln.startswith("| mobilenetv2@0.1 | 1 | netaug | 0 |"))
    cols = [c.strip() for c in line.strip("|").split("|")]
    assert float(cols[4]) == pytest.approx(original["netaug"].test_top1.iloc[0] + 0.01, abs=5e-5)
    assert [float(c) for c in cols[5:]] == pytest.approx([reruns["netaug"][c] for c in ["test_top1", *prf]], abs=5e-5)
    assert not any(ln.startswith("| mobilenetv2@0.1 | 1 | baseline | 0 |") for ln in md.splitlines())
    assert reruns["netaug"].machine == reruns["netaug"].stored_machine and f"torch {torch.__version__}" in \
        reruns["netaug"].machine
    assert not list(out.rglob("*.tmp")) and not list((out / "checkpoints").glob("*"))
    again = run(out, *extra, "--backfill")  # a rerun is not run twice
    assert again.returncode == 0 and "backfill: 0 finished cells" in again.stdout


def test_each_arm_has_one_colour_in_both_panels_and_no_two_arms_share_one(monkeypatch, tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from netaug.stats import paired_difference

    evidence = load_evidence(monkeypatch)
    arms = ["baseline", "netaug", "netaug_astar", "netaug_full", "baseline_equal"]
    rows = [{"base": "b", "epochs": epochs, "arm": arm, "seed": s, "epoch": e, "train_top1": 0.5 + 0.01 * e + s / 100}
            for arm in arms for epochs in ((2, 4) if arm == "baseline" else (4,)) for s in (0, 1)
            for e in range(1, epochs + 1)]
    deltas = [("b", 4, arm, paired_difference([0.9 + k / 100, 0.91], [0.9, 0.9])) for k, arm in enumerate(arms[1:])]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure plot() would close
    matplotlib.use("Agg")
    evidence.plot(tmp_path, deltas, rows)
    top, bottom = figures[0].axes
    top_colour = {label.split(" (n=")[0]: to_rgba(h.lines[0].get_color())
                  for h, label in zip(*top.get_legend_handles_labels())}
    bottom_colour = {line.get_label(): to_rgba(line.get_color()) for line in bottom.get_lines()}
    longest = {label.split(",")[0]: c for label, c in bottom_colour.items() if "4-epoch" in label}
    assert set(top_colour) == set(arms[1:]) and set(longest) == set(arms)
    assert all(top_colour[a] == longest[a] for a in arms[1:])
    assert len(set(longest.values())) == len(arms)  # distinct arms, distinct colours
    short = bottom_colour["baseline, 2-epoch schedule, mean of 2 seeds, band min-max"]
    assert short not in longest.values()  # baseline's shorter schedule is a grey, not another arm's colour
    assert len(set(evidence.ARM_COLOR.values())) == len(evidence.ARMS)
