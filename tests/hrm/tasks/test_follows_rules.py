"""`Task.follows_rules`: an answer checked by the puzzle's own rules (reported beside it as `valid`), right answers
true, wrong ones false for each way of being wrong; ARC has no such rules (None)."""

import numpy as np
import pytest

from hrm.tasks import make_task
from hrm.tasks.maze import PATH, WALL
from hrm.tasks.maze import generate_many as mazes
from hrm.tasks.sudoku_solver import generate_many as sudokus


@pytest.mark.parametrize("box", [(2, 2), (2, 3), (3, 3)])
def test_sudoku_right_and_wrong_answers(box):
    task = make_task("sudoku", {"box": list(box)})
    puzzles, solutions, _, _ = sudokus(3, 2, box)
    for p, s in zip(puzzles, solutions):
        inputs, labels = task.encode((p, s))
        assert task.follows_rules(labels, inputs) is True
        swapped = labels.copy().reshape(task.n, task.n)
        swapped[0, [0, 1]] = swapped[0, [1, 0]]  # two cells of a row exchanged: their columns now repeat a digit
        assert task.follows_rules(swapped.reshape(-1), inputs) is False
        relabelled = np.where(labels == 2, 3, np.where(labels == 3, 2, labels))  # a valid grid, other givens
        assert task.follows_rules(relabelled, inputs) is False
        blank = labels.copy()
        blank[np.flatnonzero(inputs == 1)[0]] = 1  # a cell left blank
        assert task.follows_rules(blank, inputs) is False


def test_maze_right_and_wrong_answers():
    task = make_task("maze", {"size": 10, "min_path": 12})
    questions, answers = mazes(5, 3, 10, 12)
    for q, a in zip(questions, answers):
        inputs, labels = q.reshape(-1).astype(np.uint8), a.reshape(-1).astype(np.uint8)
        assert task.follows_rules(labels, inputs) is True
        broken = labels.copy()
        broken[np.flatnonzero(labels == PATH)[0]] = inputs[np.flatnonzero(labels == PATH)[0]]  # a gap in the path
        assert task.follows_rules(broken, inputs) is False
        walled = labels.copy()
        walled[np.flatnonzero(inputs == WALL)[0]] = PATH  # an extra cell, through a wall
        assert task.follows_rules(walled, inputs) is False


def test_arc_cannot_tell():
    task = make_task("arc", {})
    assert task.follows_rules(np.zeros(900, np.uint8), np.zeros(900, np.uint8)) is None
