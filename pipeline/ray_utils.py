"""Starting or joining Ray: an embedded local Ray by default, the cluster of ``RAY_ADDRESS`` inside a job."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None, *, dashboard: bool | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (a submitted job) or start an embedded local Ray; idempotent.

    ``dashboard=True`` (what Tune needs: Train's placement-group cleaner asks the dashboard whether a trial's run is
    alive, and frees the workers of a trial stopped early) starts a local Ray's dashboard on a free port and tells
    the workers where it is, which they cannot guess while other Ray instances run on the machine.

    Sets this driver's output up first (pipeline.progress): progress bars in a terminal, else a few plain lines
    (no Ray Data bars or INFO lines); ``$HRM_PROGRESS=bar|lines`` decides instead, and a local Ray's processes
    inherit the decision."""
    import ray

    from pipeline.progress import setup_driver_output

    setup_driver_output()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")  # the dashboard lists Train runs only with it
    if os.environ.get("RAY_ADDRESS"):
        log.info("joining the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        # num_cpus may not be given when joining. The cluster's processes (Tune trials build their own trainers)
        # do not see this driver's environment: pass our settings on, except those the job itself sets. Ray's
        # "connecting / connected" INFO lines only in bar mode (a terminal).
        quiet = os.environ.get("HRM_PROGRESS") == "lines"
        ray.init(log_to_driver=True, runtime_env=job_env_vars(),
                 logging_level=logging.WARNING if quiet else logging.INFO)
        return
    # Ray starts its workers at nice 15, below its own daemons: on a small machine the training worker then loses
    # its cores to them at every tick, and torch's threads wait for the slowest (bench/NOTES.md). The embedded Ray
    # runs the user's own job: its workers get the priority of the command that started it.
    os.environ.setdefault("RAY_worker_niceness", "0")
    extra = {}
    if dashboard:
        port = free_port()
        extra = {"dashboard_port": port,
                 "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}
    # address "local": never join a cluster that `ray start` left in /tmp/ray without RAY_ADDRESS naming it
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=True,
             configure_logging=False, **extra)
    log.info("started a local Ray with %s CPUs%s", ray.cluster_resources().get("CPU"),
             f" (dashboard on port {extra['dashboard_port']})" if extra else "")


# Settings of this driver that the processes of a joined cluster must share.
SHARED_ENV = ("RAY_TRAIN_ENABLE_STATE_TRACKING", "RAY_TRAIN_ENABLE_PRINT_PATCH", "HRM_PROGRESS",
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL")


def job_env_vars() -> dict | None:
    """A runtime env with :data:`SHARED_ENV` as set here, less the variables the submitted job's own runtime env
    sets (Ray refuses a driver runtime env that repeats one of them); ``None`` when nothing is left."""
    import json

    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    taken = set(((job.get("runtime_env") or {}).get("env_vars") or {}))
    env = {k: os.environ[k] for k in SHARED_ENV if k in os.environ and k not in taken}
    return {"env_vars": env} if env else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
