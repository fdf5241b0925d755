"""Starting or joining Ray: an embedded local Ray by default, the cluster of ``RAY_ADDRESS`` inside a job."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

log = logging.getLogger(__name__)

# Ray's own output that is no alarm on a healthy run, kept off the console (Ray's log files keep it all). Each entry
# says why; anything else, errors above all, shows as Ray prints it.
BENIGN_WARNINGS = (
    # Ray Train 2.60 sets Ray Data's ExecutionOptions.exclude_resources itself, and Ray Data 2.60 deprecates that
    # field: Ray's call to Ray, nothing a user can change. Dropped at the source: a warnings filter in $PYTHONWARNINGS,
    # which every Ray process inherits, drops this one message and no other.
    "`ExecutionOptions.exclude_resources` is deprecated",
)
BENIGN_LINES = (
    # Ray Train 2.60 makes its PreemptionWatcher actor with arguments in the object store and restarts enabled, and
    # Ray's core worker logs that at ERROR level ("E ... core_worker.cc") though nothing failed (ray-project/ray
    # issue 53727). A C++ log line of Ray's controller process: no Python filter reaches it there, so the driver's
    # printer of the processes' output drops this line and no other.
    re.compile(r"core_worker\.cc:\d+: Actor with class name: 'PreemptionWatcher' .*max_restarts > 0"),
    # As a run's actors end, Ray's GCS may try to kill one whose worker process has already exited: the kill RPC
    # finds the socket closed and GCS logs that at ERROR level, though the actor is gone as asked. Seen once in a
    # tiny demo's log (2026-12-06); only this message, with the socket closed, is dropped.
    re.compile(r"gcs_actor_scheduler\.cc:\d+: Failed to kill actor [0-9a-f]+, return status: Invalid: KillActor RPC "
               r"failed for actor [0-9a-f]+: RpcError: RPC error: Socket closed"),
)


# Ray's settings of ours, for this driver and every Ray process it starts or reaches (a joined cluster's through
# SHARED_ENV); a value already in the environment wins. Each says why.
RAY_SETTINGS = {
    # Ray Data 2.60's Parquet reader starts 32 actors to read the files' footers at every read_parquet, whatever
    # the file count; ours read a worker's few parts (each actor reads 128 footers at once). On the two-host test
    # (2 cores) the 32 cost ~40 s of CPU a run and each worker's share took 18-41 s to read; with 1: 2-9 s.
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1",
}


def init_ray(num_cpus: int | None = None, *, dashboard: bool | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (a submitted job) or start an embedded local Ray; idempotent.

    ``dashboard=True`` (what Tune needs: Train's placement-group cleaner asks the dashboard whether a trial's run is
    alive, and frees the workers of a trial stopped early) starts a local Ray's dashboard on a free port and tells
    the workers where it is, which they cannot guess while other Ray instances run on the machine.

    Sets this driver's output up first (pipeline.core.progress): progress bars in a terminal, else a few plain lines
    (no Ray Data bars or INFO lines); ``$HRM_PROGRESS=bar|lines`` decides instead, and a local Ray's processes
    inherit the decision."""
    import ray

    from pipeline.core.progress import setup_driver_output

    setup_driver_output()
    if ray.is_initialized():
        return
    ignore_benign_warnings()
    for name, value in RAY_SETTINGS.items():
        os.environ.setdefault(name, value)
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
        drop_benign_lines()
        return
    # Ray starts its workers at nice 15, below its own daemons: on a small machine the training worker then loses
    # its cores to them at every tick, and torch's threads wait for the slowest (bench/NOTES.md). The embedded Ray
    # runs the user's own job: its workers get the priority of the command that started it.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Ray Train 2.60 starts a PreemptionWatcher actor for every run, which asks Ray every 5 s whether a node is being
    # drained (a cloud taking a spot instance back). An embedded Ray is this one machine: nothing drains it, and the
    # actor is one more process (~1.2 CPU-seconds to start here) per training run and per trial of a sweep.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    extra = {}
    if dashboard:
        port = free_port()
        extra = {"dashboard_port": port,
                 "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}
    # address "local": never join a cluster that `ray start` left in /tmp/ray without RAY_ADDRESS naming it
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=True,
             configure_logging=False, **extra)
    private_token()
    drop_benign_lines()
    log.info("started a local Ray with %s CPUs%s", ray.cluster_resources().get("CPU"),
             f" (dashboard on port {extra['dashboard_port']})" if extra else "")


# Settings of this driver that the processes of a joined cluster must share.
SHARED_ENV = ("RAY_TRAIN_ENABLE_STATE_TRACKING", "RAY_TRAIN_ENABLE_PRINT_PATCH", "HRM_PROGRESS",
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL", "PYTHONWARNINGS", *RAY_SETTINGS)


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


def ignore_benign_warnings() -> None:
    """Add :data:`BENIGN_WARNINGS` to ``$PYTHONWARNINGS`` (kept: the user's own filters), so that the processes of
    the Ray started or joined from here ignore them. Each filter drops warnings whose message starts so."""
    present = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    ours = [f"ignore:{message}" for message in BENIGN_WARNINGS]
    os.environ["PYTHONWARNINGS"] = ",".join(present + [f for f in ours if f not in present])


def benign(line: str) -> bool:
    return any(pattern.search(line) for pattern in BENIGN_LINES)


def drop_benign_lines() -> None:
    """Have this driver's printer of the Ray processes' output skip :data:`BENIGN_LINES`. It wraps Ray's own
    printer (a handler of ``ray._private.worker``'s stream dispatcher, Ray 2.60); where Ray names it otherwise
    nothing changes and those lines show."""
    try:
        from ray._private.ray_logging import (
            global_worker_stdstream_dispatcher as dispatcher,
        )

        dispatcher._lock, dispatcher.handlers  # noqa: B018 (the parts used below, Ray 2.60)
    except (ImportError, AttributeError):
        log.debug("Ray's printer of its processes' output is not where Ray 2.60 has it: nothing dropped")
        return
    with dispatcher._lock:
        for index, (name, handler) in enumerate(dispatcher.handlers):
            if name == "ray_print_logs" and not getattr(handler, "drops_benign", False):
                dispatcher.handlers[index] = (name, _without_benign(handler))


def _without_benign(printer):
    def print_kept(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not benign(line)]
        if lines:
            printer({**data, "lines": lines})

    print_kept.drops_benign = True
    return print_kept


def private_token(path: Path | None = None) -> None:
    """Make the token of Ray's token authentication (``~/.ray/auth_token``, which a local Ray 2.60 writes with the
    umask's mode, often readable by every user) readable by its owner only, its folder too. Nothing when absent."""
    path = path or Path.home() / ".ray" / "auth_token"
    try:
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
            path.parent.chmod(path.parent.stat().st_mode & ~0o077)
            log.info("made %s readable by its owner only", path)
    except OSError as err:  # someone else's file: say so, the job goes on
        log.warning("could not make %s private: %s", path, err)
