"""search/run.py as users run it: malformed spaces exit 2 before Ray starts; the dashboard answers;
a sweep killed with SIGKILL and rerun with --resume has every trial exactly once."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_PIPELINE

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("search_run", ROOT / "search" / "run.py")
run_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_module)

BAD_SPACES = [
    ({"sweep": {"trials": 0}}, "sweep.trials"),
    ({"sweep": {"trials": "many"}}, "sweep.trials"),
    ({"sweep": {"concurrency": 0}}, "sweep.concurrency"),
    ({"sweep": {"sampler": "cmaes"}}, "sweep.sampler"),
    ({"sweep": {"scheduler": "pbt"}}, "sweep.scheduler"),
    ({"sweep": {"epochs": 0}}, "sweep.epochs"),
    ({"sweep": {"metric": "accuracy"}}, "sweep.metric"),
    ({"sweep": {"largest": "biggest"}}, "sweep.largest"),
    ({"sweep": {"r": {"low": 3.0, "high": 2.0}}}, "sweep.r.low"),
    ({"sweep": {"r": {"low": 0.5, "high": 2.0}}}, "sweep.r.low"),
    ({"sweep": {"r": {"high": 20.0}}}, "sweep.r.high"),
    ({"sweep": {"r": {"low": "wide"}}}, "sweep.r.low"),
    ({"sweep": {"r": [1, 2]}}, "sweep.r"),
    ({"sweep": {"s": {"low": 0, "high": 2}}}, "sweep.s"),
    ({"sweep": {"s": {"low": 3, "high": 1}}}, "sweep.s.low"),
    ({"sweep": {"s": {"choices": [1, 0]}}}, "sweep.s"),
    ({"sweep": {"s": {"choices": []}}}, "sweep.s.choices"),
    ({"sweep": {"s": {"choices": [1.5]}}}, "sweep.s.choices"),
    ({"sweep": {"aug_loss_weight": {"low": 0, "high": 1, "log": True}}}, "sweep.aug_loss_weight.low"),
    ({"sweep": {"lambda_kd": {"low": 2, "high": 1}}}, "sweep.lambda_kd.low"),
    ({"sweep": {"lambda_kd": {"min": 1}}}, "sweep.lambda_kd.min"),
    ({"sweep": {"share_fraction": {"low": 0.5, "high": 1.5}}}, "sweep.share_fraction"),
    ({"sweep": {"mode": ["netaug", "bogus"]}}, "sweep.mode"),
    ({"sweep": {"mode": "netaug"}}, "sweep.mode"),
    ({"sweep": {"resources": {"cpu": -1}}}, "sweep.resources.cpu"),
    ({"sweep": {"resources": {"gpus": 1}}}, "sweep.resources.gpus"),
    ({"sweep": {"unknown_key": 1}}, "sweep.unknown_key"),
    ({"supernet": {"r_max": 2.0}}, "sweep.r.high"),
    ({"supernet": {"epochs": 0}}, "supernet.epochs"),
    ({"supernet": {"e_max": 0.5}}, "supernet.e_max"),
    ({"search": {"method": "random"}}, "search.method"),
    ({"search": {"num_paths": 0}}, "search.num_paths"),
    ({"search": {"macs_limit": 0.5}}, "search.macs_limit"),
    ({"search": {"population": 4, "parents": 8}}, "search.parents"),
    ({"data": {"name": "idx", "root": "/no/such/dataset"}}, "data.root"),
    ({"netaug": {"s": 0}}, "netaug.s"),
    ({"training": {"lr": "fast"}}, "training.lr"),
    ({"searchh": {}}, "searchh"),
]


@pytest.mark.parametrize("space,key", BAD_SPACES, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD_SPACES)])
def test_malformed_space_exits_2_naming_the_key_before_anything_runs(tmp_path, capsys, space, key):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        run_module.main(["--space", str(path), "--out", str(out), "--no-dashboard"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_cli_process_exits_2_without_traceback(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("sweep:\n  r: {low: 3, high: 1}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(path), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: sweep.r.low")
    assert "Traceback" not in proc.stderr and "ray" not in proc.stdout.lower()


TINY = TINY_PIPELINE + ["sweep.concurrency=1", "sweep.trials=3", "sweep.epochs=2"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "spaces" / "mbv2.yaml"),
            "--out", str(out), *[a for s in TINY for a in ("--set", s)], *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_dashboard_answers_and_a_killed_sweep_resumes_with_each_trial_once(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    lines: list[str] = []
    url = None
    try:
        for line in proc.stdout:  # the dashboard URL comes first; ask it while the run goes on
            lines.append(line)
            if match := re.search(r"dashboard (http://\S+)", line):
                url = match.group(1)
                with urllib.request.urlopen(url, timeout=30) as response:
                    assert response.status == 200
            if line.startswith("[sweep") and "epoch 1/2" in line:
                break  # the first sweep trial has reported and checkpointed
        assert url is not None, "".join(lines)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, no clean-up
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)
    assert not (out / "trials.parquet").exists()

    proc = _start(out, "--resume", "--no-dashboard")
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 3 and trials["trial_id"].is_unique, trials
    assert (trials["status"] == "TERMINATED").all() and trials["test_top1"].notna().all()
    epochs = pd.read_parquet(out / "epochs.parquet")
    assert len(epochs) == 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert "search: kept" in text and "best trial" in text
    assert json.loads((out / "search.json").read_text())["evaluated"] == 2
