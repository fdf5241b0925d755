"""What a sweep is made of once checked (``Plan``), how it ends (``SweepOutcome``), and where it lies.

Folder of a sweep (``<storage_path>/<name>/``): ``sweep_config.json`` and ``base_train_config.json`` (what a resume
uses), ``mlflow_parent_run_id.txt``, ``tune/`` (Ray Tune's experiment), ``trials/<name>-<trial id>/`` (each trial's
Train run and MLflow run id: a retried or resumed trial continues its own run), ``report/``, ``time_spent.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.train.config import TrainConfig
from pipeline.tune.config import SweepConfig
from pipeline.tune.report import TrialRow
from pipeline.tune.space import grid_size

SWEEP_FILE, BASE_FILE, PARENT_FILE = "sweep_config.json", "base_train_config.json", "mlflow_parent_run_id.txt"


@dataclass
class Plan:
    """What ``prepare_sweep`` made of a sweep, checked: what ``run_sweep`` runs."""

    sweep: SweepConfig
    base: TrainConfig  # data, storage_path (the trials' folder) and tracking_uri made absolute
    folder: Path
    meta: Any
    max_t: float  # ASHA's max_t, in its time_attr's unit


@dataclass
class SweepOutcome:
    """A sweep's end: its MLflow run, its trials best first, its report and registered model (or interrupted)."""

    parent_run_id: str
    interrupted: bool
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    report: list[Path] = field(default_factory=list)
    model_uri: str | None = None
    champion: bool = False


def sweep_folder(sweep: SweepConfig) -> Path:
    """The sweep's folder: ``<storage_path>/<name>``, absolute."""
    return Path(sweep.storage_path).resolve() / sweep.name


def planned_trials(sweep: SweepConfig) -> int:
    """The trials the sweep runs: the grid's size (1 without grid entries) times num_samples."""
    return grid_size(sweep.space) * sweep.num_samples


def trial_name(sweep: str, trial_id: str) -> str:
    """A trial's run name (its Train run folder, its MLflow run): ``<sweep>-<trial id>``."""
    return f"{sweep}-{trial_id}"
