"""A sweep's configuration: the training job it varies, the search space, how to search and when to stop trials."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hrm.config import model_config
from pipeline.core.config_io import from_dict, set_dotted
from pipeline.core.names import name_problems
from pipeline.core.yaml_io import read_mapping
from pipeline.train.config import TrainConfig, storage_path_problems
from pipeline.tune.space import (
    candidates,
    flatten_entries,
    is_distribution,
    normalize_key,
)

REPORTED = ("eval/exact_accuracy", "eval/accuracy", "eval/q_halt_accuracy", "eval/steps", "eval/count", "step",
            "epoch", "minutes")  # what the training loop reports at every evaluation (plus task scorers, per step)


@dataclass(kw_only=True)
class SchedulerSettings:
    kind: Literal["asha", "fifo"] = "asha"  # asha: stop weak trials at each evaluation; fifo: run all to the end
    # ASHA's clock: "evaluations" (Tune reports) or "train_minutes" (minutes of training, not of start-up or
    # evaluation: trials that differ in step cost compare at the same training time; needs eval_minutes)
    time_attr: Literal["evaluations", "train_minutes"] = "evaluations"
    grace_period: float = 1  # in time_attr's unit: what every trial gets before ASHA may stop it
    reduction_factor: float = 2.0  # ASHA keeps the best 1/reduction_factor at each rung
    max_t: float | None = None  # a full trial in time_attr's unit; None: from the training config and dataset
    brackets: int = 1
    metric: str | None = None  # what ASHA compares at its rungs (None: the sweep's metric), e.g. eval/accuracy
    # while every trial's exact accuracy is still 0 at the first rung


@dataclass(kw_only=True)
class SweepConfig:
    name: str = "sweep"  # the sweep's folder under storage_path and its MLflow parent run's name
    train_config: str | None = None  # a training run file (pipeline/configs/train-*.yaml); None: the defaults
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted training-config values fixed for every trial
    space: dict[str, Any] = field(default_factory=dict)  # dotted key -> {grid|choice|uniform|loguniform|randint: ...}
    searcher: Literal["grid", "random", "optuna"] = "grid"  # optuna: Optuna's TPE through Ray Tune
    num_samples: int = 1  # random/optuna: trials; grid: repeats of the whole grid
    metric: str = "eval/exact_accuracy"  # a metric the training loop reports at each evaluation
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    max_concurrent: int = 1  # trials at once (lowered to what the cluster fits); each trial's size is its scaling
    max_failures: int = 0  # Tune retries of a failed trial; a retry resumes the trial's own Train run
    seed: int = 0  # the random and optuna searchers' seed
    storage_path: str = "runs/sweeps"
    register_best: bool = True  # register the best trial's model (tracking.register of the training config too)
    # A data run file (pipeline/configs/data-*.yaml): built once, found again by its fingerprint (as hrm bench
    # reasoning finds its data); the trials train on it, whatever the training config's data says.
    data_config: str | None = None
    # Wall-clock seconds for the whole sweep, counted across its parts (--resume): when spent, the trials running are
    # stopped and the sweep reports what it has. A resume may raise it.
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        self.overrides = flatten_entries(self.overrides, "overrides", is_leaf=lambda _: False)
        self.space = flatten_entries(self.space, "space", is_leaf=is_distribution)
        problems = []
        for name in ("num_samples", "max_concurrent"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_failures < 0:
            problems.append(f"max_failures must be >= 0, got {self.max_failures}")
        s = self.scheduler
        if s.grace_period <= 0 or (s.time_attr == "evaluations" and s.grace_period < 1):
            problems.append(f"scheduler.grace_period must be {'>= 1' if s.time_attr == 'evaluations' else '> 0'}, "
                            f"got {s.grace_period}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            problems.append(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if s.reduction_factor <= 1:
            problems.append(f"scheduler.reduction_factor must be > 1, got {s.reduction_factor}")
        if s.brackets < 1:
            problems.append(f"scheduler.brackets must be >= 1, got {s.brackets}")
        if s.max_t is not None and s.max_t < s.grace_period:
            problems.append(f"scheduler.max_t {s.max_t} is below scheduler.grace_period {s.grace_period}")
        problems += name_problems(self.name)
        if "://" in self.storage_path:  # the sweep's own files (config, parent run id, report) are local files
            problems.append(f"storage_path must be a local or mounted folder for a sweep, got the URI "
                            f"{self.storage_path!r}: mount the bucket (NFS/EFS, mountpoint-s3, gcsfuse) and give "
                            f"the mount's path (single training runs take s3:// directly)")
        else:
            problems += storage_path_problems(self.storage_path)
        if problems:
            raise ValueError("invalid sweep config: " + "; ".join(problems))


def load_sweep_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read a sweep file plus dotted ``overrides`` (``--set``). Under ``space.`` and ``overrides.`` the rest of the
    key is one training-config key: ``space.optim.lr={loguniform: [1e-4, 1e-2]}``, ``overrides.max_steps=10``;
    ``space.optim.lr=null`` drops an entry."""
    data = read_mapping(path, "sweep")
    where = str(path) if path else "sweep"
    for section, leaf in (("space", is_distribution), ("overrides", lambda _: False)):
        if section in data:
            data[section] = flatten_entries(data[section] or {}, f"{where}: {section}", is_leaf=leaf)
    for dotted, value in (overrides or {}).items():
        head, _, rest = dotted.partition(".")
        if head in ("space", "overrides") and rest:
            section = data.setdefault(head, {})
            section.pop(normalize_key(rest), None)
            if value is not None:  # KEY=null drops the entry
                section[normalize_key(rest)] = value
        else:
            set_dotted(data, dotted, value)
    return from_dict(SweepConfig, data, where=where)


def train_config_path(cfg: SweepConfig, sweep_file: Path | None) -> Path | None:
    """The training run file: as given (relative to the working directory), else next to the sweep file."""
    if cfg.train_config is None:
        return None
    path = Path(cfg.train_config)
    if not path.is_absolute() and not path.is_file() and sweep_file is not None:
        beside = Path(sweep_file).parent / path
        if beside.is_file():
            return beside
    return path


def planned_reports(cfg: TrainConfig, meta) -> int:
    """Evaluations (Tune reports) of a trial that runs to the end: every eval_interval steps and at the last; for a
    run ended by its time budget (max_minutes, evaluating every eval_minutes of training) the budget's count."""
    total = min(cfg.max_steps or math.inf, cfg.epochs * (meta.counts["train"] // cfg.global_batch_size))
    by_steps = int(total // cfg.eval_interval + (1 if total % cfg.eval_interval else 0))
    if cfg.max_minutes is not None and cfg.eval_minutes is not None and by_steps <= cfg.max_minutes / cfg.eval_minutes:
        return math.ceil(cfg.max_minutes / cfg.eval_minutes - 1e-9)  # the steps outlast the budget
    return by_steps


def reported_metrics(sweep: SweepConfig, base: TrainConfig, meta) -> list[str]:
    """The metrics every trial reports at each evaluation (per-step exact accuracy up to the smallest M_max)."""
    from hrm.tasks import make_task
    from pipeline.data.loader import load_split
    from pipeline.train.evaluate import ARC_PASS_AT, task_score_keys

    task = make_task(meta.task, meta.task_args)
    task_keys = [f"eval/task_{k}" for k in task_score_keys(task, load_split(base.data, "test", limit=1))]
    task_keys += list(ARC_PASS_AT) if meta.task == "arc" else []
    entry = sweep.space.get("model.halt_max_steps")
    halts = candidates(entry) if entry else [model_config(base.flavour, **base.model).halt_max_steps]
    steps = [f"eval/exact_accuracy_step_{s}" for s in range(1, int(min(halts)) + 1)]
    return list(REPORTED) + task_keys + steps


def check_metric(sweep: SweepConfig, base: TrainConfig, meta) -> None:
    """The sweep's metric and ASHA's are reported at every evaluation; ASHA's clock can be read at its rungs."""
    allowed = reported_metrics(sweep, base, meta)
    for key, metric in (("metric", sweep.metric), ("scheduler.metric", sweep.scheduler.metric)):
        if metric is not None and metric not in allowed:
            raise ValueError(f"{key} {metric!r} is never reported by the training loop; choose one of {allowed}")
    s = sweep.scheduler
    if s.kind != "asha" or s.time_attr != "train_minutes":
        return
    if base.eval_minutes is None:
        raise ValueError("scheduler.time_attr train_minutes: ASHA reads its metric at evaluations, and the trials "
                         "evaluate by steps (eval_interval); set overrides.eval_minutes to evaluate every few "
                         "training minutes")
    if s.grace_period < base.eval_minutes - 1e-9:
        raise ValueError(f"scheduler.grace_period {s.grace_period:g} training minutes comes before the first "
                         f"evaluation (every eval_minutes = {base.eval_minutes:g}): ASHA could not read "
                         f"{s.metric or sweep.metric} there; make grace_period >= eval_minutes")


def minimum_minutes(sweep: SweepConfig, base: TrainConfig) -> float | None:
    """The fewest training minutes one trial can run: ASHA's grace period (training minutes), or for FIFO the
    training budget; None when the sweep's trials are not measured in minutes."""
    s = sweep.scheduler
    if s.kind == "asha" and s.time_attr == "train_minutes":
        return s.grace_period
    if s.kind == "fifo" and base.max_minutes is not None:
        return base.max_minutes
    return None


def check_budget(sweep: SweepConfig, base: TrainConfig, trials: int | None) -> None:
    """Refuse a time budget that cannot give every trial of the space its minimum (see ``minimum_minutes``), at
    ``max_concurrent`` trials at once; start-up and evaluations come on top, so this is the least it needs."""
    least = minimum_minutes(sweep, base)
    if sweep.time_budget_s is None or least is None or not trials:
        return
    need = trials * least / sweep.max_concurrent
    if need * 60 > sweep.time_budget_s:
        what = "ASHA's grace period" if sweep.scheduler.kind == "asha" else "max_minutes, run by every FIFO trial"
        raise ValueError(f"time_budget_s {sweep.time_budget_s:g} s ({sweep.time_budget_s / 60:.0f} min) cannot fit "
                         f"the sweep: {trials} trials × at least {least:g} training minutes each ({what}) at "
                         f"{sweep.max_concurrent} at a time is {need:.0f} min before any start-up or evaluation; "
                         f"raise time_budget_s or make the space smaller")
