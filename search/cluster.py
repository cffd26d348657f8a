"""Ray set-up shared by every stage: start or join a cluster, per-trial resources."""

from __future__ import annotations

import os
from pathlib import Path

from netaug.config import ResourcesConfig


def start_ray(address: str | None, dashboard: bool, quiet: bool = False) -> str | None:
    """Start a local Ray (or join `address`: "auto" or "ray://host:port"); return the dashboard URL.

    Worker logs stay in Ray's session logs (and the dashboard); trial errors still reach the driver.
    """
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our one-line reporter instead of Tune's tables
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # per-epoch checkpoints
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if ray.is_initialized():  # e.g. a notebook or a test that started Ray itself
        return None
    kwargs: dict = {"address": address, "log_to_driver": False, "configure_logging": True,
                    "logging_level": "warning"}
    if address is None:  # a local instance: the dashboard is ours to switch on or off
        # Local workers inherit this environment: let them import netaug/search from a plain checkout too.
        root = str(Path(__file__).resolve().parents[1])
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p != root]])
        kwargs.update(include_dashboard=dashboard, dashboard_host="127.0.0.1")
    info = ray.init(**kwargs)
    url = getattr(info, "dashboard_url", None) if dashboard else None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    if not quiet:
        where = address or "local"
        print(f"ray: {where}, {ray.cluster_resources().get('CPU', 0):g} CPUs, "
              f"{ray.cluster_resources().get('GPU', 0):g} GPUs"
              + (f" | dashboard {url}" if url else " | dashboard off"), flush=True)
    return url


def resources_for(rc: ResourcesConfig) -> dict[str, float]:
    """Ray resources of one trial or worker; `gpu: null` takes one GPU when the cluster has any."""
    import ray

    gpu = rc.gpu
    if gpu is None:
        gpu = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    return {"cpu": rc.cpu, "gpu": gpu}
