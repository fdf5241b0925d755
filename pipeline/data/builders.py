"""The registry of dataset builders: each task's ``Builder`` by name (``hrm data build sudoku|maze|arc``)."""

from __future__ import annotations

from pipeline.data.build_arc import ArcBuilder
from pipeline.data.build_maze import MazeBuilder
from pipeline.data.build_sudoku import SudokuBuilder
from pipeline.data.builder import Builder

BUILDERS: dict[str, type[Builder]] = {"sudoku": SudokuBuilder, "maze": MazeBuilder, "arc": ArcBuilder}


def make_builder(cfg, skip_invalid: bool = False) -> Builder:
    """The builder of ``cfg.task`` (a ``pipeline.data.config.DataConfig``); ValueError for an unknown task."""
    if cfg.task not in BUILDERS:
        raise ValueError(f"unknown task {cfg.task!r}")
    return BUILDERS[cfg.task](cfg, skip_invalid)
