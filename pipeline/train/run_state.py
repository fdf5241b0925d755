"""What a run folder says about its run: begun without a checkpoint (its name is free again), or finished (it
resumes only when asked for more training)."""

from __future__ import annotations

import logging
import math
from typing import Any

from pipeline.train.batches import batches_per_epoch
from pipeline.train.config import TrainConfig
from pipeline.train.run_folder import RunFolder

RUN_ID_FILE = "mlflow_run_id.txt"  # the MLflow run id that --resume reads


RUN_FOLDER_FILES = {RUN_ID_FILE, ".validate_storage_marker"}  # what a run writes before its first checkpoint


def started_without_checkpoint(folder: RunFolder) -> bool:
    """A run folder holding only what a run writes before its first checkpoint (a run that failed early): nothing
    to resume, nothing of the user's to lose."""
    return folder.exists() and set(folder.names()) <= RUN_FOLDER_FILES


def planned_steps(cfg: TrainConfig, meta) -> int:
    """The steps a run of ``cfg`` trains on the dataset of ``meta``: ``epochs`` × full global batches, or fewer
    (``max_steps``); as the workers count them."""
    per_epoch = batches_per_epoch(meta.counts["train"], cfg.global_batch_size)
    return int(min(cfg.max_steps or math.inf, cfg.epochs * per_epoch))


def last_report(folder: RunFolder) -> dict[str, Any] | None:
    """The metrics of the run's latest checkpoint (``step``, ``train_minutes``…) from Ray Train's saved state; None
    when it has none."""
    from ray.train import Result

    quiet = logging.getLogger("ray")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # Ray's "found a previous run in this folder" hint is for new runs
    try:
        return dict(Result.from_path(folder.uri).metrics or {}) or None
    except RuntimeError:  # no saved state, no checkpoint
        return None
    finally:
        quiet.setLevel(level)


def check_resumable(cfg: TrainConfig, folder: RunFolder, meta, uri: str, run_id: str) -> None:
    """A run that finished resumes only when ``cfg`` asks for more training than it did (more steps, or more
    minutes under a time budget): otherwise --resume would only log and register the same model again."""
    from pipeline.tracking import runs

    if runs.run_status(uri, run_id) != "FINISHED":
        return
    done = last_report(folder)
    if done is None:
        return
    step, minutes, planned = int(done.get("step", 0)), float(done.get("train_minutes", 0.0)), planned_steps(cfg, meta)
    if step < planned and (cfg.max_minutes is None or minutes < cfg.max_minutes):
        return
    budget = f", {minutes:.1f} of {cfg.max_minutes:g} training minutes" if cfg.max_minutes is not None else ""
    raise ValueError(f"run {cfg.name!r} finished (step {step} of {planned}{budget}): --resume has nothing to do; "
                     "ask for more training with it (--set epochs=…, max_steps=… or max_minutes=…), or train a new "
                     "run under another name")


__all__ = ["RUN_ID_FILE", "RUN_FOLDER_FILES", "started_without_checkpoint", "planned_steps", "last_report",
           "check_resumable"]
