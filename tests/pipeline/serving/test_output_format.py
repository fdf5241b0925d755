"""The served answer's two forms for every task: ``solution`` in the task's compact input format (it parses back to
the same tokens) and ``grid``, a JSON list of rows in the task's alphabet; and the 400 that starts with what is
wrong (MLflow's scoring server prefixes its own words to other errors' messages)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrm.tasks.arc import ArcTask
from hrm.tasks.maze import MazeTask
from hrm.tasks.sudoku import SudokuTask
from pipeline.serving.pyfunc import BadRequest, compact, grid_json


def test_sudoku_is_one_line_of_cells():
    task = SudokuTask((2, 2))
    tokens = task.parse("1.3.\n....\n2...\n4..1")
    assert compact(task, tokens) == "1.3.....2...4..1"
    assert json.loads(grid_json(task, tokens)) == [[1, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 1]]
    assert np.array_equal(task.parse(compact(task, tokens)), tokens)


def test_maze_is_its_rows_of_characters():
    task = MazeTask(size=5, min_path=1)
    text = "#####\n#S  #\n# # #\n#  G#\n#####"
    tokens = task.parse(text)
    assert compact(task, tokens) == text
    assert json.loads(grid_json(task, tokens))[1] == ["#", "S", " ", " ", "#"]
    assert np.array_equal(task.parse(compact(task, tokens)), tokens)


def test_arc_is_its_rows_of_colours_and_null_when_malformed():
    task = ArcTask()
    tokens = task.parse("120\n345")
    assert compact(task, tokens) == "120\n345"
    assert json.loads(grid_json(task, tokens)) == [[1, 2, 0], [3, 4, 5]]
    assert grid_json(task, np.zeros(task.seq_len, np.uint8)) == "null"  # no grid in an all-PAD canvas


def test_a_bad_request_keeps_its_message():
    err = BadRequest("bad puzzle: expected 16 cells, got 4")
    err.message = f"Failed to predict data '...'. \nError: {err.message}"  # what the scoring server does
    assert err.message == "bad puzzle: expected 16 cells, got 4"
    assert json.loads(err.serialize_as_json())["message"] == "bad puzzle: expected 16 cells, got 4"
    assert err.get_http_status_code() == 400


@pytest.mark.parametrize("puzzles, message", [
    (["1234"], "bad puzzle: expected 16 cells, got 4"),
    (["1.3.....2...4..1", "[[1, 2]"], "bad puzzle 2 of 2: a puzzle starting with '[' must be a JSON grid"),
    (["[[-1, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 1]]"],  # was read as 1: the '-' was dropped
     "bad puzzle: row 1, column 1: a cell is one character or a whole number 0-9, got -1"),
    (["[[1, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 10]]"], "bad puzzle: row 4, column 4: a cell is one"),
    (["[[1, true, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 1]]"],
     "bad puzzle: row 1, column 2: a cell is one character or a whole number 0-9, got true"),
    (["[[1, [0], 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 1]]"], "bad puzzle: row 1, column 2: a cell is one"),
    (["[" * 100_000 + "]" * 100_000], "bad puzzle: a puzzle starting with '[' must be a JSON grid (a list of rows), "
                                      "not lists nested hundreds deep"),  # was an HTTP 500 (RecursionError)
])
def test_predict_names_the_bad_puzzle(puzzles, message):
    import pandas as pd
    import torch
    from mlflow.exceptions import MlflowException

    from hrm.config import model_config
    from hrm.model import HRM
    from pipeline.serving.pyfunc import HRMSolver

    solver = HRMSolver()
    solver.task = SudokuTask((2, 2))
    torch.manual_seed(0)
    solver.model = HRM(model_config("debug", vocab_size=solver.task.vocab_size, seq_len=16, halt_max_steps=2,
                                    num_puzzle_identifiers=1, forward_dtype="float32")).eval()
    with pytest.raises(MlflowException) as caught:
        solver.predict(None, pd.DataFrame({"puzzle": puzzles}))
    assert caught.value.message.startswith(message), caught.value.message
    out = solver.predict(None, pd.DataFrame({"puzzle": ["1.3.....2...4..1"]}))
    assert list(out.columns) == ["solution", "grid", "steps", "confidence", "valid"]


@pytest.mark.parametrize("task", [SudokuTask((2, 2)), MazeTask(size=5, min_path=1), ArcTask()],
                         ids=["sudoku", "maze", "arc"])
def test_valid_is_true_false_or_null_in_the_json_answer(task, monkeypatch):
    """`valid` reaches the client as JSON true, false or null (ARC: the task cannot tell), as MLflow's scoring
    server writes the predictions."""
    import io

    import pandas as pd
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from hrm.solve import Solution
    from pipeline.serving.pyfunc import HRMSolver

    solver = HRMSolver()
    solver.task = task
    solver.model = type("M", (), {"config": type("C", (), {"halt_max_steps": 2})()})()
    verdicts = [True, False] if task.follows_rules(np.zeros(task.seq_len, np.uint8),
                                                   np.zeros(task.seq_len, np.uint8)) is not None else [None, None]
    tokens = np.zeros(task.seq_len, np.uint8)
    monkeypatch.setattr(solver, "_solve", lambda texts, began, **kw: [
        Solution(solution="", tokens=tokens, steps=1, confidence=0.5, valid=v) for v in verdicts])
    monkeypatch.setattr(task, "parse", lambda text: tokens)
    out = solver.predict(None, pd.DataFrame({"puzzle": ["x", "y"]}))
    buffer = io.StringIO()
    predictions_to_json(out, buffer)
    assert [p["valid"] for p in json.loads(buffer.getvalue())["predictions"]] == verdicts
