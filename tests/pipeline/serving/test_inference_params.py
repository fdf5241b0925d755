"""The served model's per-request params (``max_steps``, ``votes``, ``adaptive``) through its signature, as
``mlflow.pyfunc.load_model(...).predict(df, params=...)`` (what ``mlflow models serve`` calls): honoured, defaults
as before, bad values a 400 starting with what is wrong; a model logged before these params loads and answers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import PUZZLES, register_tiny_model  # noqa: E402

MODEL = "hrm-params-test"
M = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny model (its Q-head halts at once: adaptive = 1 segment) registered in a sqlite store, loaded."""
    import mlflow
    import mlflow.pyfunc

    folder = tmp_path_factory.mktemp("params")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, folder, halt_max_steps=M, halt_first=True)
    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


def ask(model, params=None, puzzles=PUZZLES):
    return model.predict(pd.DataFrame({"puzzle": puzzles}), params=params)


def test_the_signature_declares_the_params_with_todays_defaults(served):
    params = {p.name: (p.dtype.name, p.default) for p in served.metadata.signature.params.params}
    assert params == {"adaptive": ("boolean", True), "max_steps": ("long", None), "votes": ("long", 1)}


def test_defaults_are_todays_answers(served):
    from hrm.solve import solve

    solver = served.unwrap_python_model()
    out = ask(served)
    today = solve(solver.model, solver.task, PUZZLES)  # adaptive, M_max, no votes
    assert list(out["steps"]) == [s.steps for s in today] == [1, 1, 1]
    assert list(out["confidence"]) == pytest.approx([s.confidence for s in today])
    assert out.equals(ask(served, {"adaptive": True, "votes": 1}))


@pytest.mark.parametrize("max_steps", [1, 2, 5, 9])
def test_max_steps_is_honoured(served, max_steps):
    from hrm.infer import infer
    from pipeline.serving.pyfunc import compact

    solver = served.unwrap_python_model()
    out = ask(served, {"adaptive": False, "max_steps": max_steps})
    assert list(out["steps"]) == [max_steps] * len(PUZZLES)  # full depth: every segment asked for, past M_max too
    inputs = torch.as_tensor(np.stack([solver.task.parse(p) for p in PUZZLES]), dtype=torch.long)
    want = infer(solver.model, {"inputs": inputs, "puzzle_ids": torch.zeros(len(PUZZLES), dtype=torch.long)},
                 max_steps=max_steps)
    assert list(out["solution"]) == [compact(solver.task, t) for t in want.preds.numpy().astype(np.uint8)]
    assert list(out["confidence"]) == pytest.approx(want.confidence.tolist())


def test_votes_are_honoured_and_deterministic(served):
    from hrm.vote import answer
    from pipeline.serving.pyfunc import compact

    solver = served.unwrap_python_model()
    out = ask(served, {"votes": 4, "max_steps": 2, "adaptive": False})
    voted = answer(solver.model, solver.task, np.stack([solver.task.parse(p) for p in PUZZLES]), votes=4,
                   max_steps=2, adaptive=False)
    assert list(out.columns) == ["solution", "grid", "steps", "confidence", "valid"]
    assert list(out["solution"]) == [compact(solver.task, t) for t in voted.preds]
    assert list(out["confidence"]) == pytest.approx(list(voted.confidence))
    assert list(out["steps"]) == [2, 2, 2]
    assert out.equals(ask(served, {"votes": 4, "max_steps": 2, "adaptive": False}))


@pytest.mark.parametrize(("params", "message"), [
    ({"votes": 0}, "bad votes: votes must be between 1 and 1024, got 0"),
    ({"votes": 1025}, "bad votes: votes must be between 1 and 1024, got 1025"),
    ({"max_steps": 0}, "bad max_steps: max_steps must be between 1 and 1024, got 0"),
    ({"max_steps": 5000, "votes": 2}, "bad max_steps: max_steps must be between 1 and 1024, got 5000"),
])
def test_bad_params_are_a_400_saying_what_is_wrong(served, params, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        ask(served, params)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.get_http_status_code() == 400


def test_votes_on_a_task_without_symmetries_is_a_400(served, monkeypatch):
    from mlflow.exceptions import MlflowException

    from hrm.tasks.base import Task

    task = served.unwrap_python_model().task
    monkeypatch.setattr(type(task), "symmetries", Task.symmetries)  # as a task without transforms
    with pytest.raises(MlflowException) as caught:
        ask(served, {"votes": 2})
    assert caught.value.message == "bad votes: sudoku has no symmetries to vote over: votes must be 1, got 2"
    assert caught.value.get_http_status_code() == 400
    assert list(ask(served, {"votes": 1})["steps"]) == [1, 1, 1]  # one vote needs no symmetry


@pytest.mark.parametrize("old", ["adaptive only", "no params"])
def test_a_model_logged_before_these_params_loads_and_answers(tmp_path, monkeypatch, old):
    """Its signature lacks max_steps / votes (or any params): MLflow drops them with a warning; today's answers."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    import pipeline.serving.pyfunc as pyfunc

    new = pyfunc.signature()
    params = ParamSchema([ParamSpec("adaptive", "boolean", True)]) if old == "adaptive only" else None
    monkeypatch.setattr(pyfunc, "signature", lambda: ModelSignature(new.inputs, new.outputs, params))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_tiny_model(uri, "hrm-old", tmp_path, halt_max_steps=M, halt_first=True)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/hrm-old@champion")
    assert model.metadata.signature.params == params
    out = ask(model, {"max_steps": 7, "votes": 0})  # not in its signature: ignored, not refused
    assert list(out["steps"]) == [1, 1, 1]
    assert list(out.columns) == ["solution", "grid", "steps", "confidence", "valid"]
