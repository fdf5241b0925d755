"""HRM as an MLflow pyfunc: puzzles in (strings or grids, per task), solutions out with halting steps and confidence.

Each solution comes back twice: ``solution`` in the task's compact input format (Sudoku: one line of cells, ``.``
blank; Maze and ARC: one line of cells per row), so it can be fed back in, and ``grid``, the JSON list of rows in
the task's alphabet (Sudoku digits, 0 blank; Maze characters; ARC colours; ``null`` for a malformed ARC canvas).

Per request (the signature's params, so ``mlflow models serve`` takes them in a request's ``params``): ``adaptive``,
``max_steps`` (segments at the most, default M_max: more is inference-time depth) and ``votes`` (answers voted over
that many symmetries of each puzzle, hrm.vote; default 1). Out of range: a 400 starting ``bad <param>: ``. A model
logged before max_steps / votes existed has only ``adaptive`` in its signature; MLflow drops the others.

Limits, read from the environment when the model loads (``hrm serve --max-puzzles / --max-work / --batch`` set
them): ``HRM_SERVE_MAX_PUZZLES`` puzzles per request at most (default 2000; more: a 413 ``too many puzzles: …``,
answered before any puzzle is parsed); ``HRM_SERVE_MAX_WORK`` row-segments per request at most, puzzles × votes ×
segments (max_steps, default the model's M_max; default 65,536; more: a 413 ``too much work: …``, before any puzzle is
solved), the bound on a request's time; ``HRM_SERVE_BATCH`` rows (one puzzle under one voted symmetry) through the
model at a time, the bound on its memory whatever the puzzles, votes and segments asked for (default: 20,736 tokens'
worth, ``BATCH_TOKENS``: 256 rows of 9×9 Sudoku, 23 of a 30×30 maze or ARC grid; memory per row: README, *Serving
budget*); and MLflow's
``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`` (seconds; MLflow's server always sets it, default 60): no segment starts
once a request has run that long (MLflow has answered 504 by then, but its worker thread would otherwise compute the
whole request). Unset, as where a model is loaded in a program of one's own, nothing is cut short. The bytes of a
request and the depth of its JSON are bounded before MLflow reads them (``pipeline.serving.guard``).

Loads a plain state dict + config with the code serving imports shipped alongside (``pipeline.serving.code``), so
no pickled model or ``torch.export`` graph is involved (the halting loop is data-dependent).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    DEADLINE_EXCEEDED,
    INVALID_PARAMETER_VALUE,
    REQUEST_LIMIT_EXCEEDED,
)

MODEL_FILE = Path(__file__).with_name("model_file.py")  # builds an HRMSolver when MLflow loads the model
COLUMNS = ["solution", "grid", "steps", "confidence", "valid"]
MAX_PUZZLES_ENV, MAX_WORK_ENV, BATCH_ENV = "HRM_SERVE_MAX_PUZZLES", "HRM_SERVE_MAX_WORK", "HRM_SERVE_BATCH"
TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"  # MLflow's: the scoring server's 504 after that many seconds
DEFAULT_MAX_PUZZLES, DEFAULT_MAX_WORK = 2000, 65_536
BATCH_TOKENS = 256 * 81  # the default rows at a time: this many tokens' worth (256 rows of 9×9 Sudoku)

logger = logging.getLogger(__name__)


def signature():
    """Input: a ``puzzle`` column (text or JSON grids); output: solution, grid, halting steps, confidence, valid (the
    puzzle's own rules: true or false; null where the task cannot tell, ARC); params (per request): adaptive,
    max_steps (null: the model's M_max), votes (1: no voting)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "puzzle")]),
        outputs=Schema([ColSpec("string", "solution"), ColSpec("string", "grid"), ColSpec("long", "steps"),
                        ColSpec("double", "confidence"), ColSpec("boolean", "valid", required=False)]),
        params=ParamSchema([ParamSpec("adaptive", "boolean", True), ParamSpec("max_steps", "long", None),
                            ParamSpec("votes", "long", 1)]))


def _as_text(item: Any) -> str:
    """A puzzle as the task's text: a grid (rows of cells, or its JSON) becomes one line of cells per row. A cell is
    one character or a whole number 0-9 (``-1`` is refused, not read as the ``1`` its digits spell)."""
    if isinstance(item, str) and item.lstrip().startswith("["):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as err:
            raise ValueError(f"a puzzle starting with '[' must be a JSON grid: {err}") from err
        except RecursionError:
            raise ValueError("a puzzle starting with '[' must be a JSON grid (a list of rows), not lists nested "
                             "hundreds deep") from None
    if isinstance(item, str):
        return item
    rows = item.tolist() if hasattr(item, "tolist") else item
    if isinstance(rows, list) and rows and all(isinstance(r, (list, tuple, str)) for r in rows):
        return "\n".join("".join(_cell(c, r, k) for k, c in enumerate(row)) for r, row in enumerate(rows))
    raise ValueError(f"a puzzle must be a string or a grid (list of rows), got {type(item).__name__}")


def _cell(value: Any, row: int, column: int) -> str:
    """One cell of a grid as its character: a one-character string, or a whole number 0-9."""
    if isinstance(value, str) and len(value) == 1:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return str(value)
    shown = json.dumps(value) if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    raise ValueError(f"row {row + 1}, column {column + 1}: a cell is one character or a whole number 0-9, got "
                     f"{shown[:40]}")


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
    burying what is wrong. A subclass may answer another status (``status``; None: MLflow's for the error code)."""

    status: int | None = None

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code)

    def get_http_status_code(self) -> int:
        """The HTTP status MLflow's scoring server answers with (it asks the exception)."""
        return self.status or super().get_http_status_code()

    @property
    def message(self) -> str:
        return self._first

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_first"):  # MlflowException.__init__ sets it first; later writes are ignored
            self._first = value


class TooManyPuzzles(BadRequest):
    """A 413 (Content Too Large): more puzzles in one request than ``HRM_SERVE_MAX_PUZZLES``, or more work (puzzles ×
    votes × segments) than ``HRM_SERVE_MAX_WORK``."""

    status = 413

    def __init__(self, message: str):
        super().__init__(message, REQUEST_LIMIT_EXCEEDED)


class TooLate(BadRequest):
    """A 504 (DEADLINE_EXCEEDED): the request ran past ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``; solving stopped."""

    def __init__(self, message: str):
        super().__init__(message, DEADLINE_EXCEEDED)


def _env_number(env: Mapping[str, str], name: str, default: int | None, kind: type = int) -> int | float | None:
    """``env[name]`` as a positive ``kind`` (int or float), ``default`` when unset or empty; a ValueError naming the
    variable when it is not one."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        what = "a positive integer" if kind is int else "a positive number of seconds"
        raise ValueError(f"{name} must be {what}, got {raw!r}")
    return value


class Limits(NamedTuple):
    max_puzzles: int  # per request
    max_work: int  # row-segments (puzzles × votes × segments) per request
    batch: int | None  # rows (puzzle × voted symmetry) through the model at a time; None: BATCH_TOKENS' worth
    timeout: float | None  # seconds a request may run; None: as long as it takes


def serving_limits(env: Mapping[str, str] | None = None) -> Limits:
    """The serving limits from ``env`` (default the environment; see the module docstring); a ValueError naming the
    variable when one is malformed."""
    env = os.environ if env is None else env
    return Limits(_env_number(env, MAX_PUZZLES_ENV, DEFAULT_MAX_PUZZLES), _env_number(env, MAX_WORK_ENV, DEFAULT_MAX_WORK),
                  _env_number(env, BATCH_ENV, None), _env_number(env, TIMEOUT_ENV, None, float))


class HRMSolver(mlflow.pyfunc.PythonModel):
    """The served model: puzzles in (a ``puzzle`` column), the model's answers out (``COLUMNS``)."""

    limits = Limits(DEFAULT_MAX_PUZZLES, DEFAULT_MAX_WORK, None, None)  # until ``read_limits``

    def load_context(self, context) -> None:
        """Load the exported model (artifact ``export``) on CPU, and its task."""
        from hrm.tasks import make_task
        from pipeline.core.export import load_export

        # Served on CPU, in the dtype that suits this host whatever the model was trained in.
        self.model, self.info = load_export(Path(context.artifacts["export"]))
        self.task = make_task(self.info["task"], self.info.get("task_args"))
        self.read_limits()

    def read_limits(self) -> None:
        """Take the serving limits from the environment (``serving_limits``): at load, so a bad value stops the
        server from starting with a message naming the variable rather than failing every request."""
        self.limits = serving_limits()
        logger.debug("serving at most %d puzzles and %d row-segments per request, %s rows at a time, for %s",
                     self.limits.max_puzzles, self.limits.max_work, self.limits.batch or "the default",
                     "as long as it takes" if self.limits.timeout is None else f"{self.limits.timeout:g} s at most")

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Solve each puzzle (a DataFrame's ``puzzle`` column, a list, a dict or one puzzle); ``params``:
        ``adaptive`` (stop where the model halts, default true), ``max_steps`` (segments at most, default M_max),
        ``votes`` (answers voted over this many symmetries of each puzzle, hrm.vote; default 1). A malformed puzzle
        or param is a BadRequest naming it; more puzzles or work than the limits a TooManyPuzzles (413), before any
        puzzle is parsed; a request past its deadline a TooLate (see ``_solve``)."""
        began = time.monotonic()
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
        if len(items) > self.limits.max_puzzles:
            raise TooManyPuzzles(f"too many puzzles: {len(items):,} in one request, at most "
                                 f"{self.limits.max_puzzles:,} ({MAX_PUZZLES_ENV}); split the request")
        adaptive, max_steps, votes = self._params(params)
        self._check_work(len(items), votes, max_steps)
        texts = []
        for i, item in enumerate(items):
            try:
                text = _as_text(item)
                self.task.parse(text)
            except ValueError as err:
                where = f"bad puzzle {i + 1} of {len(items)}" if len(items) > 1 else "bad puzzle"
                raise BadRequest(f"{where}: {err}") from err
            texts.append(text)
        solutions = self._solve(texts, began, adaptive=adaptive, max_steps=max_steps, votes=votes)
        return pd.DataFrame({"solution": [compact(self.task, s.tokens) for s in solutions],
                             "grid": [grid_json(self.task, s.tokens) for s in solutions],
                             "steps": [s.steps for s in solutions],
                             "confidence": [s.confidence for s in solutions],
                             "valid": pd.Series([s.valid for s in solutions], dtype=object)}, columns=COLUMNS)

    def _check_work(self, puzzles: int, votes: int, max_steps: int | None) -> None:
        """A TooManyPuzzles (413) when puzzles × votes × segments is past ``HRM_SERVE_MAX_WORK``."""
        segments = max_steps or self.model.config.halt_max_steps
        work = puzzles * votes * segments
        if work > self.limits.max_work:
            raise TooManyPuzzles(f"too much work: {puzzles:,} puzzles × {votes:,} votes × {segments:,} segments = "
                                 f"{work:,} row-segments, at most {self.limits.max_work:,} ({MAX_WORK_ENV}); send "
                                 "fewer puzzles, votes or max_steps")

    def rows_at_a_time(self) -> int:
        """``HRM_SERVE_BATCH``, else BATCH_TOKENS' worth of this model's rows (at least one)."""
        return self.limits.batch or max(1, BATCH_TOKENS // self.model.config.seq_len)

    def _solve(self, texts: list[str], began: float, votes: int, **options) -> list:
        """``hrm.solve.solve`` of ``texts``: ``HRM_SERVE_BATCH`` rows (puzzle × voted symmetry) through the model at a
        time, so ``batch // votes`` puzzles (at least one) per call, the same answers as in one call (the symmetries
        are drawn from the same seed for every call, and each row is computed on its own); a TooLate once
        ``timeout`` seconds have passed since ``began`` (no segment starts after that)."""
        from hrm.solve import solve

        timeout, rows = self.limits.timeout, self.rows_at_a_time()
        deadline = None if timeout is None else began + timeout
        step = max(1, rows // votes)
        solutions: list = []
        for lo in range(0, len(texts), step):
            try:
                solutions += solve(self.model, self.task, texts[lo:lo + step], votes=votes, rows=rows,
                                   deadline=deadline, **options)
            except TimeoutError:
                logger.warning("request stopped after %d of %d puzzles: past %g s", lo, len(texts), timeout)
                raise TooLate(f"request timed out: {lo:,} of {len(texts):,} puzzles solved in {timeout:g} s "
                              f"({TIMEOUT_ENV}); send fewer puzzles per request") from None
        return solutions

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
