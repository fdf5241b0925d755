"""The data configuration: the single source of defaults for ``hrm data build``.

A YAML file names a run and overrides defaults, e.g.::

    name: sudoku-demo
    task: sudoku
    sudoku: {box: [2, 3], count: 600, min_rating: 0, augmentations: 8}

Only the section of the chosen task (``sudoku``, ``maze`` or ``arc``) is used. The *fingerprint* hashes what
decides the output bytes (task, its section, seed, rows_per_file, the format version); ``name`` and ``out`` do not
count, so the same dataset built under another name is recognised as identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config_io import from_dict, set_dotted, to_dict
from pipeline.core.names import name_problems
from pipeline.core.yaml_io import read_mapping

FORMAT_VERSION = 1
TASK_NAMES = ("sudoku", "maze", "arc")


@dataclass(kw_only=True)
class SudokuData:
    """Sudoku: generated with our numba generator (``source: generate``) or imported from CSV (``source: csv``)."""

    source: Literal["generate", "csv"] = "generate"
    box: tuple[int, int] = (3, 3)  # box rows × box columns: (2, 2) 4×4, (2, 3) 6×6, (3, 3) 9×9
    count: int = 1000  # generate: unique originals (train + test) after de-duplication by canonical form
    min_rating: int = 10  # keep puzzles with at least this many failed guesses (generate and CSV)
    givens: int | None = None  # generate: reveal solution cells until each puzzle shows this many (easier puzzles)
    test_fraction: float = 0.1  # share of originals in the test split (generate, or CSV without csv_test)
    augmentations: int = 1000  # training variants per original, variant 0 = the original
    test_augmentations: int = 1  # test variants per original
    chunk_size: int = 50  # originals per generation chunk (fixed by the config, not by the workers)
    csv_train: str | None = None  # source: csv -- a source,question,answer,rating file
    csv_test: str | None = None  # the published test CSV; None = split csv_train (no symmetry leak)
    subsample: int | None = None  # keep this many training rows (uniformly, from the seed)
    test_subsample: int | None = None  # keep this many test rows of csv_test
    check_unique: bool = True  # CSV import: reject unsolvable / multi-solution puzzles
    import_chunk: int = 20000  # CSV import: originals per parallel check chunk


@dataclass(kw_only=True)
class MazeData:
    """Maze-Hard: ``train_count`` + ``test_count`` generated mazes (as the paper: 1000 + 1000), or a CSV import."""

    source: Literal["generate", "csv"] = "generate"
    size: int = 30
    min_path: int | None = None  # None = hrm.tasks.maze.default_min_path(size) (110 at 30×30)
    train_count: int = 1000
    test_count: int = 1000
    augmentations: int = 1  # dihedral variants per training maze (1..8), variant 0 = the original
    chunk_size: int = 25  # mazes per generation chunk
    csv_train: str | None = None
    csv_test: str | None = None
    subsample: int | None = None  # training rows kept from csv_train
    import_chunk: int = 5000


@dataclass(kw_only=True)
class ArcData:
    """ARC: training sources (all pairs) and evaluation sources (demonstrations in train, test pairs scored)."""

    train_sources: list[str] = field(default_factory=lambda: ["arc-agi-1/training"])
    eval_sources: list[str] = field(default_factory=lambda: ["arc-agi-1/evaluation"])
    variants: int = 1000  # distinct dihedral × colour variants per task (variant 0 = identity)
    test_variants: int | None = None  # variants of each evaluation task in the test split; None = variants
    translate: bool = True  # random translation of training examples
    tasks_per_chunk: int = 8
    max_tasks: int | None = None  # keep the first N task ids (sorted) of each source: quick runs and tests


@dataclass(kw_only=True)
class DataConfig:
    name: str = "dataset"
    task: Literal["sudoku", "maze", "arc"] = "sudoku"
    out: str | None = None  # output folder or s3:// / gs:// prefix; None = data/<name>
    seed: int = 0
    rows_per_file: int = 100_000  # upper bound on rows per Parquet file (Sudoku, Maze)
    sudoku: SudokuData = field(default_factory=SudokuData)
    maze: MazeData = field(default_factory=MazeData)
    arc: ArcData = field(default_factory=ArcData)

    def __post_init__(self) -> None:
        problems = []
        s, m, a = self.sudoku, self.maze, self.arc
        problems += name_problems(self.name)
        if self.rows_per_file < 1:
            problems.append("rows_per_file must be >= 1")
        if self.task == "sudoku":
            if s.count < 1 or s.augmentations < 1 or s.test_augmentations < 1 or s.chunk_size < 1:
                problems.append("sudoku.count, augmentations, test_augmentations, chunk_size must be >= 1")
            if not 0.0 <= s.test_fraction < 1.0:
                problems.append(f"sudoku.test_fraction must be in [0, 1), got {s.test_fraction}")
            cells = (s.box[0] * s.box[1]) ** 2
            if s.givens is not None and not 0 < s.givens < cells:
                problems.append(f"sudoku.givens must be in 1..{cells - 1} for box {tuple(s.box)}, got {s.givens}")
            if s.source == "csv" and not s.csv_train:
                problems.append("sudoku.source csv needs sudoku.csv_train")
            if s.import_chunk < 1:
                problems.append("sudoku.import_chunk must be >= 1")
        if self.task == "maze":
            if not 1 <= m.augmentations <= 8:
                problems.append(f"maze.augmentations must be in 1..8 (dihedral variants), got {m.augmentations}")
            if m.size < 2 or m.chunk_size < 1 or m.train_count < 1 or m.test_count < 0 or m.import_chunk < 1:
                problems.append("maze.size >= 2, chunk_size, train_count, import_chunk >= 1, test_count >= 0")
            if m.source == "csv" and not m.csv_train:
                problems.append("maze.source csv needs maze.csv_train")
        if self.task == "arc":
            if a.variants < 1 or (a.test_variants is not None and a.test_variants < 1) or a.tasks_per_chunk < 1:
                problems.append("arc.variants, test_variants, tasks_per_chunk must be >= 1")
            if not a.train_sources:
                problems.append("arc.train_sources is empty")
        if problems:
            raise ValueError("invalid data config: " + "; ".join(problems))

    @property
    def section(self) -> Any:
        return getattr(self, self.task)

    def out_dir(self) -> str | Path:
        """Where the dataset goes: ``out`` (a folder, or an s3:// / gs:// URI kept as ``str``) or data/<name>."""
        from pipeline.core.storage import is_remote

        if self.out and is_remote(self.out):
            return self.out
        return Path(self.out) if self.out else Path("data") / self.name


def load_config(path: str | Path | None = None, *, task: str | None = None, sets: dict[str, Any] | None = None,
                **overrides: Any) -> DataConfig:
    """Read a YAML data config (None = defaults), then ``sets`` (dotted keys: ``--set sudoku.count=100``);
    ``task`` must agree with the file's ``task`` when both are given.

    Unknown keys and wrong types raise ``ValueError``/``TypeError`` naming the file and the dotted key.
    """
    where = str(path) if path is not None else "data config"
    raw = read_mapping(path, "data config")
    for dotted, value in (sets or {}).items():
        set_dotted(raw, dotted, value)
    if task is not None:
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r}; choose one of {list(TASK_NAMES)}")
        if "task" in raw and raw["task"] != task:
            raise ValueError(f"{where}: config is for task {raw['task']!r}, not {task!r}")
        raw = {**raw, "task": task}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(DataConfig, raw, where=where)


def identity(cfg: DataConfig) -> dict[str, Any]:
    """What decides the output bytes: hashed into the fingerprint, stored in metadata.json."""
    return {"format": FORMAT_VERSION, "task": cfg.task, "seed": cfg.seed, "rows_per_file": cfg.rows_per_file,
            cfg.task: to_dict(cfg.section)}


def fingerprint(cfg: DataConfig) -> str:
    text = json.dumps(identity(cfg), sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def config_dict(cfg: DataConfig) -> dict[str, Any]:
    """The full config as plain JSON-able data (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


__all__ = ["DataConfig", "SudokuData", "MazeData", "ArcData", "load_config", "fingerprint", "identity",
           "config_dict", "FORMAT_VERSION", "TASK_NAMES"]
