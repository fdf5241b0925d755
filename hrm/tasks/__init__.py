"""Puzzle tasks: Sudoku, Maze and ARC, behind one interface (``hrm.tasks.base.Task``)."""

from hrm.tasks.sudoku import SudokuTask

TASKS = {"sudoku": SudokuTask}
