"""The Ray Train worker loop: HRM with deep supervision on every worker, gradients summed across workers."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hrm.config import from_dict
from hrm.ema import EMA
from hrm.model import HRM
from hrm.step import build_optimizers, set_lr, train_step
from pipeline.train import checkpoint
from pipeline.train.batches import ShardedBatches, to_torch, worker_range
from pipeline.train.config import TrainConfig, run_model_config
from pipeline.train.evaluate import evaluate

log = logging.getLogger(__name__)


def all_reduce_sum(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over workers in one flat buffer (the loss is already scaled by 1/global batch)."""
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def build_model(cfg: TrainConfig, meta, device: torch.device) -> tuple[HRM, str]:
    """The worker's HRM on ``device``, computing in the configured forward_dtype with ``auto`` resolved for
    ``device`` (pipeline.precision), and the reason for that dtype."""
    from pipeline.precision import resolve_dtype

    config = run_model_config(cfg, meta)
    dtype, reason = resolve_dtype(config.forward_dtype, device)
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    return HRM(dataclasses.replace(config, forward_dtype=dtype)).to(device), reason


class MetricLog:
    """Train metrics summed on device between logs; reduced across workers and averaged when read."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().double()
        self.steps += 1

    def read(self, world: int) -> dict[str, float]:
        keys = sorted(self.sums)
        vector = torch.stack([torch.as_tensor(self.sums[k]).reshape(()) for k in keys]).cpu()
        if world > 1:
            dist.all_reduce(vector)
        totals = dict(zip(keys, vector.tolist()))
        count = totals.pop("count", 0.0)
        # Per-example metrics average over the rows that halted since the last read; none halted: not logged
        # (a 0 would be a value, and the charts would zig-zag).
        out = {f"train/{k}": totals[k] / count for k in ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
               if count > 0}
        for k in ("lm_loss", "q_halt_loss", "q_continue_loss"):
            if k in totals:
                out[f"train/{k}"] = totals[k] / self.steps  # summed over the global batch, per step
        out["train/grad_norm"] = totals["grad_norm"] / (self.steps * world)
        self.sums, self.steps = {}, 0
        return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from pipeline.data.loader import arc_test_refs, load_split, read_metadata
    from hrm.tasks import make_task
    from pipeline.tracking import RunLogger, start_system_metrics

    cfg: TrainConfig = from_dict(TrainConfig, config["train"])
    data_path = config["data_path"]  # a local path or an s3:// / gs:// URI: kept a str
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    meta = read_metadata(data_path)
    task = make_task(meta.task, meta.task_args)
    model, dtype_reason = build_model(cfg, meta, device)
    model.train()
    if rank == 0:
        run = RunLogger(config["tracking_uri"], config["run_id"])
        run.log_params({"resolved.forward_dtype": model.config.forward_dtype})
        run.set_tags({"resolved.forward_dtype.reason": dtype_reason})
        start_system_metrics(config["tracking_uri"], config["run_id"])  # system/* metrics of rank 0's machine
    opt = build_optimizers(model, cfg.optim)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    torch.manual_seed(cfg.seed * 1000 + rank + 1)  # exploration differs per worker

    position = checkpoint.Position()
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as folder:
            position = checkpoint.restore(Path(folder), model=model, opt=opt, ema=ema, rank=rank)
        log.info("worker %d resumed at step %d (epoch %d, batch %d)", rank, position.step, position.epoch,
                 position.batch_in_epoch)

    compile_ = cfg.compile if cfg.compile is not None else device.type == "cuda"
    forward = torch.compile(model) if compile_ else model
    quiet_data_stream(config.get("progress"))
    batches = read_share(cfg, meta.counts["train"], rank, world)
    per_epoch = batches.per_epoch
    if per_epoch == 0:
        raise ValueError(f"the training split has {meta.counts['train']} examples, fewer than one global batch "
                         f"({cfg.global_batch_size})")
    total_steps = min(cfg.max_steps or math.inf, cfg.epochs * per_epoch)
    eval_arrays = load_split(data_path, "test", limit=cfg.eval_limit)
    arc_refs = arc_test_refs(meta, eval_arrays["puzzle_ids"]) if meta.task == "arc" else None
    logger = RunLogger(config["tracking_uri"], config["run_id"]) if rank == 0 else None
    bar = _progress(total_steps, position.step, config.get("progress")) if rank == 0 else None

    reduce = all_reduce_sum if world > 1 else None
    metrics_log = MetricLog()
    carry = None
    saturated = 0
    started = time.time()
    stop = position.step >= total_steps
    for epoch in range(position.epoch, cfg.epochs):
        if stop:
            break
        skip = position.batch_in_epoch if epoch == position.epoch else 0
        for index, rows in batches.epoch(epoch, skip=skip):
            batch = to_torch(rows, device)
            if carry is None:
                carry = model.initial_carry(batch)
            set_lr(opt, cfg.optim, position.step, int(total_steps))
            carry, loss, metrics = train_step(forward, carry, batch, opt, loss_scale=1 / cfg.global_batch_size,
                                              loss=model.config.loss, grad_clip=cfg.optim.grad_clip,
                                              all_reduce=reduce)
            if not torch.isfinite(metrics["grad_norm"]):
                position.nonfinite_in_row += 1
                log.warning("non-finite loss/gradient at step %d: update skipped (%d in a row)", position.step,
                            position.nonfinite_in_row)
                if position.nonfinite_in_row >= cfg.max_nonfinite_in_row:
                    raise RuntimeError(f"{position.nonfinite_in_row} non-finite steps in a row at step "
                                       f"{position.step}: stopping (lower optim.lr or enable optim.grad_clip)")
                continue
            position.nonfinite_in_row = 0
            _inject_fault(config.get("fault"), rank, position.step)
            if ema is not None:
                ema.update(model)
            metrics_log.add(metrics)
            position.step += 1
            position.epoch, position.batch_in_epoch = epoch, index + 1
            done = position.step >= total_steps
            if position.step % cfg.log_interval == 0 or done:
                train_metrics = metrics_log.read(world)
                train_metrics["train/lr"] = opt.adam.param_groups[0]["lr"]
                if logger is not None:
                    logger.log(train_metrics, position.step)
                if bar is not None:
                    bar.set_metrics(train_metrics)
                if cfg.early_stop_train_exact is not None and "train/exact_accuracy" in train_metrics:
                    above = train_metrics["train/exact_accuracy"] >= cfg.early_stop_train_exact
                    saturated = saturated + 1 if above else 0
                    if saturated >= cfg.early_stop_patience:
                        log.info("train exact accuracy saturated at step %d: stopping early", position.step)
                        done = True
            if bar is not None:
                bar.update(1)
            if position.step % cfg.eval_interval == 0 or done:
                _evaluate_and_checkpoint(cfg, model, ema, opt, position, task, eval_arrays, arc_refs, device,
                                         rank, world, logger, meta, started)
            if done:
                stop = True
                break
        if not stop:
            position.epoch, position.batch_in_epoch = epoch + 1, 0
    if bar is not None:
        bar.close()


def _evaluate_and_checkpoint(cfg, model, ema, opt, position, task, eval_arrays, arc_refs, device, rank, world,
                             logger, meta, started) -> None:
    import ray.train

    scored = ema.shadow if ema is not None else model
    metrics = evaluate(scored, eval_arrays, task, batch_size=cfg.local_batch_size, device=device, rank=rank,
                       world=world, arc_refs=arc_refs)
    metrics.update({"step": position.step, "epoch": position.epoch, "minutes": (time.time() - started) / 60})
    if logger is not None:
        logger.log({k: v for k, v in metrics.items() if k.startswith("eval/")}, position.step)
        log.info("step %d: eval exact %.3f, token %.3f", position.step, metrics["eval/exact_accuracy"],
                 metrics["eval/accuracy"])
    rngs = checkpoint.gather_rng_states(world)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:
            checkpoint.save(Path(tmp), model=model, opt=opt, ema=ema, position=position, rng_states=rngs,
                            export_info={"task": meta.task, "task_args": meta.task_args,
                                         "metrics": {k: v for k, v in metrics.items() if k.startswith("eval/") or k == "step"}})
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)


def read_share(cfg: TrainConfig, rows: int, rank: int, world: int) -> ShardedBatches:
    """This worker's share of the training split, read once through Ray Train's dataset shard
    (pipeline.train.ingest), as the batches of every epoch."""
    import ray.train

    from pipeline.train.share import collect_share

    lo, hi = worker_range(rows, cfg.shards, world, rank)
    started = time.perf_counter()
    iterator = ray.train.get_dataset_shard("train")  # a barrier: rank 0 has Train configure every worker's share
    got = time.perf_counter()
    share = collect_share(iterator, lo, hi)
    log.info("worker %d read its share, example ids [%d, %d) (%d rows), in %.1f s (%.1f s of it waiting for the "
             "shard)", rank, lo, hi, hi - lo, time.perf_counter() - started, got - started)
    return ShardedBatches(share, n=rows, global_batch=cfg.global_batch_size, shards=cfg.shards, rank=rank,
                          world=world, seed=cfg.seed)


def quiet_data_stream(mode: str | None = None) -> None:
    """Keep Ray Data's progress bars and INFO lines of this worker's share out of the display (its Dataset's bars
    are off already: ShardedTrainData turns them off in the Dataset's context). In ``lines`` mode also Ray Train's
    INFO lines of this worker (a metrics dump and a checkpoint line at every report); its warnings and the
    controller's lines (worker group, failures and retries) still show."""
    from pipeline.progress import quiet_console, quiet_ray_data

    quiet_ray_data()
    if mode == "lines":
        quiet_console("ray.train", logging.WARNING)


def _inject_fault(fault: dict[str, Any] | None, rank: int, step: int) -> None:
    """Test hook: once (a marker file records it), kill or fail worker ``rank`` at ``step``."""
    if not fault or rank != fault["rank"] or step != fault["step"]:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(str(step))
    if fault["kind"] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at step {step}")


def _progress(total: float, initial: int, mode: str | None):
    """Rank 0's training progress: a Ray progress bar (``mode`` "bar", the driver is in a terminal) or a log line
    every ~10% of the steps ("lines"); both take ``update(n)``, ``set_metrics(train_metrics)`` and ``close()``."""
    from pipeline.progress import make_progress

    return make_progress(mode, int(total), initial)



