"""HRM as an MLflow pyfunc: puzzles in (strings or grids, per task), solutions out with halting steps and confidence.

Loads a plain state dict + config with the ``hrm`` package shipped alongside (``code_paths``), so no pickled
model or ``torch.export`` graph is involved (the halting loop is data-dependent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
MODEL_FILE = Path(__file__).with_name("model_file.py")  # builds an HRMSolver when MLflow loads the model


def code_paths() -> list[str]:
    """The packages shipped inside the logged model, so it loads where hrm-pipeline is not installed."""
    return [str(PACKAGE_ROOT / "hrm"), str(PACKAGE_ROOT / "pipeline")]


def signature():
    """Input: a ``puzzle`` column (text or JSON grids); output: solution, halting steps, confidence; params: adaptive."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "puzzle")]),
        outputs=Schema([ColSpec("string", "solution"), ColSpec("long", "steps"), ColSpec("double", "confidence")]),
        params=ParamSchema([ParamSpec("adaptive", "boolean", True)]))


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


class HRMSolver(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hrm.tasks import make_task
        from pipeline.train.checkpoint import load_export

        # Served on CPU, in the dtype that suits this host whatever the model was trained in.
        self.model, self.info = load_export(Path(context.artifacts["export"]))
        self.task = make_task(self.info["task"], self.info.get("task_args"))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from hrm.solve import solve

        if isinstance(model_input, pd.DataFrame):
            if "puzzle" not in model_input.columns:
                raise MlflowException(f"expected a column 'puzzle', got {list(model_input.columns)}",
                                      INVALID_PARAMETER_VALUE)
            items = list(model_input["puzzle"])
        elif isinstance(model_input, (list, tuple)):
            items = list(model_input)
        elif isinstance(model_input, dict) and "puzzle" in model_input:
            items = list(model_input["puzzle"]) if isinstance(model_input["puzzle"], list) else [model_input["puzzle"]]
        else:
            items = [model_input]
        adaptive = bool((params or {}).get("adaptive", True))
        try:
            solutions = solve(self.model, self.task, [_as_text(x) for x in items], adaptive=adaptive)
        except ValueError as err:
            raise MlflowException(f"bad puzzle: {err}", INVALID_PARAMETER_VALUE) from err
        return pd.DataFrame({"solution": [s.solution for s in solutions], "steps": [s.steps for s in solutions],
                             "confidence": [s.confidence for s in solutions]})
