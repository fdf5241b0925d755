"""The run's record in MLflow as the workers keep it (rank 0): its logger, and what a worker group that starts
again notes — the nodes it runs on, each restart or resize as an event, the steps it trains again and does not log
again."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from hrm.model import HRM

log = logging.getLogger(__name__)
REPLAYED_TAG = "hrm.replayed_from_step_"  # + the checkpoint's step: a restart that replayed logged steps
WORKERS_TAG = "hrm.workers"  # the nodes of the run's current worker group, rank by rank
RESTART_TAG = "hrm.restart."  # + k: the k-th time the run's worker group started again (lost node, resize, resume)


def open_tracking(config: dict[str, Any], model: HRM, dtype_reason: str, unreachable_minutes: float) -> Any:
    """Rank 0's MLflow logger of the run (buffered: training goes on while the tracking server is unreachable, for
    at most ``unreachable_minutes``; pipeline.tracking.buffer), after logging the resolved forward dtype (and why)
    and how the workers read their shares, and starting the ``system/*`` metrics of this machine."""
    from pipeline.tracking.buffer import BufferedRunLogger
    from pipeline.tracking.runs import start_system_metrics

    logger = BufferedRunLogger(config["tracking_uri"], config["run_id"], unreachable_minutes)
    logger.log_params({"resolved.forward_dtype": model.config.forward_dtype})
    # how the workers read their shares: "worker" (a small split, pyarrow in each worker) or "ray_data"
    logger.set_tags({"resolved.forward_dtype.reason": dtype_reason,
                     "resolved.ingest": config.get("ingest", "ray_data")})
    start_system_metrics(config["tracking_uri"], config["run_id"])
    return logger


def logged_through(uri: str, run_id: str, restored_step: int) -> int:
    """The last step whose train metrics the run already holds in MLflow, when it is past ``restored_step`` (the
    checkpoint a resumed or restarted run starts from): the steps up to it are trained again, identically, but not
    logged again (a driver killed after step 288 with its last checkpoint at 200 logged 201-288 twice). 0 when there
    are none, or when the store cannot be asked (a warning: those steps may then be logged twice)."""
    from mlflow.tracking import MlflowClient

    try:
        steps = [m.step for m in MlflowClient(uri).get_metric_history(run_id, "train/lm_loss")]
    except Exception as err:  # noqa: BLE001 (the tracking server may be down: training goes on)
        log.warning("could not read the run's logged steps (%s): steps after %d may be logged twice", err,
                    restored_step)
        return 0
    last = max(steps, default=0)
    if last <= restored_step:
        return 0
    log.info("steps %d-%d were logged before the restart: trained again from the checkpoint, not logged again",
             restored_step + 1, last)
    return last


def worker_nodes(world: int) -> list[str]:
    """Every worker's Ray node, rank by rank, as ``<ip> (<node id, 8 digits>)``: one collective call."""
    import ray

    mine = f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"
    if world == 1:
        return [mine]
    nodes: list[Any] = [None] * world
    torch.distributed.all_gather_object(nodes, mine)
    return nodes


def group_tags(uri: str, run_id: str, nodes: list[str], restored_step: int, replayed_through: int) -> dict[str, str]:
    """The run's tags for a worker group that starts: ``hrm.workers`` (its nodes, rank by rank) and, when the run
    had one before (a lost node, a resize, ``--resume``), one event ``hrm.restart.<k>``: when, the group's size
    before and now, the nodes lost and joined, the checkpoint it starts from and the steps trained again. The
    tracking store unreachable: only ``hrm.workers`` (a warning says the event is not noted)."""
    from mlflow.tracking import MlflowClient

    tags = {WORKERS_TAG: ", ".join(nodes)}
    try:
        before = MlflowClient(uri).get_run(run_id).data.tags
    except Exception as err:  # noqa: BLE001 (the tracking server may be down: training goes on)
        log.warning("could not read the run's tags (%s): this worker group's start is not noted", err)
        return tags
    if WORKERS_TAG not in before:
        return tags
    old = before[WORKERS_TAG].split(", ")
    lost, joined = [n for n in old if n not in nodes], [n for n in nodes if n not in old]
    k = 1 + sum(key.startswith(RESTART_TAG) for key in before)
    replayed = (f"; steps {restored_step + 1}-{replayed_through} trained again, logged once" if replayed_through
                else "")
    tags[f"{RESTART_TAG}{k}"] = (
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: {len(old)} -> {len(nodes)} workers; lost "
        f"{', '.join(lost) or 'no node'}; joined {', '.join(joined) or 'no node'}; from "
        + (f"the checkpoint of step {restored_step}" if restored_step else "step 0 (no checkpoint yet)") + replayed)
    log.info("worker group %d: %s", k, tags[f"{RESTART_TAG}{k}"])
    return tags


def replayed_tag(restored_step: int, last: int) -> dict[str, str]:
    """The run's note of a restart that replays logged steps: ``hrm.replayed_from_step_<checkpoint step>``."""
    start = f"the checkpoint of step {restored_step}" if restored_step else "step 0 (no checkpoint yet)"
    return {f"{REPLAYED_TAG}{restored_step}": f"steps {restored_step + 1}-{last} trained again after a restart from "
                                              f"{start}, logged once"}
