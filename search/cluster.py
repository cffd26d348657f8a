"""Ray set-up shared by every stage: start or join a cluster, per-trial resources."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from netaug.config import ResourcesConfig, SpaceConfig
from netaug.errors import UserError

DRIVER_CPU = 0.01  # a Tune trial that only drives Train workers (Tune refuses an empty request)


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
    # Ray warns at start that token authentication is on; our dashboard line says so and how to get in.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    info = ray.init(**kwargs)
    url = getattr(info, "dashboard_url", None) if dashboard else None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    if not quiet:
        where = address or "local"
        dash = f" | dashboard {url}{token_hint()}" if url else " | dashboard off"
        print(f"ray: {where}, {ray.cluster_resources().get('CPU', 0):g} CPUs, "
              f"{ray.cluster_resources().get('GPU', 0):g} GPUs{dash}", flush=True)
    return url


def token_auth_enabled() -> bool:
    """Whether this Ray cluster asks for its authentication token (RAY_AUTH_MODE=token, Ray's default
    when a token exists in ~/.ray/auth_token)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return bool(is_token_auth_enabled())
    except ImportError:  # a Ray without token authentication
        return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def token_hint() -> str:
    """How to get into the dashboard when it asks for a token."""
    if not token_auth_enabled():
        return ""
    return " (it asks for a token: paste the output of `ray get-auth-token`)"


def resources_for(rc: ResourcesConfig, total: dict[str, float] | None = None) -> dict[str, float]:
    """Ray resources of one trial or worker; `gpu: null` takes one GPU when the cluster (Ray's
    cluster_resources(), or `total`) has any."""
    gpu = rc.gpu
    if gpu is None:
        if total is None:
            import ray

            total = ray.cluster_resources()
        gpu = 1.0 if total.get("GPU", 0) >= 1 else 0.0
    return {"cpu": rc.cpu, "gpu": gpu}


def stage_request(cfg: SpaceConfig, stage: str, total: dict[str, float] | None = None
                  ) -> tuple[dict[str, float], str, int, ResourcesConfig]:
    """What one trial of `stage` (or the search's actors together) needs at once, concurrency aside:
    ({"cpu", "gpu"}, how it adds up, workers, resources)."""
    section = getattr(cfg, stage)
    workers, rc = section.workers, section.resources
    one = resources_for(rc, total)
    if stage == "search":
        what = f"search.workers={workers} x search.resources.cpu={rc.cpu:g}"
        return {"cpu": workers * one["cpu"], "gpu": workers * one["gpu"]}, what, workers, rc
    if workers <= 1:
        return one, f"{stage}.resources.cpu={rc.cpu:g}", workers, rc
    what = f"{stage}.workers={workers} x {stage}.resources.cpu={rc.cpu:g} + {DRIVER_CPU:g} for the trial's driver"
    return {"cpu": workers * one["cpu"] + DRIVER_CPU, "gpu": workers * one["gpu"]}, what, workers, rc


def check_fit(cfg: SpaceConfig, stages: tuple[str, ...], total: dict[str, float] | None = None) -> None:
    """Exit-2 error (UserError) naming the keys when a stage asks for more than the whole cluster has: Ray
    would wait for it forever. `total`: Ray's cluster_resources() (read when not given)."""
    import math

    if total is None:
        import ray

        total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    for stage in stages:
        if not hasattr(getattr(cfg, stage, None), "resources"):
            continue
        need, what, workers, rc = stage_request(cfg, stage, total)
        extra = DRIVER_CPU if workers > 1 and stage != "search" else 0.0
        if need["cpu"] > cpus + 1e-9:
            fixes = []
            if workers > 1:
                per = math.floor((cpus - extra) / workers * 100) / 100
                if per > 0:
                    fixes.append(f"{stage}.resources.cpu={per:g}")
                most = int((cpus - extra) // rc.cpu)
                if most >= 1:
                    fixes.append(f"{stage}.workers={most}")
            elif cpus > 0:
                fixes.append(f"{stage}.resources.cpu={cpus:g}")
            raise UserError(f"{stage}.resources: {what} = {need['cpu']:g} CPUs, but the cluster has {cpus:g}; "
                            + ("it fits with " + " or ".join(fixes) if fixes else "add CPUs to the cluster"))
        if need["gpu"] > gpus + 1e-9:
            most = int(gpus // (need["gpu"] / max(1, workers))) if need["gpu"] else 0
            fix = (f"{stage}.workers={most}" if workers > 1 and most >= 1 else f"{stage}.resources.gpu=0")
            raise UserError(f"{stage}.resources: {workers} x {stage}.resources.gpu = {need['gpu']:g} GPUs, but the "
                            f"cluster has {gpus:g}; it fits with {fix}")
