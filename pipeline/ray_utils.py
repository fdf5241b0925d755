"""Starting or joining Ray: an embedded local Ray by default, the cluster of ``RAY_ADDRESS`` inside a job."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None, *, dashboard: bool | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (a submitted job) or start an embedded local Ray; idempotent."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if os.environ.get("RAY_ADDRESS"):
        log.info("joining the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        ray.init(log_to_driver=True)  # num_cpus may not be given when joining
        return
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=True, configure_logging=False)
    log.info("started a local Ray with %s CPUs", ray.cluster_resources().get("CPU"))
