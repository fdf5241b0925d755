"""The training job's driver: validate everything, start the MLflow run, fit on Ray Train, register the model."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import locks
from pipeline.core.config_io import flatten, to_dict
from pipeline.core.storage import is_remote
from pipeline.train.batches import require_one_global_batch
from pipeline.train.config import (
    TrainConfig,
    resolve_data,
    resolve_tracking_uri,
    run_model_config,
)
from pipeline.train.plan import cluster_memory as memory_of
from pipeline.train.plan import share_problem, size, training_state_size
from pipeline.train.run_folder import RunFolder
from pipeline.train.run_state import (
    RUN_ID_FILE,
    check_resumable,
    close_orphan,
    started_without_checkpoint,
)

log = logging.getLogger(__name__)
ELASTIC_START_TIMEOUT_S = 30  # an elastic run's wait for a worker group's placement (Ray's default: 60 s)


@dataclass
class Outcome:
    run_id: str
    metrics: dict[str, float]  # eval metrics of the best checkpoint
    checkpoint: Path  # the best checkpoint's folder
    model_uri: str | None  # models:/<name>/<version> when registered
    model_version: str | None
    champion: bool


def memory_warning(state_bytes: int, params: int, cfg: TrainConfig, cluster_memory: float) -> str | None:
    """A warning when one worker's training state alone exceeds its share of the cluster's memory."""
    share = cluster_memory / cfg.scaling.max_workers
    if state_bytes <= share:
        return None
    return (f"the model has {params:,} parameters: ≈ {size(state_bytes)} of weights, gradients and optimizer state "
            f"per worker, more than the {size(share)} of memory a worker can have here "
            f"({size(cluster_memory)} for {cfg.scaling.max_workers} worker(s)); it will run out of memory unless "
            "the cluster grows (lower model.hidden_size or layers)")


def check_resources(cfg: TrainConfig, meta=None, data: str = "the dataset") -> None:
    """Fail before fit() when the workers can never be placed, would leave Ray Data no CPU (it would hang), or
    could not hold their share of ``meta``'s training split in the cluster's memory (pipeline.train.plan). An
    elastic run (``num_workers: [min, max]``) needs room for ``min`` workers now (Ray Train grows it as the cluster
    does), and must not be able to grow over every CPU of it: Train takes what is free, Ray Data would starve."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    s = cfg.scaling
    n = s.min_workers
    need_cpu = n * s.cpus_per_worker
    if s.use_gpu and n * s.gpus_per_worker > gpus:
        raise ValueError(f"{n} workers × {s.gpus_per_worker} GPU need {n * s.gpus_per_worker} GPUs; the cluster "
                         f"has {gpus:g}")
    if need_cpu > cpus:
        raise ValueError(f"{n} workers × {s.cpus_per_worker} CPU need {need_cpu:g} CPUs; the cluster "
                         f"has {cpus:g} (lower scaling.cpus_per_worker)")
    if need_cpu > cpus - 1:  # Ray Data's read tasks take a whole CPU each; with less they wait forever
        raise ValueError(f"{n} workers × {s.cpus_per_worker} CPU leave Ray Data {cpus - need_cpu:g} of "
                         f"{cpus:g} CPUs (it needs 1) and the data stream would starve; use fractional "
                         f"scaling.cpus_per_worker "
                         f"(e.g. {max(0.1, (cpus - 1) / n):.2g})")
    most = min(s.max_workers, int(cpus // s.cpus_per_worker))  # what an elastic run may grow to on this cluster
    if s.elastic and most * s.cpus_per_worker > cpus - 1:
        raise ValueError(f"scaling.num_workers [{s.min_workers}, {s.max_workers}] may grow to {most} workers × "
                         f"{s.cpus_per_worker:g} CPU, every CPU of the cluster's {cpus:g}, and leave Ray Data none "
                         "(the data stream would starve); lower the max or use fractional scaling.cpus_per_worker")
    if meta is not None:
        problem = share_problem(int(meta.counts["train"]), meta.seq_len, n, memory_of(total), data)
        if problem:
            raise ValueError(problem)


def run_folder(cfg: TrainConfig) -> RunFolder:
    """The run's folder (local, or s3:// / gs://): Ray Train's run folder, and the MLflow run id file."""
    return RunFolder(cfg.storage_path, cfg.name)


def prepare(cfg: TrainConfig, resume: bool, uri: str | None = None):
    """Every check that needs no cluster: the dataset (every part read and checked: pipeline.data.verify), the run
    folder (with ``uri``, the tracking store: a finished run resumes only when asked for more), the model config on
    the dataset's sizes. Returns the dataset's folder and metadata, and (parameters, bytes of training state per
    worker)."""
    from pipeline.data.loader import read_metadata
    from pipeline.data.verify import verify_dataset

    data_path = resolve_data(cfg)
    meta = read_metadata(data_path)
    verify_dataset(meta)  # a damaged part is named here, not in a worker hours later
    params, state_bytes = training_state_size(run_model_config(cfg, meta), ema=cfg.ema is not None)
    log.info("model: %s parameters, ≈ %s of weights, gradients and optimizer state per worker", f"{params:,}",
             size(state_bytes))
    require_one_global_batch(meta.counts["train"], cfg.global_batch_size, data_path)
    check_eval_votes(cfg, meta)
    folder = run_folder(cfg)
    if resume:
        run_id = folder.read(RUN_ID_FILE)
        if run_id is None:
            raise FileNotFoundError(f"nothing to resume: no run {cfg.name!r} under {folder.parent}")
        if uri is not None:
            check_resumable(cfg, folder, meta, uri, run_id.strip())
    elif folder.exists():
        if not started_without_checkpoint(folder):
            raise FileExistsError(f"run {cfg.name!r} already exists under {folder.parent}: use --resume to continue "
                                  f"it, or choose another name")
        log.warning("run %r under %s ended before its first checkpoint (nothing to resume): starting it afresh",
                    cfg.name, folder.parent)
        close_orphan(folder, uri)
        folder.remove()
    return data_path, meta, (params, state_bytes)


def check_eval_votes(cfg: TrainConfig, meta) -> None:
    """``eval_votes`` > 1 needs a task with that many symmetries: refused before any cluster work, not at the first
    evaluation."""
    if cfg.eval_votes > 1:
        from hrm.tasks import make_task
        from hrm.vote import problem

        found = problem(make_task(meta.task, meta.task_args), votes=cfg.eval_votes, max_steps=None)
        if found is not None:
            raise ValueError(f"eval_votes: {found[1]}")


def open_run(cfg: TrainConfig, *, resume: bool, uri: str, data_path: str | Path, meta,
             config_file: Path | None = None, tags: dict[str, str] | None = None) -> str:
    """The run's MLflow run id: the one recorded in the run folder when resuming, else a new run (``tags`` added,
    e.g. ``mlflow.parentRunId`` for a sweep trial) whose id is then recorded there."""
    from pipeline.tracking import runs

    folder = run_folder(cfg)
    if resume:
        run_id = (folder.read(RUN_ID_FILE) or "").strip()
        log.info("resuming run %s (MLflow run %s)", cfg.name, run_id)
        return run_id
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "train_config.json"
        resolved.write_text(json.dumps(to_dict(cfg), indent=2))
        artifacts = [resolved] + ([config_file] if config_file else [])
        run_id = runs.start_run(uri, cfg.tracking.experiment, cfg.name, flatten(cfg),
                                    {"task": meta.task, "dataset": str(data_path), **(tags or {})}, artifacts,
                                    dataset=meta)
    try:
        folder.write(RUN_ID_FILE, run_id)
    except BaseException:
        end_quietly(uri, run_id, "FAILED")
        raise
    return run_id


def end_quietly(uri: str, run_id: str, status: str) -> None:
    """End the MLflow run with ``status`` on a way out; a failure to do so is logged (the job's error matters
    more)."""
    from pipeline.tracking import runs

    try:
        runs.end_run(uri, run_id, status=status)
    except Exception as err:  # noqa: BLE001 (the store may be what failed)
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, err)


def make_trainer(cfg: TrainConfig, data_path: str | Path, uri: str, run_id: str, *, callbacks: list | None = None,
                 fault: dict[str, Any] | None = None, meta=None):
    """The job's TorchTrainer; its Train run is named ``cfg.name`` under ``cfg.storage_path`` (the same name
    resumes), ``callbacks`` are Ray Train callbacks (a Tune trial passes TuneReportCallback), ``meta`` the
    dataset's metadata when the caller has read it already (else it is read here)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.core.progress import progress_mode, quiet_ray_data
    from pipeline.data.loader import read_metadata
    from pipeline.train.ingest import ShardedTrainData, reads_in_workers
    from pipeline.train.worker import train_loop_per_worker

    progress = progress_mode()  # the workers' stdout is never a TTY: the driver decides for them
    if cfg.scaling.elastic:
        shorter_start_timeout()
    if progress == "lines":
        quiet_ray_data()  # reading the split here (in a Tune trial's process too) logs no INFO lines
    folder = run_folder(cfg)
    meta = meta or read_metadata(data_path)
    in_workers = reads_in_workers(meta, cfg.ingest_in_worker_mib)
    data = None if in_workers else ShardedTrainData.for_split(meta, shards=cfg.shards)
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": to_dict(cfg), "data_path": str(data_path), "tracking_uri": uri, "run_id": run_id,
                           "fault": fault, "progress": progress, "ingest": "worker" if in_workers else "ray_data"},
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                     elastic_resize_monitor_interval_s=s.resize_check_seconds),
        run_config=RunConfig(
            name=cfg.name, storage_path=folder.parent, callbacks=callbacks or None,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint_keep,
                                               checkpoint_score_attribute=cfg.checkpoint_metric,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures)),
        # named for get_dataset_shard; each worker gets only its share (pipeline.train.ingest); none for a split
        # the workers read themselves
        datasets={"train": data.whole()} if data else None,
        dataset_config=data,
    )


def shorter_start_timeout() -> None:
    """An elastic run starts a worker group only on resources Ray reports ready, so its placement waits only when
    that report was stale — after a node was lost and before Ray declared it dead, Train tries the old size for a
    node that is gone. Ray's 60 s wait for it is then a minute lost: elastic runs wait ``ELASTIC_START_TIMEOUT_S``
    unless ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` is set (Train reads it from the driver's environment)."""
    import os

    if "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S" not in os.environ:
        os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(ELASTIC_START_TIMEOUT_S)


def ephemeral_outputs(cwd: Path, storage_path: str, tracking_uri: str) -> list[str]:
    """What a job submitted with ``--working-dir`` would write into that working directory, a temporary copy that
    Ray deletes: the run folder (checkpoints, the id --resume needs) or the embedded MLflow store."""
    from pipeline.tracking.runs import sqlite_file

    if "working_dir_files" not in cwd.parts:
        return []
    found = []
    if not is_remote(storage_path) and (cwd / storage_path).resolve().is_relative_to(cwd):  # a relative path, or an absolute one in there
        found.append(f"storage_path {storage_path!r} is inside the job's temporary working directory {cwd}: "
                     "checkpoints and --resume are lost when the job ends; set storage_path to a shared mount "
                     "(e.g. --set storage_path=/mnt/shared/runs)")
    db = sqlite_file(tracking_uri)
    if db is not None and db.is_relative_to(cwd):
        found.append(f"the MLflow store {tracking_uri} is inside the job's temporary working directory: the run and "
                     "the registered model are lost when the job ends; set MLFLOW_TRACKING_URI to a tracking server")
    return found


def train(cfg: TrainConfig, *, resume: bool = False, config_file: Path | None = None,
          fault: Any = None, tags: dict[str, str] | None = None) -> Outcome:
    """Run the job; ``tags`` go on a new MLflow run (e.g. ``mlflow.parentRunId``); ``fault`` (tests only) kills,
    fails or pauses workers once: pipeline.train.faults.

    The job holds its run folder's lock (``<storage_path>/<name>.lock``, pipeline.core.locks) from before its first
    look at the folder to the end: a second job of the same name fails at once, naming the first."""
    from pipeline.core.ray_start import init_ray
    from pipeline.tracking import runs
    from pipeline.train.faults import from_env

    fault = fault or from_env()  # tests only: HRM_TEST_FAULTS, for an `hrm train` a test starts as a process
    with locks.hold(run_folder(cfg).uri, f"hrm train {cfg.name}"):
        uri = resolve_tracking_uri(cfg)
        runs.check_reachable(uri)
        data_path, meta, (params, state_bytes) = prepare(cfg, resume, uri)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hrm-mlflow") as pool:
            opening = pool.submit(runs.open_store, uri)  # while Ray starts (its processes: mostly waiting)
            init_ray()
            opening.result()  # a store that cannot be opened fails here, as it would when the run is opened
        check_resources(cfg, meta, str(data_path))
        import ray

        warning = memory_warning(state_bytes, params, cfg, ray.cluster_resources().get("memory", float("inf")))
        if warning:
            log.warning(warning)
        for warning in ephemeral_outputs(Path.cwd(), cfg.storage_path, uri):
            log.warning(warning)
        status_before = runs.run_status(uri, (run_folder(cfg).read(RUN_ID_FILE) or "").strip()) if resume \
            else None
        run_id = open_run(cfg, resume=resume, uri=uri, data_path=data_path, meta=meta, config_file=config_file,
                          tags=tags)
        return fit_and_finish(cfg, uri, run_id, data_path, meta, fault=fault, status_before=status_before)


def fit_and_finish(cfg: TrainConfig, uri: str, run_id: str, data_path: str | Path, meta, *,
                   fault: dict[str, Any] | None, status_before: str | None) -> Outcome:
    """Fit on Ray Train and log, register and promote the best checkpoint. Every way out ends the MLflow run:
    FINISHED, FAILED, or KILLED on Ctrl-C — but a failed --resume of a run that had finished leaves it (and its
    model) as it was."""
    from pipeline.tracking import runs

    try:
        trainer = make_trainer(cfg, data_path, uri, run_id, fault=fault, meta=meta)
        result = trainer.fit()
        best = result.get_best_checkpoint(cfg.checkpoint_metric, "max") or result.checkpoint
        if best is None:
            raise RuntimeError("training produced no checkpoint")
        with best.as_directory() as best_folder:  # a local copy when storage_path is remote
            outcome = finish(cfg, uri, run_id, Path(best_folder), meta)
    except BaseException as err:
        if status_before == "FINISHED":
            log.warning("resuming run %s failed; it stays FINISHED", cfg.name)
        else:
            end_quietly(uri, run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        lost = tracking_lost(err)
        if lost is not None:  # the user's to act on: one line, not Ray's traceback of the worker
            raise ConnectionError(lost) from None
        raise
    runs.end_run(uri, run_id)
    return outcome


def tracking_lost(err: BaseException) -> str | None:
    """The message of the TrackingUnreachable that ended the workers (Ray Train's WorkerGroupError holds each
    worker's error, or Ray's wrapper of it), else None."""
    from pipeline.tracking.buffer import TrackingUnreachable

    for failure in (getattr(err, "worker_failures", None) or {}).values():
        for found in (failure, getattr(failure, "cause", None), failure.__cause__):
            if isinstance(found, TrackingUnreachable):
                return str(found)
    return None


def version_description(cfg: TrainConfig, run_id: str, meta, step: int, metrics: dict[str, float]) -> str:
    """A registered version in a few lines: the data, the accuracy, how it was trained, what made it."""
    scores = ", ".join(f"{k.removeprefix('eval/')} {v:.4f}" for k, v in sorted(metrics.items())
                       if k in ("eval/exact_accuracy", "eval/accuracy", "eval/task_valid"))
    return (f"{meta.task} model of run {cfg.name!r} (MLflow run {run_id}), the checkpoint of step {step}: {scores} "
            f"on the test split of {meta.path} ({int(meta.counts.get('test', 0)):,} puzzles; trained on "
            f"{int(meta.counts['train']):,} rows, fingerprint {str(meta.fingerprint)[:12]}). Flavour "
            f"{cfg.flavour}, global batch {cfg.global_batch_size}, {cfg.scaling.describe()} worker(s). Trained with "
            f"`hrm train --config <run file>` (the file and the resolved config are the run's artifacts).")


def finish(cfg: TrainConfig, uri: str, run_id: str, best: Path, meta) -> Outcome:
    """Log the best checkpoint's model (the first test puzzles its input example) to the run, its eval metrics
    linked to the model and, as ``model/*`` summary metrics of the run, which checkpoint it is; register it; move the
    alias."""
    from hrm.tasks import make_task
    from pipeline.tracking import registry
    from pipeline.train.samples import example_puzzles

    info = json.loads((best / "model.json").read_text())
    metrics: dict[str, Any] = info.get("metrics", {})
    example = example_puzzles(make_task(meta.task, meta.task_args), meta.path, cfg.eval_samples)
    name = (cfg.tracking.model_name or f"hrm-{meta.task}") if cfg.tracking.register else None
    step = int(metrics.get("step", 0))
    numbers = {k: float(v) for k, v in metrics.items()
               if k not in ("step", "eval/count") and isinstance(v, (int, float))}  # the count: a tag, not a chart
    logged = registry.log_model(uri, run_id, best, name, example, step=step, metrics=numbers)
    registry.log_registered_checkpoint(uri, run_id, best.name, step, numbers)
    version = str(logged.registered_model_version) if name and logged.registered_model_version else None
    if name and version:
        registry.describe(uri, name, version, version_description(cfg, run_id, meta, step, numbers),
                          f"HRM models for {meta.task} {json.dumps(meta.task_args)} ({meta.seq_len} tokens), "
                          f"registered by `hrm train`; @{registry.CHAMPION} is the best by "
                          f"{cfg.tracking.champion_metric}.")
    champion = False
    if name and version:
        value = float(metrics.get(cfg.tracking.champion_metric, float("-inf")))
        champion = registry.promote_if_better(uri, name, version, cfg.tracking.champion_metric, value)
    return Outcome(run_id=run_id, metrics=metrics, checkpoint=best,
                   model_uri=f"models:/{name}/{version}" if version else logged.model_uri,
                   model_version=version, champion=champion)
