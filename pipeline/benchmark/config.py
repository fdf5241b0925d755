"""The reasoning benchmark's configuration: a typed dataclass (the defaults) read from a YAML file that names it.

    name: reasoning
    data_config: data-sudoku-6x6-minimal.yaml       # relative paths: from this file's folder
    variants: {hrm: bench-reasoning-hrm.yaml, trm-mlp: bench-reasoning-trm-mlp.yaml}
    minutes: 60

Every variant is a training run file (``hrm train``'s format); the benchmark sets its data, its name and the time
budget (``max_minutes`` = ``minutes``, ``eval_minutes``), the rest is the variant's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config_io import from_dict
from pipeline.core.names import name_problems
from pipeline.core.yaml_io import read_mapping


@dataclass(kw_only=True)
class ReasoningBench:
    name: str = "reasoning"  # runs are named <name>-<variant>-<time>
    data_config: str = "data-sudoku-6x6-minimal.yaml"  # the dataset (hrm data build's format)
    variants: dict[str, str] = field(default_factory=dict)  # label -> training run file, in report order
    minutes: float = 60.0  # training time per variant (evaluations not counted)
    eval_minutes: float = 5.0  # held-out exact accuracy every this many minutes of training
    eval_limit: int | None = None  # test puzzles per evaluation (None: the whole test split)
    deeper: int = 2  # inference-time depth on top: this many times M_max segments
    votes: int = 8  # ... and this many symmetry votes (hrm.vote)
    seed: int = 0
    out: str = "runs/bench"  # reports go to <out>/<name>-<time>/ (report.md, curves.png, curves.json)
    storage_path: str = "runs"  # the variants' Ray Train run folders
    experiment: str = "hrm-bench"  # MLflow experiment: a parent run per benchmark, a child per variant

    def __post_init__(self) -> None:
        problems = name_problems(self.name)
        if not self.variants:
            problems.append("variants is empty: name at least one training run file")
        for label in self.variants:
            problems += name_problems(label, "a variant's label")
        for key in ("minutes", "eval_minutes"):
            if not 0 < getattr(self, key) < math.inf:
                problems.append(f"{key} must be a number of minutes > 0, got {getattr(self, key)}")
        if self.eval_minutes > self.minutes:
            problems.append(f"eval_minutes {self.eval_minutes} is longer than the budget, minutes {self.minutes}")
        if self.deeper < 1 or self.votes < 1:
            problems.append(f"deeper and votes must be >= 1, got {self.deeper} and {self.votes}")
        if self.eval_limit is not None and self.eval_limit < 1:
            problems.append(f"eval_limit must be >= 1 (or null: the whole test split), got {self.eval_limit}")
        if problems:
            raise ValueError("invalid benchmark config: " + "; ".join(problems))

    def path(self, relative: str, base: Path) -> Path:
        """A file the config names (data_config, a variant's run file): as given when absolute, else from ``base``
        (the config file's folder)."""
        given = Path(relative)
        return given if given.is_absolute() else base / given


def load_bench(path: str | Path, **overrides) -> ReasoningBench:
    """Read a benchmark YAML file, with ``overrides`` (None values ignored) on top; unknown keys and wrong types
    are refused, naming the key."""
    data = read_mapping(path, "benchmark config")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(ReasoningBench, data, where=str(path))
