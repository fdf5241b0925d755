"""Small real datasets of each task (built by the same Ray Data pipeline as ``hrm data build``) and pictures of their
examples and augmentations (notebooks/01_puzzles.ipynb)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.draw import draw, figure

log = logging.getLogger(__name__)

# Tiny but complete: every task's real builder, a few seconds each on 2 cores.
SMALL: dict[str, dict[str, Any]] = {
    "sudoku": {"name": "nb-sudoku", "task": "sudoku", "seed": 0,
               "sudoku": {"box": [2, 3], "count": 40, "min_rating": 0, "test_fraction": 0.25, "augmentations": 4,
                          "chunk_size": 20}},
    "maze": {"name": "nb-maze", "task": "maze", "seed": 0,
             "maze": {"size": 12, "min_path": 20, "train_count": 4, "test_count": 2, "augmentations": 4,
                      "chunk_size": 2}},
    "arc": {"name": "nb-arc", "task": "arc", "seed": 0,
            "arc": {"train_sources": ["arc-agi-1/training"], "eval_sources": ["arc-agi-1/evaluation"],
                    "variants": 4, "max_tasks": 2, "tasks_per_chunk": 1}},
}


def build_small(task: str, out_dir: str | Path) -> Path:
    """Build (or reuse, when already there) the small dataset of ``task`` under ``out_dir``; its folder."""
    from pipeline.core.config_io import from_dict
    from pipeline.data.build import build_dataset
    from pipeline.data.config import DataConfig

    raw = SMALL[task]
    cfg = from_dict(DataConfig, raw, where=f"SMALL[{task!r}]")
    result = build_dataset(cfg, Path(out_dir) / raw["name"])
    log.info("%s: train %d rows, test %d rows", result.path, result.counts["train"], result.counts["test"])
    return result.path


def rows(path: str | Path, split: str = "train", limit: int | None = None) -> dict[str, np.ndarray]:
    """A split's arrays with ids; labels with the ignored label (-100) mapped back to token 0 for drawing."""
    from pipeline.data.loader import IGNORE_LABEL, load_split

    data = load_split(path, split, limit=limit, with_ids=True)
    data["labels"] = np.where(data["labels"] == IGNORE_LABEL, 0, data["labels"])
    return data


def draw_examples(path: str | Path, split: str = "test", n: int = 3):
    """The first ``n`` examples of a split: puzzle and answer side by side (one row each)."""
    from pipeline.data.meta import read_metadata

    meta = read_metadata(path)
    task = meta.make_task()
    data = rows(path, split, limit=n)
    count = len(data["inputs"])
    fig, axes = figure(max(count, 1), 2, title=f"{meta.task}: {split} examples")
    for i in range(count):
        draw(axes[i, 0], task, data["inputs"][i], title=f"example {data['example_ids'][i]}: puzzle")
        draw(axes[i, 1], task, data["labels"][i], givens=data["inputs"][i], title="answer")
    fig.tight_layout()
    return fig


def variant_rows(path: str | Path, group: int = 0, n: int = 4) -> list[int]:
    """Row indexes (train split) of up to ``n`` variants of original ``group``: variant 0 is the original.

    ARC variants are whole-task transforms with their own puzzle id: the first row of each id is shown."""
    data = rows(path, "train")
    picked, seen = [], set()
    for index in np.flatnonzero(data["group_ids"] == group):
        key = int(data["puzzle_ids"][index]) if data["puzzle_ids"].any() else int(index)
        if key not in seen:
            seen.add(key)
            picked.append(int(index))
        if len(picked) == n:
            break
    return picked


def draw_variants(path: str | Path, group: int = 0, n: int = 4):
    """Augmentations of one original: puzzles on the top row, their answers below."""
    from pipeline.data.meta import read_metadata

    meta = read_metadata(path)
    task = meta.make_task()
    data = rows(path, "train")
    picked = variant_rows(path, group, n)
    if not picked:
        raise ValueError(f"{path}: no training rows of group {group}")
    fig, axes = figure(2, len(picked), title=f"{meta.task}: augmentations of original {group}")
    for col, index in enumerate(picked):
        pid = int(data["puzzle_ids"][index])
        name = meta.puzzle_identifiers[pid] if meta.puzzle_identifiers else f"variant {col}"
        draw(axes[0, col], task, data["inputs"][index], title=name)
        draw(axes[1, col], task, data["labels"][index], givens=data["inputs"][index])
    fig.tight_layout()
    return fig
