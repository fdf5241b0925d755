"""The Ray Train worker loop: HRM with deep supervision on every worker, gradients summed across workers.

Ray Train runs :func:`train_loop_per_worker` on every worker. It reads top to bottom: :func:`start` (the model,
its optimizers, the latest checkpoint if any, this worker's share of the training split), then for every global
batch from the resume position (:func:`stream`): one optimizer step (:func:`step`; a non-finite one is skipped),
the train metrics every ``log_interval`` steps (:func:`log_train`, where early stopping may end the run), an
evaluation and a checkpoint every ``eval_interval`` steps and at the end (:func:`evaluate_and_checkpoint`).
Everything the phases share travels in one :class:`Worker`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrm.ema import EMA
from hrm.model import HRM
from hrm.step import Optimizers, build_optimizers, set_lr, train_step
from pipeline.core.config_io import from_dict
from pipeline.train import carry_state, checkpoint
from pipeline.train.batches import (
    Rows,
    ShardedBatches,
    require_one_global_batch,
    to_torch,
)
from pipeline.train.config import TrainConfig, run_model_config
from pipeline.train.evaluate import evaluate
from pipeline.train.faults import inject_fault
from pipeline.train.gradients import all_reduce_sum
from pipeline.train.ingest import read_share
from pipeline.train.metric_log import MetricLog
from pipeline.train.run_log import (
    group_tags,
    logged_through,
    open_tracking,
    replayed_tag,
    worker_nodes,
)
from pipeline.train.samples import KEY as SAMPLES_KEY
from pipeline.train.samples import sample_image

log = logging.getLogger(__name__)
REPORT_SETTLE_SECONDS = 10.0  # at most, before each report, for the eval metrics to reach MLflow (not in an outage)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry on every worker. ``config`` is make_trainer's ``train_loop_config``: ``train`` (the
    TrainConfig as a dict), ``data_path``, ``tracking_uri``, ``run_id``, ``progress`` (the display mode) and
    ``fault`` (tests only). Trains from the latest checkpoint, if any, to the last step, reporting eval metrics and
    a checkpoint to Ray Train every ``eval_interval`` steps and at the end."""
    w = start(config)
    try:
        for epoch, index, rows in stream(w):
            if not step(w, rows):
                continue  # a non-finite loss or gradient: no update, no step counted
            inject_fault(config.get("fault"), w.rank, w.position.step)  # tests only: kill or fail one worker once
            w.position.advance(epoch, index)
            done = w.position.step >= w.total_steps or w.clock.out_of_time(w.position)
            if w.position.step % w.cfg.log_interval == 0 or done:
                done = log_train(w) or done  # True: stopped early
            if w.bar is not None:
                w.bar.advance(w.position.step, w.position.trained_seconds)
            if w.position.step % w.cfg.eval_interval == 0 or w.clock.eval_due(w.position) or w.clock.checkpoint_due() \
                    or done:
                evaluate_and_checkpoint(w)
                w.clock.evaluated(w.position)  # the evaluation's time is not training time
            if done:
                break
    except BaseException:
        close_tracking(w, failed=True)
        raise
    if w.bar is not None:
        w.bar.close()
    close_tracking(w)


@dataclass
class EarlyStop:
    """Stop when train exact accuracy is at or above ``threshold`` (None: never) in ``patience`` logs in a row."""

    threshold: float | None
    patience: int
    above: int = 0  # logs in a row at or above the threshold

    def update(self, train_metrics: dict[str, float]) -> bool:
        """Count one log's ``train/exact_accuracy`` (a log without it, no row halted, changes nothing); True: stop."""
        if self.threshold is None or "train/exact_accuracy" not in train_metrics:
            return False
        self.above = self.above + 1 if train_metrics["train/exact_accuracy"] >= self.threshold else 0
        return self.above >= self.patience


@dataclass
class Clock:
    """Training time against ``max_minutes`` / ``eval_minutes``, kept in the Position (``trained_seconds``), so a
    resumed run goes on counting. Only the steps count: the time between the end of one evaluation and the next
    step's end; evaluations and checkpoints do not. ``checkpoint_minutes`` counts wall time instead, since the last
    checkpoint (or the worker's start): what a lost node would cost."""

    max_seconds: float | None
    eval_seconds: float | None
    checkpoint_seconds: float | None = None
    last_eval: float = 0.0  # trained_seconds at the last evaluation
    tick: float = field(default_factory=time.perf_counter)
    last_checkpoint: float = field(default_factory=time.perf_counter)  # wall clock of the last checkpoint
    since_checkpoint: float = 0.0  # wall seconds since it, at the last count

    def count(self, position: checkpoint.Position, world: int = 1, device: Any = "cpu") -> None:
        """Add the time since the last tick to ``position.trained_seconds``. With several workers and a budget in
        force they agree on the slowest one's count, so all stop, evaluate and checkpoint at the same step."""
        now = time.perf_counter()
        position.trained_seconds += now - self.tick
        self.tick, self.since_checkpoint = now, now - self.last_checkpoint
        if world > 1 and (self.max_seconds, self.eval_seconds, self.checkpoint_seconds) != (None, None, None):
            shared = torch.tensor([position.trained_seconds, self.since_checkpoint], dtype=torch.float64,
                                  device=device)
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
            position.trained_seconds, self.since_checkpoint = (float(x) for x in shared)

    def out_of_time(self, position: checkpoint.Position) -> bool:
        return self.max_seconds is not None and position.trained_seconds >= self.max_seconds

    def eval_due(self, position: checkpoint.Position) -> bool:
        return self.eval_seconds is not None and position.trained_seconds - self.last_eval >= self.eval_seconds

    def checkpoint_due(self) -> bool:
        return self.checkpoint_seconds is not None and self.since_checkpoint >= self.checkpoint_seconds

    def evaluated(self, position: checkpoint.Position) -> None:
        """An evaluation and its checkpoint are done."""
        self.last_eval, self.tick = position.trained_seconds, time.perf_counter()
        self.last_checkpoint, self.since_checkpoint = self.tick, 0.0

    def schedule_total(self, position: checkpoint.Position, total_steps: int) -> int:
        """The step count the LR schedule runs to: ``total_steps``; under a time budget, the steps the budget
        holds at the pace so far (from the 10th step on), so that the cosine ends with the budget."""
        if self.max_seconds is None or position.step < 10 or position.trained_seconds <= 0:
            return total_steps
        return min(total_steps, max(position.step + 1,
                                    round(position.step * self.max_seconds / position.trained_seconds)))


@dataclass
class EvalSet:
    """What every evaluation scores: the task, the test split's arrays, the ARC references (ARC only)."""

    task: Any
    arrays: dict[str, Any]
    arc_refs: list | None
    count_logged: bool = False  # ``eval.count`` tagged (rank 0, once a worker start)


@dataclass
class Worker:
    """One worker's training state, shared by the loop's phases; ``logger`` and ``bar`` only on rank 0."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    meta: Any  # the dataset's metadata (pipeline.data.loader.DatasetMeta)
    model: HRM
    forward: Any  # the model, compiled or not: what train_step calls
    opt: Optimizers
    ema: EMA | None
    position: checkpoint.Position
    batches: ShardedBatches
    total_steps: int
    evals: EvalSet
    logger: Any = None  # pipeline.tracking.buffer.BufferedRunLogger
    bar: Any = None  # pipeline.core.progress.make_progress
    metrics: MetricLog = field(default_factory=MetricLog)
    early_stop: EarlyStop | None = None
    clock: Clock = field(default_factory=lambda: Clock(None, None))
    carry: Any = None  # the HRM carry, from one batch to the next
    started: float = field(default_factory=time.time)


def start(config: dict[str, Any]) -> Worker:
    """Everything before the first step: the model (the same initial weights on every worker), its optimizers and
    EMA, the latest checkpoint put back, this worker's share of the data, the test split, rank 0's tracking."""
    import ray.train
    import ray.train.torch

    from hrm.tasks import make_task
    from pipeline.data.loader import read_metadata

    cfg: TrainConfig = from_dict(TrainConfig, config["train"])
    data_path = config["data_path"]  # a local path or an s3:// / gs:// URI: kept a str
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    meta = read_metadata(data_path)
    task = make_task(meta.task, meta.task_args)
    model, dtype_reason = build_model(cfg, meta, device)
    model.train()
    # Rank 0 opens its MLflow logger (importing MLflow: seconds) while the worker reads its share of the data
    tracking = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hrm-tracking")
    opening = tracking.submit(open_tracking, config, model, dtype_reason,
                              cfg.tracking.unreachable_minutes) if rank == 0 else None
    try:
        opt = build_optimizers(model, cfg.optim)
        ema = EMA(model, cfg.ema) if cfg.ema else None
        torch.manual_seed(cfg.seed * 1000 + rank + 1)  # exploration differs per worker
        position, saved_carry = resume(model, opt, ema, rank)
        forward = torch.compile(model) if compile_on(cfg, device) else model
        quiet_data_stream(config.get("progress"))
        require_one_global_batch(meta.counts["train"], cfg.global_batch_size, data_path)
        batches = read_share(cfg, meta, rank, world, in_worker=config.get("ingest") == "worker")
        carry = carry_state.slice_for(saved_carry, global_batch=cfg.global_batch_size, shards=cfg.shards,
                                      world=world, rank=rank, device=device)
        group = worker_nodes(world)  # where every worker of this group runs, rank by rank
    except BaseException:
        if opening is not None and opening.exception() is not None:  # an unreachable server is said first
            raise opening.exception() from None
        raise
    finally:
        tracking.shutdown(wait=True)
    logger = opening.result() if opening is not None else None
    if logger is not None:  # a restart (a lost node, a resize, --resume) may replay steps the run has logged
        logger.skip_through = logged_through(config["tracking_uri"], config["run_id"], position.step)
        if logger.skip_through:
            logger.set_tags(replayed_tag(position.step, logger.skip_through))
        logger.set_tags(group_tags(config["tracking_uri"], config["run_id"], group, position.step,
                                   logger.skip_through))
    total_steps = int(min(cfg.max_steps or math.inf, cfg.epochs * batches.per_epoch))
    evals = load_eval_set(data_path, meta, task, cfg.eval_limit)
    clock = Clock(seconds(cfg.max_minutes), seconds(cfg.eval_minutes), seconds(cfg.checkpoint_minutes),
                  last_eval=position.trained_seconds)
    bar = make_bar(total_steps, position, clock.max_seconds, config.get("progress")) if rank == 0 else None
    return Worker(cfg=cfg, rank=rank, world=world, device=device, meta=meta, model=model, forward=forward, opt=opt,
                  ema=ema, position=position, batches=batches, total_steps=total_steps, evals=evals, logger=logger,
                  bar=bar, early_stop=EarlyStop(cfg.early_stop_train_exact, cfg.early_stop_patience), clock=clock,
                  carry=carry)


def seconds(minutes: float | None) -> float | None:
    return None if minutes is None else minutes * 60


def stream(w: Worker) -> Iterator[tuple[int, int, Rows]]:
    """(epoch, index in the epoch, this worker's rows) of every global batch from the resume position on, nothing
    when the run has done all its steps; at the end of an epoch the position moves to the start of the next."""
    if w.position.step >= w.total_steps:
        return
    for epoch in range(w.position.epoch, w.cfg.epochs):
        skip = w.position.batch_in_epoch if epoch == w.position.epoch else 0
        for index, rows in w.batches.epoch(epoch, skip=skip):
            yield epoch, index, rows
        w.position.epoch, w.position.batch_in_epoch = epoch + 1, 0


def step(w: Worker, rows: Rows) -> bool:
    """One optimizer step on this worker's slice of a global batch, gradients summed across workers; the EMA and
    the train metrics follow it. False when the loss or gradient was non-finite: the update was skipped."""
    batch = to_torch(rows, w.device)
    if w.carry is None:
        w.carry = w.model.initial_carry(batch)
    set_lr(w.opt, w.cfg.optim, w.position.step, w.clock.schedule_total(w.position, w.total_steps))
    w.carry, _, metrics = train_step(w.forward, w.carry, batch, w.opt, loss_scale=1 / w.cfg.global_batch_size,
                                     loss=w.model.config.loss, grad_clip=w.cfg.optim.grad_clip,
                                     all_reduce=all_reduce_sum if w.world > 1 else None)
    if skip_nonfinite(w.position, bool(torch.isfinite(metrics["grad_norm"])), w.cfg.max_nonfinite_in_row):
        return False
    if w.ema is not None:
        w.ema.update(w.model)
    w.metrics.add(metrics)
    w.clock.count(w.position, w.world, w.device)
    return True


def skip_nonfinite(position: checkpoint.Position, finite: bool, limit: int) -> bool:
    """The non-finite rule, on the streak kept in ``position``: a finite step resets it (False: keep the step); a
    non-finite one extends it (True: skip the step), and ``limit`` of them in a row stop the run (RuntimeError)."""
    if finite:
        position.nonfinite_in_row = 0
        return False
    position.nonfinite_in_row += 1
    log.warning("non-finite loss/gradient at step %d: update skipped (%d in a row)", position.step,
                position.nonfinite_in_row)
    if position.nonfinite_in_row >= limit:
        raise RuntimeError(f"{position.nonfinite_in_row} non-finite steps in a row at step {position.step}: "
                           "stopping (lower optim.lr or enable optim.grad_clip)")
    return True


def log_train(w: Worker) -> bool:
    """The train metrics since the last log, read on every worker, to MLflow and the progress display (rank 0).
    True when early stopping ends the run here."""
    train_metrics = w.metrics.read(w.world)
    train_metrics["train/lr"] = w.opt.adam.param_groups[0]["lr"]
    train_metrics["train/workers"] = float(w.world)  # elastic training: the group's size over the steps
    if w.logger is not None:
        w.logger.log(train_metrics, w.position.step)
    if w.bar is not None:
        w.bar.set_metrics(train_metrics)
    if w.early_stop is not None and w.early_stop.update(train_metrics):
        log.info("train exact accuracy saturated at step %d: stopping early", w.position.step)
        return True
    return False


def evaluate_and_checkpoint(w: Worker) -> None:
    """Score the model (the EMA weights when on) on the test split, all workers together; log the eval metrics
    and a picture of its answers to the first ``eval_samples`` puzzles (rank 0); report them to Ray Train with a
    checkpoint that rank 0 writes (every worker's RNG state in it)."""
    import ray.train

    scored = w.ema.shadow if w.ema is not None else w.model
    metrics = evaluate(scored, w.evals.arrays, w.evals.task, batch_size=w.cfg.local_batch_size, device=w.device,
                       rank=w.rank, world=w.world, arc_refs=w.evals.arc_refs, votes=w.cfg.eval_votes,
                       seed=w.cfg.seed)
    metrics.update({"step": w.position.step, "epoch": w.position.epoch, "minutes": (time.time() - w.started) / 60,
                    "train_minutes": w.position.trained_seconds / 60})
    if w.logger is not None:
        if "eval/count" in metrics and not w.evals.count_logged:  # the same at every evaluation: a tag, not a chart
            w.logger.set_tags({"eval.count": str(int(metrics["eval/count"]))})
            w.evals.count_logged = True
        w.logger.log({**{k: v for k, v in metrics.items() if k.startswith("eval/") and k != "eval/count"},
                      "train/minutes": metrics["train_minutes"]}, w.position.step)
        log.info("step %d (%.1f min of training): eval exact %.3f, token %.3f", w.position.step,
                 metrics["train_minutes"], metrics["eval/exact_accuracy"], metrics["eval/accuracy"])
        image = sample_image(scored, w.evals.task, w.evals.arrays, w.cfg.eval_samples,
                             f"step {w.position.step}: exact accuracy {metrics['eval/exact_accuracy']:.3f}")
        if image is not None:
            w.logger.log_image(image, SAMPLES_KEY, w.position.step)
    if w.logger is not None:  # in MLflow before the report: a scheduler (Tune's ASHA) may end the run at it
        w.logger.settle(REPORT_SETTLE_SECONDS)
    rngs = checkpoint.gather_rng_states(w.world)
    carry = carry_state.gather(w.carry, w.world, w.rank)
    if w.cfg.checkpoint_upload == "async":  # Ray Train copies the folder to storage_path in the background, then
        # deletes it; training goes on meanwhile
        from ray.train import CheckpointUploadMode

        ckpt = save_checkpoint(w, Path(tempfile.mkdtemp(prefix="hrm-ckpt-")), metrics, rngs, carry) \
            if w.rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_upload_mode=CheckpointUploadMode.ASYNC)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(w, Path(tmp), metrics, rngs, carry) if w.rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt)


def save_checkpoint(w: Worker, folder: Path, metrics: dict[str, Any], rngs: list, carry: dict | None) -> Any:
    """Write the checkpoint into ``folder`` (its export info carries the eval metrics and step); the Ray Train
    Checkpoint of it."""
    import ray.train

    kept = {k: v for k, v in metrics.items() if k.startswith("eval/") or k == "step"}
    checkpoint.save(folder, model=w.model, opt=w.opt, ema=w.ema, position=w.position, rng_states=rngs, carry=carry,
                    export_info={"task": w.meta.task, "task_args": w.meta.task_args, "metrics": kept})
    return ray.train.Checkpoint.from_directory(folder)


def build_model(cfg: TrainConfig, meta, device: torch.device) -> tuple[HRM, str]:
    """The worker's HRM on ``device``, computing in the configured forward_dtype with ``auto`` resolved for
    ``device`` (pipeline.core.precision), and the reason for that dtype."""
    from pipeline.core.precision import resolve_dtype

    config = run_model_config(cfg, meta)
    dtype, reason = resolve_dtype(config.forward_dtype, device)
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    return HRM(dataclasses.replace(config, forward_dtype=dtype)).to(device), reason


def close_tracking(w: Worker, failed: bool = False) -> None:
    """Send what rank 0's MLflow logger has buffered before the worker ends: waiting at most the unreachable limit
    at the end of training, ``FAILED_CLOSE_SECONDS`` on the way out of a failed run (a warning says what is lost)."""
    from pipeline.tracking.buffer import FAILED_CLOSE_SECONDS

    if w.logger is not None:
        w.logger.close(FAILED_CLOSE_SECONDS if failed else None)


def resume(model: HRM, opt: Optimizers, ema: EMA | None, rank: int) -> tuple[checkpoint.Position, dict | None]:
    """Where training starts: Ray Train's latest checkpoint put back into ``model``, ``opt``, ``ema`` and this
    worker's RNG; its position and the global batch's carry (step 0 and None when there is none)."""
    import ray.train

    found = ray.train.get_checkpoint()
    if found is None:
        return checkpoint.Position(), None
    with found.as_directory() as folder:
        position, carry = checkpoint.restore(Path(folder), model=model, opt=opt, ema=ema, rank=rank)
    log.info("worker %d resumed at step %d (epoch %d, batch %d)", rank, position.step, position.epoch,
             position.batch_in_epoch)
    return position, carry


def compile_on(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether to torch.compile the model: ``cfg.compile``, else on for a GPU and off for a CPU."""
    return cfg.compile if cfg.compile is not None else device.type == "cuda"


def load_eval_set(data_path: str, meta, task: Any, limit: int | None) -> EvalSet:
    """The test split (at most ``limit`` examples) and, for ARC, the references its answers are scored on."""
    from pipeline.data.loader import arc_test_refs, load_split

    arrays = load_split(data_path, "test", limit=limit)
    return EvalSet(task, arrays, arc_test_refs(meta, arrays["puzzle_ids"]) if meta.task == "arc" else None)


def quiet_data_stream(mode: str | None = None) -> None:
    """Keep Ray Data's progress bars and INFO lines of this worker's share out of the display (its Dataset's bars
    are off already: ShardedTrainData turns them off in the Dataset's context). In ``lines`` mode also Ray Train's
    INFO lines of this worker (a metrics dump and a checkpoint line at every report); its warnings and the
    controller's lines (worker group, failures and retries) still show."""
    from pipeline.core.progress import quiet_console, quiet_ray_data

    quiet_ray_data()
    if mode == "lines":
        quiet_console("ray.train", logging.WARNING)


def make_bar(total: int, position: checkpoint.Position, budget_seconds: float | None, mode: str | None) -> Any:
    """Rank 0's training progress: a Ray progress bar (``mode`` "bar", the driver is in a terminal) or a log line
    every ~10% of the steps ("lines"), or of the training-time budget when there is one; all take
    ``advance(step, trained_seconds)``, ``set_metrics(train_metrics)`` and ``close()``."""
    from pipeline.core.progress import make_progress

    return make_progress(mode, total, position.step, budget_seconds, position.trained_seconds)
