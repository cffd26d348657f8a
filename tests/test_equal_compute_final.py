"""The final stage at equal compute on a user's own models (model.module, model.spec), as a user runs it:
`search/run.py --stage final` on a sweep's trials.parquet, with a real local Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest
from conftest import ROOT, SPACE, winner_row

from netaug.records import TRIALS_SCHEMA
from netaug.train.calibrate import spent
from netaug.train.cost import PhaseCost

FINAL = ["data.resolution=8", "training.batch_size=128", "training.bn_calib_batches=2", "sweep.largest=fixed",
         "final.arms=[winner,baseline,baseline_equal]", "final.epochs=2", "final.seeds=1", "final.resources.cpu=1",
         "final.train_eval_size=100", "deploy.int8=false", "compute.calibration_steps=3"]
MODELS = {"module": "model.module=spaces/models/resnet8.py:resnet8",
          "spec": "model.spec=spaces/models/tiny-se.yaml"}


@pytest.mark.parametrize("model", list(MODELS))
def test_the_equal_compute_final_stage_runs_on_a_users_model(tmp_path, model):
    out = tmp_path / "run"
    out.mkdir()
    pa.parquet.write_table(pa.Table.from_pylist([winner_row()], schema=TRIALS_SCHEMA), out / "trials.parquet")
    args = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(SPACE), "--out", str(out),
            "--stage", "final", "--no-dashboard", *[a for s in [*FINAL, MODELS[model]] for a in ("--set", s)]]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = pd.read_parquet(out / "final.parquet").set_index("arm")
    calibration = json.loads((out / "final" / "calibration.json").read_text())
    cost = calibration["costs"]["winner"]["cost"]
    assert cost["width"] > 1  # NetAug's step costs more than a plain one, on this model too
    assert final.loc["winner", "cost_width"] == cost["width"] and final.loc["winner", "epochs"] == 2
    # baseline_equal: plain training for the winner's compute, to within one plain epoch
    from netaug.config import load_space

    cfg = load_space(SPACE, [*FINAL, MODELS[model], "training.mode=netaug", "training.epochs=2", "netaug.r=2",
                             "netaug.s=1"])
    budget = spent(cfg, PhaseCost(cost["width"], cost["min_w"]), 2)
    assert final.loc["winner", "compute"] == pytest.approx(budget)
    assert final.loc["baseline_equal", "epochs"] == max(1, round(budget)) > final.loc["baseline", "epochs"]
    assert abs(final.loc["baseline_equal", "compute"] - final.loc["winner", "compute"]) <= 1
    assert final["train_s"].gt(0).all() and final["train_flops"].gt(0).all()
    text = proc.stdout
    assert "1 winner epoch = " in text and "baseline_equal trains" in text
    assert "At equal epochs (2 each)" in text and "At equal compute" in text and "why:" in text
    assert f"report: {out / 'report' / 'report.md'}" in text and (out / "report" / "report.md").is_file()


def test_a_final_stage_of_plain_arms_needs_no_sweep_and_writes_its_report(tmp_path):
    """`--stage final` with only plain arms (no trials.parquet): the report has no sweep, and the run ends well."""
    out = tmp_path / "run"
    sets = ["data.resolution=8", "final.arms=[baseline]", "final.epochs=1", "final.seeds=1", "deploy.int8=false",
            "final.resources.cpu=1"]
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(SPACE), "--out", str(out),
                           "--stage", "final", "--no-dashboard", *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report" / "report.md").read_text()
    final = pd.read_parquet(out / "final.parquet")
    assert final["arm"].tolist() == ["baseline"] and "0 trials" in report and "## Did NetAug help here?" in report


def test_with_a_budget_baseline_matched_gives_each_method_its_plain_partner_at_equal_epochs(tmp_path):
    """final.budget sets the winner's and reparam's epochs; baseline_matched adds plain training of each count
    that baseline does not train, and the answer at equal epochs pairs each method with the plain arm of its
    length."""
    out = tmp_path / "run"
    out.mkdir()
    pa.parquet.write_table(pa.Table.from_pylist([winner_row()], schema=TRIALS_SCHEMA), out / "trials.parquet")
    sets = [*FINAL, "final.arms=[winner,baseline,reparam,baseline_equal,baseline_matched]", "final.budget=5",
            "final.epochs=5", "final.eval_every=2"]
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(SPACE), "--out", str(out),
                           "--stage", "final", "--no-dashboard", *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = pd.read_parquet(out / "final.parquet").set_index("arm")
    epochs = final["epochs"].to_dict()
    assert epochs["baseline"] == 5 and epochs["baseline_equal"] == 5
    assert epochs["winner"] < 5  # a NetAug step costs more than a plain one: 5 plain epochs buy fewer
    methods = {a: int(epochs[a]) for a in ("winner", "reparam")}
    matched = {a: int(n) for a, n in epochs.items() if a.startswith("baseline_e") and a != "baseline_equal"}
    assert matched == {f"baseline_e{n}": n for n in set(methods.values()) if n != 5}
    assert (final.loc[list(matched), "mode"] == "baseline").all()
    partner = {a: f"baseline_e{n}" if n != 5 else "baseline" for a, n in methods.items()}
    text = proc.stdout
    for arm, ref in partner.items():
        assert any(line.strip().startswith(f"{arm} (") and f"vs {ref}:" in line for line in text.splitlines()), text
    assert "At equal epochs (" in text and "did NetAug or reparam help" in text and "At equal compute" in text, text
    # final.eval_every=2: val and the train subset scored after epochs 2, 4, ... and the last one only
    rows = pd.read_parquet(out / "epochs.parquet").query("stage == 'final'")
    for (arm, seed), part in rows.groupby(["arm", "seed"]):
        last = int(epochs[arm])
        assert sorted(part["epoch"]) == list(range(1, last + 1))
        scored = part.dropna(subset=["val_top1"])
        assert sorted(scored["epoch"]) == sorted({e for e in range(2, last + 1, 2)} | {last}), (arm, seed)
        assert scored["train_top1"].notna().all() and part["train_loss"].notna().all()
        assert scored.set_index("epoch").loc[last, "val_top1"] == final.loc[arm, "val_top1"]
