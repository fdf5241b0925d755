"""The training job's configuration: typed dataclasses (the single source of defaults) and strict YAML loading."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hrm.config import ModelConfig, model_config
from hrm.step import OptimConfig
from pipeline.core.config_io import from_dict, set_dotted, to_dict
from pipeline.core.names import name_problems
from pipeline.core.yaml_io import read_mapping


@dataclass(kw_only=True)
class ScalingSettings:
    # A number, or [min, max]: elastic training. Ray Train then starts on as many workers as the cluster has room for
    # (at most max), restarts on fewer when a node is lost (from the last checkpoint; at least min) and grows again
    # when nodes come back. Any count from 1 to data_shards trains on the same global batches (pipeline.train.batches).
    num_workers: int | tuple[int, int] = 1
    resize_check_seconds: float = 60.0  # elastic: how often a running group looks for room to grow
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    torch_threads: int | None = None  # intra-op threads per worker; None = what Ray sets (its CPU share)

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers

    def describe(self) -> str:
        """``3``, or ``1-3`` for an elastic range."""
        return f"{self.min_workers}-{self.max_workers}" if self.elastic else str(self.num_workers)

    def problems(self, shards: int, max_failures: int) -> list[str]:
        low, high = self.min_workers, self.max_workers
        shown = f"[{low}, {high}]" if self.elastic else str(low)
        if low < 1:
            return [f"scaling.num_workers {shown}: at least 1 worker"]
        if low > high:
            return [f"scaling.num_workers {shown}: min {low} is more than max {high}"]
        problems = []
        if high > shards:
            problems.append(f"scaling.num_workers {high} is more than data_shards {shards} (a worker would own no "
                            "shard of the global batch; data_shards defaults to global_batch_size)")
        if self.elastic and max_failures == 0:
            problems.append(f"scaling.num_workers {shown} is elastic, but max_failures is 0: a lost node is a "
                            "failure the run restarts from on fewer workers (set max_failures >= 1, or -1: no "
                            "limit)")
        if not 0 < self.resize_check_seconds < math.inf:
            problems.append(f"scaling.resize_check_seconds must be > 0, got {self.resize_check_seconds}")
        return problems


@dataclass(kw_only=True)
class TrackingSettings:
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "hrm"
    register: bool = True
    model_name: str | None = None  # None: hrm-<task>
    champion_metric: str = "eval/exact_accuracy"
    # While the tracking server is unreachable training goes on (metrics buffered, sent once it is back) for at most
    # this many minutes, then stops with an error; its checkpoints stay, `hrm train --resume` continues the run
    unreachable_minutes: float = 30.0


@dataclass(kw_only=True)
class TrainConfig:
    name: str = "hrm"  # the run's name: Ray Train run folder and MLflow run name
    data: str = "data/sudoku-demo"  # a dataset folder written by `hrm data build`
    flavour: str = "debug"  # hrm.config.FLAVOURS
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the flavour
    optim: OptimConfig = field(default_factory=OptimConfig)
    global_batch_size: int = 768
    epochs: int = 1
    max_steps: int | None = None  # stop earlier than epochs × batches
    # A wall-clock budget: stop once this many minutes of training are done (evaluations and checkpoints are not
    # counted; a resumed run counts what it trained before). The LR schedule's cosine then runs over the budget.
    max_minutes: float | None = None
    eval_interval: int = 2000  # steps between evaluations (and checkpoints)
    eval_minutes: float | None = None  # also evaluate (and checkpoint) every this many minutes of training
    # Also evaluate and checkpoint once this many minutes of wall time have passed since the last checkpoint: what
    # losing a node can cost at most (plus the restart). A checkpoint is always an evaluated one (eval_limit bounds
    # its cost), so the best checkpoint is chosen on real scores.
    checkpoint_minutes: float | None = None
    # "async": rank 0 writes the checkpoint locally and Ray Train copies it to storage_path in the background while
    # training goes on; "sync": the step waits for the copy
    checkpoint_upload: Literal["async", "sync"] = "async"
    eval_limit: int | None = None  # at most this many test examples per evaluation
    eval_samples: int = 4  # test puzzles drawn with the answers at every evaluation (MLflow image "eval_samples")
    # > 1: each evaluation also votes over this many symmetries of each puzzle (hrm.vote; N times the eval's
    # forward passes) and logs eval/exact_accuracy_votes_<N>; 1 (default): no voting, the eval costs what it did
    eval_votes: int = 1
    log_interval: int = 20  # steps between metric logs
    # contiguous shards of the training split; every global batch takes global_batch_size / data_shards rows from
    # each (pipeline.train.batches). None = global_batch_size. Runs with the same data_shards and global batch
    # train on identical batches whatever num_workers (any count up to data_shards).
    data_shards: int | None = None
    # A training split of at most this much Parquet (metadata.json's part sizes) is read by each worker itself, with
    # pyarrow (pipeline.train.ingest.LocalShare); a larger one through Ray Data's tasks. Ray Data starts a reader
    # process, a footer actor and a dataset manager for every worker (re)start: ~5 s for a split of a few kB on 2
    # cores. 0: always Ray Data.
    ingest_in_worker_mib: float = 64.0
    checkpoint_keep: int = 2  # best by checkpoint_metric, plus the latest
    checkpoint_metric: str = "eval/exact_accuracy"
    ema: float | None = None  # e.g. 0.999 (TRM): evaluate and export the EMA weights
    max_nonfinite_in_row: int = 10
    early_stop_train_exact: float | None = None  # stop when train exact accuracy stays above this
    early_stop_patience: int = 3  # log intervals in a row above the threshold
    compile: bool | None = None  # torch.compile: None = on for GPU, off for CPU
    seed: int = 0
    storage_path: str = "runs"
    max_failures: int = 0  # worker-group failures (a lost node, a killed worker) restarted from; -1: no limit
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.global_batch_size < 1:
            problems.append(f"global_batch_size must be >= 1, got {self.global_batch_size}")
        if self.shards >= 1:
            problems += self.scaling.problems(self.shards, self.max_failures)
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1 (or null: epochs decide), got {self.max_steps}")
        problems += self._shard_problems()
        for name in ("epochs", "eval_interval", "log_interval", "checkpoint_keep", "eval_votes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_votes > 1:
            from hrm.vote import MAX_VOTES

            if self.eval_votes > MAX_VOTES:
                problems.append(f"eval_votes must be at most {MAX_VOTES}, got {self.eval_votes}")
        for name in ("max_minutes", "eval_minutes", "checkpoint_minutes"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:  # also refuses nan
                problems.append(f"{name} must be a number of minutes > 0 (or null: no limit), got {value}")
        if not 0 < self.tracking.unreachable_minutes < math.inf:  # also refuses nan
            problems.append("tracking.unreachable_minutes must be a number of minutes > 0, got "
                            f"{self.tracking.unreachable_minutes}")
        if not 0 <= self.ingest_in_worker_mib < math.inf:  # also refuses nan
            problems.append(f"ingest_in_worker_mib must be a number of MiB >= 0, got {self.ingest_in_worker_mib}")
        if self.ema is not None and not 0 < self.ema < 1:
            problems.append(f"ema must be in (0, 1), got {self.ema}")
        problems += storage_path_problems(self.storage_path)
        problems += name_problems(self.name)
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def _shard_problems(self) -> list[str]:
        if self.data_shards is None:
            return []
        if self.data_shards < 1:
            return [f"data_shards must be >= 1 (or null: global_batch_size), got {self.data_shards}"]
        problems = []
        if self.global_batch_size >= 1 and self.global_batch_size % self.data_shards:
            problems.append(f"global_batch_size {self.global_batch_size} is not divisible by data_shards "
                            f"{self.data_shards} (each global batch takes the same number of rows from every shard)")
        return problems

    @property
    def shards(self) -> int:
        """data_shards resolved: global_batch_size when unset."""
        return self.data_shards or self.global_batch_size

    @property
    def local_batch_size(self) -> int:
        """The largest slice of the global batch a worker takes: ⌈K / W⌉ shards of G / K rows, at the fewest
        workers (scaling.min_workers)."""
        return -(-self.shards // self.scaling.min_workers) * (self.global_batch_size // self.shards)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML run file (it only names a run and overrides defaults) plus dotted ``overrides`` (``--set``)."""
    data = read_mapping(path, "config")
    where = str(path) if path is not None else "config"
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    cfg = from_dict(TrainConfig, data, where=where)
    # Validate the model overrides now, with placeholder data sizes, so a bad key fails before any cluster work.
    checked_model_config(cfg.flavour, cfg.model, where=f"{where}: model")
    return cfg


def checked_model_config(flavour: str, settings: dict[str, Any], where: str) -> ModelConfig:
    """A flavour's ModelConfig with ``settings`` read from a file: strict types, unknown keys refused (named)."""
    return from_dict(ModelConfig, {**to_dict(model_config(flavour)), **settings}, where=where)


def run_model_config(cfg: TrainConfig, meta, **overrides: Any) -> ModelConfig:
    """The model a run trains on a dataset: the flavour, the run's ``model`` overrides, ``overrides``, and the
    dataset's sizes (vocab_size, seq_len, num_puzzle_identifiers), which win."""
    sizes = {"vocab_size": meta.vocab_size, "seq_len": meta.seq_len,
             "num_puzzle_identifiers": meta.num_puzzle_identifiers}
    return checked_model_config(cfg.flavour, {**cfg.model, **overrides, **sizes}, where=f"run {cfg.name!r}: model")


def resolve_data(cfg: TrainConfig, base: Path | None = None) -> str:
    """The dataset as an absolute local path or an s3:// / gs:// URI (a ``str``: ``Path`` mangles URIs), checked
    for a complete dataset (its metadata.json, written last)."""
    from pipeline.core import storage

    path = cfg.data
    if not storage.is_remote(path) and not Path(path).is_absolute():
        path = str((base or Path.cwd()) / path)
    path = storage.normalize(path)
    if not storage.is_file(storage.join(path, "metadata.json")):
        raise FileNotFoundError(f"dataset not found: {path} has no metadata.json (build it with `hrm data build`)")
    return path


def storage_path_problems(path: str) -> list[str]:
    """Runs live in a local folder (a mount every node shares, on a cluster) or under an s3:// / gs:// prefix."""
    from pipeline.train.run_folder import location_problems

    return location_problems(path)


def resolve_tracking_uri(cfg: TrainConfig) -> str:
    from pipeline.tracking.runs import store_uri

    return store_uri(cfg.tracking.tracking_uri)
