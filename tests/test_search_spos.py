"""SPOS on Ray Tune, with a real local Ray: supernet trial killed and resumed, parallel search, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from netaug.config import load_space
from netaug.data import load_data
from netaug.spos.supernet import paths_from_json, supernet_scorer
from search.archs import SCHEMA
from search.checkpoints import load_trainer_state
from search.search_stage import run_search
from search.supernet_stage import ARCH_LOG, latest_checkpoint, run_supernet

ROOT = Path(__file__).resolve().parents[1]
FAST = ["data.resolution=8", "training.batch_size=128", "training.bn_calib_batches=2", "sweep.r.high=2",
        "supernet.e_max=2", "supernet.s=2", "supernet.resources.cpu=1", "search.workers=2",
        "search.resources.cpu=0.5", "search.r=2", "search.s=2", "search.num_paths=4"]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _kill_after_first_checkpoint(run_dir: Path, killed: list[int]) -> None:
    """SIGKILL the supernet trial's worker process once its first checkpoint has landed."""
    deadline = time.time() + 300
    while time.time() < deadline:
        for result in (run_dir / "supernet").glob("*/result.json"):
            lines = result.read_text().splitlines()
            if lines and list(result.parent.glob("checkpoint_*")):
                pid = json.loads(lines[0])["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def test_supernet_trial_killed_mid_training_resumes_from_its_checkpoint(ray_local, tmp_path):
    cfg = load_space(None, FAST + ["supernet.epochs=3", "supernet.max_failures=2", "supernet.eval_every=2"])
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_after_first_checkpoint, args=(tmp_path, killed), daemon=True)
    watcher.start()
    checkpoint = run_supernet(cfg, tmp_path)
    watcher.join(timeout=5)
    assert killed, "the trial was never killed"
    trial_dir = next((tmp_path / "supernet").glob("train_supernet_*"))
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    restarted = [r for r in reports if r["pid"] != killed[0]]
    assert restarted and reports[0]["pid"] == killed[0]
    assert all(r["start_epoch"] >= 1 for r in restarted)  # resumed from a checkpoint, not from scratch
    assert [r["epoch"] for r in restarted] == list(range(restarted[0]["start_epoch"] + 1, 4))
    # supernet.eval_every=2: val of the base and the largest path after epoch 2 and the last, none after epoch 1
    for r in reports:
        scored = r["epoch"] in (2, 3)
        assert (r.get("val_top1") is not None, r.get("val_max_top1") is not None) == (scored, scored), r
        assert r["train_loss"] > 0
    state = load_trainer_state(checkpoint)
    assert state["epoch"] == 3
    # every step's sampled path is logged once, also across the kill
    steps = [json.loads(line)["step"] for line in (tmp_path / "supernet" / ARCH_LOG).read_text().splitlines()]
    assert steps == list(range(state["global_step"]))

    # stage 2: parallel search on Ray actors reading that checkpoint from the storage path
    outcome = run_search(cfg, tmp_path)
    archs = pd.read_parquet(tmp_path / "archs.parquet")
    assert list(archs.columns) == SCHEMA.names and len(archs) == 4
    assert archs["chosen"].sum() == 1 and (archs["method"] == "uniform").all()
    chosen = archs[archs["chosen"]].iloc[0]
    assert chosen["val_top1"] == archs["val_top1"].max()
    assert json.loads(chosen["arch"]) == json.loads(json.dumps(outcome.chosen.path))
    assert archs[["r", "s"]].drop_duplicates().values.tolist() == [[2.0, 2]]
    # the workers' inherited-weight scores equal an in-process evaluation of the same checkpoint
    scorer = supernet_scorer(cfg, load_data(cfg.data), load_trainer_state(latest_checkpoint(tmp_path)[0]))
    paths = paths_from_json([json.loads(a) for a in archs["arch"]])
    local = scorer(paths)
    assert scorer.recalibrations == len(paths)
    assert [round(t, 6) for t, _ in local] == [round(t, 6) for t in archs["val_top1"]]
    assert archs["val_loss"].tolist() == pytest.approx([loss for _, loss in local], rel=1e-5)

    # the same seed gives the same a*; a second search call appends rows under its own search_id
    again = run_search(cfg, tmp_path)
    assert again.chosen.path == outcome.chosen.path
    archs = pd.read_parquet(tmp_path / "archs.parquet")
    assert archs["search_id"].nunique() == 2 and len(archs) == 8


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args,key", [
    (["--stage", "search"], "--out"),
    (["--set", "search.method=random"], "search.method"),
    (["--set", "search.r=4"], "search.r"),
    (["--set", "search.parents=20", "--set", "search.population=4"], "search.parents"),
    (["--set", "supernet.resources.cpu=0"], "supernet.resources.cpu"),
    (["--set", "netaug.r=5", "--stage", "search"], "search.r"),
    (["--resume"], "--resume"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, key):
    if args == ["--stage", "search"]:
        args = args + ["--out", str(tmp_path / "empty")]
        (tmp_path / "empty").mkdir()
    proc = _cli("--space", str(ROOT / "spaces" / "mbv2.yaml"), "--no-dashboard", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and key in lines[-1] and "Traceback" not in proc.stderr
