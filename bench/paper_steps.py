"""Table 4 of #25: real ``hrm train`` steps of the paper's training configs on this machine's CPU, at a small batch.

For each (training config, built dataset, worker count): ``hrm train`` in a process of its own with
``scaling.use_gpu=false``, global batch ``--batch`` split over the workers, ``--steps`` steps, float32 (the same
arithmetic on every CPU: AVX2 machines compute bfloat16 slowly), its process tree sampled with bench/scale.py's
Sampler. Measured: the seconds from the command's start to its first logged step, seconds a step (MLflow's
timestamps of ``train/lm_loss``, from the second step on), the Train workers' peak RSS against ``hrm plan``'s
figures for the same run (state + activations at the peak, and the data share), and the loss at every step, which
must be the same at 1 and 2 workers (the same global batch)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
HEADER = ("| config | workers | local batch | to first step | s/step | Train worker peak | plan: state + activations "
          "(peak) + share | printed state | losses |\n|---|---|---|---|---|---|---|---|---|")


@dataclass
class Steps:
    config: str
    data: str
    workers: int
    local_batch: int
    first_step_s: float  # from `hrm train`'s start to its first logged step (everything before training)
    step_s: float  # seconds a step, after the first
    worker_peak_mib: float  # the largest peak RSS of one Ray Train worker process
    plan_device_mib: float  # hrm plan: training state + activations at the peak of a step
    plan_share_mib: float  # hrm plan: the worker's share of the data, held
    state_mib: float  # what the run prints before it starts (weights, gradients, optimizer state)
    losses: list[float]
    returncode: int

    def line(self) -> str:
        losses = ", ".join(f"{x:.4g}" for x in self.losses)
        return (f"| {self.config} | {self.workers} | {self.local_batch} | {self.first_step_s:.1f} s | "
                f"{self.step_s:.2f} | {self.worker_peak_mib:,.0f} MiB | {self.plan_device_mib:,.0f} + "
                f"{self.plan_share_mib:,.0f} MiB | {self.state_mib:,.0f} MiB | {losses} |")


def sets(config: Path, data: Path, workers: int, batch: int, steps: int, work: Path) -> dict[str, str]:
    """The ``--set`` overrides of one measured run: CPU, ``workers`` × (batch / workers), ``steps`` steps, one
    evaluation of 4 test rows at the end, its own run folder and MLflow store under ``work``."""
    return {"data": str(data), "name": f"steps-{config.stem}-w{workers}", "storage_path": str(work / "runs"),
            "scaling.use_gpu": "false", "scaling.num_workers": str(workers), "scaling.cpus_per_worker": "0.5",
            "global_batch_size": str(batch), "max_steps": str(steps), "eval_interval": str(steps),
            "log_interval": "1", "eval_limit": "4", "eval_samples": "0", "model.forward_dtype": "float32",
            "tracking.tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "tracking.experiment": "paper-steps"}


def measure(config: Path, data: Path, workers: int, batch: int, steps: int, work: Path) -> Steps:
    """One measured ``hrm train`` run (see the module's docstring)."""
    from mlflow.tracking import MlflowClient

    from bench.sampler import run_sampled
    from pipeline.cli.sets import parse_sets
    from pipeline.train.config import load_train_config
    from pipeline.train.plan import make_plan

    overrides = sets(config, data, workers, batch, steps, work)
    args = [f"{k}={v}" for k, v in overrides.items()]
    plan = make_plan(load_train_config(config, parse_sets(tuple(args))), probe=False, have={})
    cmd = [str(Path(sys.executable).with_name("hrm")), "train", "--config", str(config)]
    cmd += [a for arg in args for a in ("--set", arg)]
    log_path = work / f"{overrides['name']}.log"
    started = time.time()
    code, sampler = run_sampled(cmd, log_path, work, names=("ray::RayTrainWorker",))
    losses, first, step_s = [], float("nan"), float("nan")
    if code == 0:
        client = MlflowClient(overrides["tracking.tracking_uri"])
        experiment = client.get_experiment_by_name("paper-steps").experiment_id
        (run,) = client.search_runs([experiment], f"tags.mlflow.runName = '{overrides['name']}'")
        history = sorted(client.get_metric_history(run.info.run_id, "train/lm_loss"), key=lambda m: m.step)
        losses = [m.value for m in history]
        first = history[0].timestamp / 1000 - started
        step_s = (history[-1].timestamp - history[1].timestamp) / 1000 / (len(history) - 2)
    else:
        print(f"{overrides['name']}: hrm train exited with {code}; its output: {log_path}", file=sys.stderr)
    return Steps(config=config.stem.removeprefix("train-"), data=str(data), workers=workers,
                 local_batch=batch // workers, first_step_s=first, step_s=step_s,
                 worker_peak_mib=max(sampler.workers.values(), default=0) / MiB,
                 plan_device_mib=plan.device_bytes / MiB, plan_share_mib=plan.share_bytes / MiB,
                 state_mib=plan.state_bytes / MiB, losses=losses, returncode=code)
