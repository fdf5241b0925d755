"""Puzzle tasks: Sudoku, Maze and ARC, behind one interface (``hrm.tasks.base.Task``)."""
