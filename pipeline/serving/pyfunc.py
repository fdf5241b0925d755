"""HRM as an MLflow pyfunc: puzzles in (strings or grids, per task), solutions out with halting steps and confidence.

Each solution comes back twice: ``solution`` in the task's compact input format (Sudoku: one line of cells, ``.``
blank; Maze and ARC: one line of cells per row), so it can be fed back in, and ``grid``, the JSON list of rows in
the task's alphabet (Sudoku digits, 0 blank; Maze characters; ARC colours; ``null`` for a malformed ARC canvas).

Per request (the signature's params, so ``mlflow models serve`` takes them in a request's ``params``): ``adaptive``,
``max_steps`` (segments at the most, default M_max: more is inference-time depth) and ``votes`` (answers voted over
that many symmetries of each puzzle, hrm.vote; default 1). Out of range: a 400 starting ``bad <param>: ``. A model
logged before max_steps / votes existed has only ``adaptive`` in its signature; MLflow drops the others.

Loads a plain state dict + config with the code serving imports shipped alongside (``pipeline.serving.code``), so
no pickled model or ``torch.export`` graph is involved (the halting loop is data-dependent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

MODEL_FILE = Path(__file__).with_name("model_file.py")  # builds an HRMSolver when MLflow loads the model
COLUMNS = ["solution", "grid", "steps", "confidence"]


def signature():
    """Input: a ``puzzle`` column (text or JSON grids); output: solution, grid, halting steps, confidence;
    params (per request): adaptive, max_steps (null: the model's M_max), votes (1: no voting)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "puzzle")]),
        outputs=Schema([ColSpec("string", "solution"), ColSpec("string", "grid"), ColSpec("long", "steps"),
                        ColSpec("double", "confidence")]),
        params=ParamSchema([ParamSpec("adaptive", "boolean", True), ParamSpec("max_steps", "long", None),
                            ParamSpec("votes", "long", 1)]))


def _as_text(item: Any) -> str:
    """A puzzle as the task's text: a grid (rows of cells, or its JSON) becomes one line of cells per row."""
    if isinstance(item, str) and item.lstrip().startswith("["):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as err:
            raise ValueError(f"a puzzle starting with '[' must be a JSON grid: {err}") from err
    if isinstance(item, str):
        return item
    rows = item.tolist() if hasattr(item, "tolist") else item
    if isinstance(rows, list) and rows and all(isinstance(r, (list, tuple, str)) for r in rows):
        return "\n".join("".join(str(c) for c in row) for row in rows)
    raise ValueError(f"a puzzle must be a string or a grid (list of rows), got {type(item).__name__}")


def compact(task, tokens) -> str:
    """A solution in the task's compact input format (what ``task.parse`` reads back)."""
    if task.name == "sudoku":
        return "".join("." if v == 0 else str(int(v)) for v in task.decode(tokens).ravel())
    return task.render(tokens)  # Maze and ARC render one line of cells per row: their input format


def grid_json(task, tokens) -> str:
    """A solution as a JSON list of rows in the task's alphabet; ``null`` when the tokens hold no grid."""
    try:
        grid = task.decode(tokens)
    except ValueError:
        return "null"
    return json.dumps(grid.tolist())


class BadRequest(MlflowException):
    """An MLflow 400 (INVALID_PARAMETER_VALUE) whose message stays what it was made with: MLflow's scoring server
    rewrites every prediction error's message to ``Failed to predict data '<the whole request>'. Error: ...``,
    burying what is wrong."""

    def __init__(self, message: str):
        super().__init__(message, INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._first

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_first"):  # MlflowException.__init__ sets it first; later writes are ignored
            self._first = value


class HRMSolver(mlflow.pyfunc.PythonModel):
    """The served model: puzzles in (a ``puzzle`` column), the model's answers out (``COLUMNS``)."""

    def load_context(self, context) -> None:
        """Load the exported model (artifact ``export``) on CPU, and its task."""
        from hrm.tasks import make_task
        from pipeline.train.checkpoint import load_export

        # Served on CPU, in the dtype that suits this host whatever the model was trained in.
        self.model, self.info = load_export(Path(context.artifacts["export"]))
        self.task = make_task(self.info["task"], self.info.get("task_args"))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Solve each puzzle (a DataFrame's ``puzzle`` column, a list, a dict or one puzzle); ``params``:
        ``adaptive`` (stop where the model halts, default true), ``max_steps`` (segments at most, default M_max),
        ``votes`` (answers voted over this many symmetries of each puzzle, hrm.vote; default 1). A malformed puzzle
        or param is a BadRequest naming it."""
        from hrm.solve import solve

        if isinstance(model_input, pd.DataFrame):
            if "puzzle" not in model_input.columns:
                raise BadRequest(f"no column 'puzzle' in the input (got {list(model_input.columns)})")
            items = list(model_input["puzzle"])
        elif isinstance(model_input, (list, tuple)):
            items = list(model_input)
        elif isinstance(model_input, dict) and "puzzle" in model_input:
            items = list(model_input["puzzle"]) if isinstance(model_input["puzzle"], list) else [model_input["puzzle"]]
        else:
            items = [model_input]
        adaptive, max_steps, votes = self._params(params)
        texts = []
        for i, item in enumerate(items):
            try:
                text = _as_text(item)
                self.task.parse(text)
            except ValueError as err:
                where = f"bad puzzle {i + 1} of {len(items)}" if len(items) > 1 else "bad puzzle"
                raise BadRequest(f"{where}: {err}") from err
            texts.append(text)
        solutions = solve(self.model, self.task, texts, adaptive=adaptive, max_steps=max_steps, votes=votes)
        return pd.DataFrame({"solution": [compact(self.task, s.tokens) for s in solutions],
                             "grid": [grid_json(self.task, s.tokens) for s in solutions],
                             "steps": [s.steps for s in solutions],
                             "confidence": [s.confidence for s in solutions]}, columns=COLUMNS)

    def _params(self, params: dict[str, Any] | None) -> tuple[bool, int | None, int]:
        """(adaptive, max_steps, votes) of a request's ``params`` (absent: today's defaults); BadRequest
        ``bad <param>: …`` when one is out of range."""
        params = params or {}
        adaptive = bool(params.get("adaptive", True))
        max_steps = params.get("max_steps")
        votes = params.get("votes")
        try:
            max_steps = None if max_steps is None else int(max_steps)
            votes = 1 if votes is None else int(votes)
        except (TypeError, ValueError) as err:
            raise BadRequest(f"bad params: max_steps and votes must be integers ({err})") from err
        from hrm.vote import problem as vote_problem

        problem = vote_problem(self.task, votes=votes, max_steps=max_steps)
        if problem is not None:
            raise BadRequest(f"bad {problem[0]}: {problem[1]}")
        return adaptive, max_steps, votes
