"""What a run folder says about its run: begun without a checkpoint (its name is free again), or finished (it
resumes only when asked for more training)."""

from __future__ import annotations

import logging
import math
from typing import Any

from pipeline.train.batches import batches_per_epoch
from pipeline.train.config import TrainConfig
from pipeline.train.run_folder import RunFolder

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id.txt"  # the MLflow run id that --resume reads


RUN_FOLDER_FILES = {RUN_ID_FILE, ".validate_storage_marker"}  # what a run writes before its first checkpoint


def started_without_checkpoint(folder: RunFolder) -> bool:
    """A run folder holding only what a run writes before its first checkpoint (a run that failed early): nothing
    to resume, nothing of the user's to lose."""
    return folder.exists() and set(folder.names()) <= RUN_FOLDER_FILES


def close_orphan(folder: RunFolder, uri: str | None) -> None:
    """The MLflow run of a run folder begun without a checkpoint, still RUNNING (its driver died, by ``kill -9`` or
    a lost node, before anything could end it): ended KILLED with a tag saying why, before the name starts afresh.
    A store that cannot be asked is no reason to stop: a warning says so."""
    run_id = (folder.read(RUN_ID_FILE) or "").strip()
    if uri is None or not run_id:
        return
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import runs

    try:
        if runs.run_status(uri, run_id) != "RUNNING":
            return
        MlflowClient(uri).set_tag(run_id, "hrm.ended_by", "the next run of its name: its driver died before its "
                                  "first checkpoint")
        runs.end_run(uri, run_id, "KILLED")
        log.warning("MLflow run %s of %s was left RUNNING by a driver that died: ended KILLED", run_id, folder.uri)
    except Exception as err:  # noqa: BLE001 (a deleted run, a store that changed: the new run goes on)
        log.warning("could not end MLflow run %s left by a driver that died: %s", run_id, err)


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


def check_same_dataset(cfg: TrainConfig, meta, uri: str, run_id: str) -> None:
    """A resumed run trains on the dataset it began on: the fingerprint of the dataset its MLflow run recorded as its
    training input must be the one ``cfg.data`` holds now (a dataset rebuilt with other settings under the same path
    is refused, rather than trained on while MLflow names the old one). A run that recorded none passes."""
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = MlflowClient(uri).get_run(run_id).inputs
    recorded = [d.dataset.digest for d in (inputs.dataset_inputs if inputs else [])
                if any(t.key == MLFLOW_DATASET_CONTEXT and t.value == "training" for t in d.tags)]
    now = str(meta.fingerprint)[:36]
    if recorded and now not in recorded:
        raise ValueError(f"run {cfg.name!r} began on the dataset of fingerprint {recorded[-1]}; {meta.path} now holds "
                         f"fingerprint {now} (rebuilt with other settings): --resume would train it on other data. "
                         "Rebuild the run's dataset, or train a new run under another name")


def check_resumable(cfg: TrainConfig, folder: RunFolder, meta, uri: str, run_id: str) -> None:
    """A run that finished resumes only when ``cfg`` asks for more training than it did (more steps, or more
    minutes under a time budget): otherwise --resume would only log and register the same model again."""
    from pipeline.tracking import runs

    check_same_dataset(cfg, meta, uri, run_id)
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


__all__ = ["RUN_ID_FILE", "RUN_FOLDER_FILES", "started_without_checkpoint", "close_orphan", "planned_steps",
           "last_report", "check_same_dataset", "check_resumable"]
