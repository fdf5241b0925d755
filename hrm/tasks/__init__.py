"""Puzzle tasks: Sudoku, Maze and ARC, behind one interface (``hrm.tasks.base.Task``)."""

from hrm.tasks.arc import ArcTask
from hrm.tasks.maze import MazeTask
from hrm.tasks.sudoku import SudokuTask

TASKS = {"sudoku": SudokuTask, "maze": MazeTask, "arc": ArcTask}


def make_task(name: str, args: dict | None = None):
    """A task by its registered name, with its constructor arguments (as stored in a dataset's metadata)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**(args or {}))
