"""On a two-node simulated Ray cluster, every trial's files land in the run's storage path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster

from netaug.config import load_space
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
