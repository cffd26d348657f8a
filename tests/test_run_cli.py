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
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest
import yaml
from conftest import SPACE, TINY_PIPELINE, winner_row

from netaug.config import load_space
from netaug.records import TRIALS_SCHEMA
from netaug.study import STUDY_FILE, load_study

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
    ({"sweep": {"workers": 0}}, "sweep.workers"),
    ({"final": {"workers": 2}}, "--no-dashboard"),  # data-parallel trials need the dashboard's State API
    ({"data": {"loader": "stream"}}, "data.loader"),  # digits are not streamed
    ({"data": {"name": "shards", "root": "/"}}, "data.loader"),
    ({"deploy": {"calib_images": 100000}}, "deploy.calib_images: 100000 exceeds the"),
    ({"deploy": {"calib_images": 0}}, "deploy.calib_images"),
    ({"sweep": {"budget": 0}}, "sweep.budget"),
    ({"sweep": {"budget": -3}}, "sweep.budget"),
    ({"final": {"budget": 0}}, "final.budget"),
    ({"final": {"budget": 10}, "compute": {"unit": "epochs"}}, "final.budget"),
    ({"compute": {"unit": "hours"}}, "compute.unit"),
    ({"compute": {"calibration_steps": 0}}, "compute.calibration_steps"),
    ({"netaug": {"aug_every": 0}}, "netaug.aug_every"),
    ({"netaug": {"aug_fraction": 0}}, "netaug.aug_fraction"),
    ({"netaug": {"aug_fraction": 1.5}}, "netaug.aug_fraction"),
    ({"sweep": {"aug_fraction": {"low": 0.0, "high": 0.5}}}, "sweep.aug_fraction"),
    ({"sweep": {"aug_every": {"low": 0, "high": 4}}}, "sweep.aug_every"),
    ({"final": {"arms": ["winner", "baseline_fast"]}}, "final.arms"),
    ({"sweep": {"macs_limit": {"low": 0.5, "high": 4.0}}}, "sweep.macs_limit.low"),
] + ([] if importlib.util.find_spec("litert_torch") else [({"deploy": {"tflite": True}}, "deploy.tflite: needs")])


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


def test_a_resume_with_another_space_exits_2_naming_the_keys_and_keeps_space_json(tmp_path):
    """What a run trained is fixed once it ran: --resume with another value is refused before Ray starts, and the
    run's space.json stays as it was."""
    out = tmp_path / "run"
    out.mkdir()
    ran = json.dumps(load_space(SPACE, TINY).to_dict(), indent=2) + "\n"
    (out / "space.json").write_text(ran)
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(SPACE), "--out", str(out),
                           "--resume", "--no-dashboard", *[a for s in TINY + ["sweep.trials=7", "training.lr=0.5"]
                                                           for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: --resume: {out / 'space.json'} ran with training.lr ")
    assert "(now 0.5)" in lines[0] and "sweep.trials 3 (now 7)" in lines[0]
    assert "ray" not in proc.stdout.lower() and (out / "space.json").read_text() == ran


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_space_file_exits_2_saying_so(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(path), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "is empty" in lines[0] and str(path) in lines[0], proc.stderr
    assert not (tmp_path / "run").exists() and proc.stdout == ""


# int8 has its own tests (test_quantize, test_final); these test stages, interruptions and resumes
TINY = TINY_PIPELINE + ["sweep.concurrency=1", "sweep.trials=3", "sweep.epochs=2", "final.seeds=1", "deploy.int8=false"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "spaces" / "mbv2.yaml"),
            "--out", str(out), *[a for s in TINY for a in ("--set", s)], *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _api(url: str, token: str | None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


# two sweep trials (the kill lands in the first) and one final arm keep this whole-pipeline test short
DASHBOARD_RUN = ("--set", "sweep.trials=2", "--set", "final.arms=[winner]")


def test_dashboard_lists_this_run_with_its_token_and_a_killed_sweep_resumes_with_each_trial_once(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, *DASHBOARD_RUN)
    lines: list[str] = []
    url = None
    try:
        for line in proc.stdout:  # the dashboard URL comes first; ask it while the run goes on
            lines.append(line)
            if match := re.search(r"dashboard (http://\S+)", line):
                url = match.group(1)
                assert "ray get-auth-token" in line  # how to get past the dashboard's token prompt
            if line.startswith("[supernet") and url is not None:  # the run's trial actor is alive now
                token = subprocess.run(["ray", "get-auth-token"], capture_output=True, text=True,
                                       timeout=60).stdout.strip()
                assert _api(f"{url}/api/jobs/", None)[0] == 401  # the token is needed
                status, jobs = _api(f"{url}/api/jobs/", token)
                assert status == 200
                (ours,) = [j for j in jobs if j["type"] == "DRIVER" and int(j["driver_info"]["pid"]) == proc.pid]
                assert "search/run.py" in ours["entrypoint"] and ours["status"] == "RUNNING"
                status, actors = _api(f"{url}/api/v0/actors", token)
                assert status == 200
                mine = [a for a in actors["data"]["result"]["result"] if a["job_id"] == ours["job_id"]]
                # the supernet's Tune trial (its one epoch may have ended: a dead actor's class is listed by its
                # qualified name, wrap_function.<locals>.ImplicitFunc)
                assert any(a["class_name"].rsplit(".", 1)[-1] == "ImplicitFunc" for a in mine), actors
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
    journal = out / "sweep" / STUDY_FILE
    live = load_study(journal)  # the live study, asked and told through the file
    assert live is not None and 1 <= len(live.trials) <= 2
    live.ask()  # a trial asked after Tune's last checkpoint: the resumed Tune never knows it

    proc = _start(out, "--resume", "--no-dashboard", *DASHBOARD_RUN)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 2 and trials["trial_id"].is_unique, trials
    assert (trials["status"] == "TERMINATED").all() and trials["test_top1"].notna().all()
    epochs = pd.read_parquet(out / "epochs.parquet")
    sweep = epochs[epochs.stage == "sweep"]
    assert len(sweep) == 4 and not sweep.duplicated(["trial_id", "epoch"]).any()
    assert "search: kept" in text and "best trial" in text
    study = load_study(journal)  # exactly one Optuna trial per Tune trial, with Tune's values
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(trials["trial_id"])
    values = dict(zip(trials["trial_id"], trials["val_top1"]))
    assert all(t.value == pytest.approx(values[t.user_attrs["tune_trial_id"]], abs=1e-12) for t in study.trials)
    assert all(set(t.intermediate_values) == {1, 2} for t in study.trials)
    assert "most important hyperparameter for val_top1: not estimated (needs at least 4 finished trials" in text
    assert f"study: optuna-dashboard {journal}" in text
    assert json.loads((out / "search.json").read_text())["evaluated"] == 2
    final = pd.read_parquet(out / "final.parquet")  # the final stage ran after the resumed sweep
    assert final["arm"].tolist() == ["winner"] and (final["status"] == "TERMINATED").all()


def _run_until(out: Path, marker: str, sig: int, *extra: str, sigint_ignored: bool = False) -> tuple[int, str, str]:
    """Run the CLI and send `sig` to its whole process group (as a terminal does) once a stdout line
    contains `marker`; returns (exit code, stdout, stderr). `sigint_ignored`: start it the way
    `nohup ... &` from a script does, with SIGINT ignored."""
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "spaces" / "mbv2.yaml"), "--out",
         str(out), "--no-dashboard", *[a for s in TINY for a in ("--set", s)], *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=ignore_sigint if sigint_ignored else None)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                os.killpg(proc.pid, sig)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert any(marker in line for line in seen), "".join(seen)
    return proc.returncode, "".join(seen) + rest, err


# The sweep and final cases skip supernet and search (sweep.largest: fixed): they run before the stage
# that is interrupted and would only make the test longer.
SKIP_SEARCH = ("--set", "sweep.largest=fixed")
FINAL_ONLY = (*SKIP_SEARCH, "--stage", "final")  # the final stage on a trials.parquet the test writes
BASELINE_ONLY = ("--stage", "final", "--set", "final.arms=[baseline]")  # a final stage that needs no sweep
# (stage, the line that shows it is running, what must not exist after the interruption, extra args)
INTERRUPTS = [
    ("supernet", "[supernet", ["search.json", "sweep", "final"], ()),
    ("search", "supernet checkpoint ->", ["search.json", "sweep", "final"], ()),
    ("sweep", "[sweep", ["trials.parquet", "final"], SKIP_SEARCH),
    ("final", "[final", ["final.parquet", "final/model.pt"], BASELINE_ONLY),
]


@pytest.mark.parametrize("stage,marker,absent,extra", INTERRUPTS, ids=[i[0] for i in INTERRUPTS])
def test_ctrl_c_in_any_stage_stops_the_run_with_one_line_and_exit_130(tmp_path, stage, marker, absent, extra):
    """SIGINT to the process group, what Ctrl+C in a terminal does. The final stage's run is started the way
    `nohup python search/run.py ... &` from a script starts it, with SIGINT ignored: kill -INT must still leave
    a resumable run."""
    out = tmp_path / "run"
    code, stdout, err = _run_until(out, marker, signal.SIGINT, *extra, sigint_ignored=stage == "final")
    lines = err.strip().splitlines()
    assert code == 130, (stdout, err)
    assert len(lines) == 1 and lines[0].startswith("interrupted; resume with: python search/run.py --space "), err
    assert f"--out {out}" in lines[0] and lines[0].endswith("--resume") and "--set final.seeds=1" in lines[0]
    assert "Traceback" not in stdout + err
    for name in absent:
        assert not (out / name).exists(), f"{name} exists after Ctrl+C in the {stage} stage"
    later = {"supernet": "search ", "search": "[sweep", "sweep": "[final", "final": "delivered"}[stage]
    after = stdout.split(marker, 1)[1]
    assert not any(line.startswith(later) for line in after.splitlines())


def test_a_killed_final_stage_resumes_with_every_arm_and_seed_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()  # `--stage final` on a sweep's one trial (no sweep run: this test is about the final stage)
    winner = winner_row(mode="netaug_rkd", lambda_kd=0.5)  # (a netaug winner at r, s, alpha is netaug_fixed's twin)
    pa.parquet.write_table(pa.Table.from_pylist([winner], schema=TRIALS_SCHEMA), out / "trials.parquet")
    # three final trials (final.seeds=1), two at once: killed with two running and one waiting
    _run_until(out, "epoch 1/2 arm", signal.SIGKILL, *FINAL_ONLY)
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)
    assert not (out / "final.parquet").exists()
    proc = _start(out, "--resume", "--no-dashboard", *FINAL_ONLY)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    # the trial that never started has no result files yet: expected on a resume, so Tune's warning is not shown
    assert "Failed to fetch metrics" not in text and "FileNotFoundError" not in text, text
    final = pd.read_parquet(out / "final.parquet")
    assert sorted(zip(final["arm"], final["seed"])) == sorted(
        (a, 0) for a in ("winner", "baseline", "netaug_fixed"))
    assert (final["status"] == "TERMINATED").all() and final["trial_id"].is_unique
    epochs = pd.read_parquet(out / "epochs.parquet")
    rows = epochs[epochs.stage == "final"]
    assert len(rows) == 6 and not rows.duplicated(["trial_id", "epoch"]).any()
    preds = pd.read_parquet(out / "predictions.parquet")
    assert not preds.duplicated(["trial_id", "model", "split", "sample_index"]).any()
    assert sorted(m for m in preds["model"].unique() if m.startswith("final:")) == sorted(
        f"final:{a}:s0" for a in ("winner", "baseline", "netaug_fixed"))
    assert (out / "final" / "model.onnx").is_file() and "delivered:" in text


def test_a_stage_asking_more_than_the_cluster_has_exits_2_once_ray_is_up(tmp_path):
    """Ray would wait forever for it: one line naming the key and what would fit, exit 2, no trial started."""
    out = tmp_path / "run"
    space = str(ROOT / "spaces" / "mbv2.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", space, "--out", str(out),
                           "--no-dashboard", "--set", "supernet.resources.cpu=1024"],
                          capture_output=True, text=True, timeout=180)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert re.fullmatch(r"error: supernet\.resources: supernet\.resources\.cpu=1024 = 1024 CPUs, but the cluster has "
                        r"(\d+); it fits with supernet\.resources\.cpu=\1", lines[0]), lines[0]
    assert not (out / "supernet").exists() and "Traceback" not in proc.stderr


def test_the_early_calibration_check_and_the_final_stage_load_the_data_once(tmp_path, monkeypatch):
    import netaug.data
    import search.evaluation
    from netaug.train.int8 import calibration_set
    from search.evaluation import cached_data

    monkeypatch.setattr(search.evaluation, "_DATA_CACHE", {})  # nothing cached by an earlier test
    loads = []
    real = netaug.data.load_data
    monkeypatch.setattr(netaug.data, "load_data", lambda cfg: loads.append(cfg) or real(cfg))
    args = run_module.parse_args(["--space", str(ROOT / "spaces" / "mbv2.yaml"), "--out", str(tmp_path / "run"),
                                  "--set", "deploy.int8=true"])
    cfg, _, stages = run_module.prepare(args)
    assert "final" in stages and len(loads) == 1  # the size was checked before Ray starts
    data = cached_data(cfg)  # what run_final checks again, in the same driver process
    calibration = calibration_set(data, cfg.deploy.calib_images, cfg.data.split_seed)
    assert len(loads) == 1 and len(calibration) == cfg.deploy.calib_images
