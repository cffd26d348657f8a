"""On a two-node simulated Ray cluster: every trial's files land in the run's storage path; a request the
cluster can never grant stops the run with the keys to change; waiting trials are reported."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster
from ray.tune import PlacementGroupFactory, register_trainable
from ray.tune.experiment import Trial

from netaug.config import load_space
from netaug.errors import UserError
from search import progress
from search.cluster import check_fit
from search.results import write_results
from search.sweep_stage import finalize_stopped, run_sweep


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_on_two_nodes_write_into_the_storage_path(two_nodes, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    cfg = load_space(None, ["data.resolution=8", "training.batch_size=128", "training.bn_calib_batches=2",
                            "sweep.largest=fixed", "sweep.trials=2", "sweep.concurrency=2", "sweep.epochs=1",
                            "sweep.resources.cpu=1", "sweep.sampler=random", "sweep.scheduler=none"])
    storage = tmp_path / "run"
    grid = run_sweep(cfg, storage)
    paths, _ = write_results(grid, storage, 1, "netaug_rkd", finalize_stopped(grid, cfg))
    nodes = {result.metrics["node_id"] for result in grid}
    assert len(nodes) == 2, "each one-CPU node runs one of the two trials"
    trials = pd.read_parquet(paths["trials.parquet"])
    assert (trials["status"] == "TERMINATED").all()
    preds = pd.read_parquet(paths["predictions.parquet"])
    for tid in trials["trial_id"]:
        assert (storage / "sweep" / "predictions" / f"{tid}.parquet").exists()
        assert list((storage / "sweep" / "tb" / tid).glob("events.out.tfevents.*"))
        assert tid in set(preds["trial_id"])
    for result in grid:  # checkpoints and result logs are in the storage path, not a node's temp dir
        assert str(result.path).startswith(str(storage)) and result.checkpoint.path.startswith(str(storage))
        assert (Path(result.checkpoint.path) / "trainer.pt").is_file()


def test_a_request_the_cluster_can_never_grant_names_the_keys_and_what_fits(two_nodes):
    """The issue's case: 2 workers x 1 CPU plus the trial's driver share on a 2-CPU cluster."""
    total = ray.cluster_resources()
    assert total["CPU"] == 2
    cfg = load_space(None, ["sweep.workers=2", "sweep.resources.cpu=1"])
    with pytest.raises(UserError) as exc:
        check_fit(cfg, ("sweep",))
    assert str(exc.value) == ("sweep.resources: sweep.workers=2 x sweep.resources.cpu=1 + 0.01 for the trial's "
                              "driver = 2.01 CPUs, but the cluster has 2; it fits with sweep.resources.cpu=0.99 or "
                              "sweep.workers=1")
    for fix in (["sweep.resources.cpu=0.99"], ["sweep.workers=1"]):
        check_fit(load_space(None, ["sweep.workers=2", "sweep.resources.cpu=1", *fix]), ("sweep",))
    with pytest.raises(UserError, match=r"^search.resources: search.workers=3 x search.resources.cpu=1 = 3 CPUs"):
        check_fit(load_space(None, ["search.workers=3"]), ("supernet", "search"))
    with pytest.raises(UserError, match=r"^final.resources: 1 x final.resources.gpu = 1 GPUs, but the cluster has 0"):
        check_fit(load_space(None, ["final.resources.gpu=1"]), ("final",))
    check_fit(load_space(None, ["supernet.resources.cpu=2"]), ("supernet", "search", "sweep", "final"))


def test_pending_trials_with_none_running_get_a_line_saying_what_they_wait_for(two_nodes, monkeypatch, capsys):
    monkeypatch.setattr(progress, "WAIT_NOTICE_S", 0.0)
    reporter = progress.LineReporter("sweep", ("val_top1",), 3)
    register_trainable("waits", lambda config: None)
    waiting = Trial("waits", placement_group_factory=PlacementGroupFactory([{"CPU": 3.0}]))
    waiting.create_placement_group_factory()  # as Tune's controller does when it adds the trial
    assert waiting.status == Trial.PENDING
    deadline = time.monotonic() + 60  # the earlier tests' trial actors hand their CPUs back asynchronously
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.5)
    reporter.on_step_end(0, [waiting])  # starts the clock
    before = ray.available_resources().get("CPU", 0)
    reporter.on_step_end(1, [waiting])
    after = ray.available_resources().get("CPU", 0)
    line = capsys.readouterr().out.strip()
    assert before == after, "the cluster's free CPUs changed while the line was written"
    assert re.fullmatch(r"\[sweep +\d+\.\ds\] waiting for resources: 1 trial\(s\) pending, none running for \d+s; "
                        rf"one needs 3 CPU, the cluster has {before:g} CPU free", line), line
    running = Trial("waits")
    running.set_status(Trial.RUNNING)
    reporter.on_step_end(2, [waiting, running])  # a trial runs: nothing to say
    assert capsys.readouterr().out == ""
