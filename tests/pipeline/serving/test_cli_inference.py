"""``hrm solve`` / ``hrm eval`` with ``--max-steps``, ``--votes`` and ``--seed``: the flags reach the model, bad values
are a click error naming the flag, and ``hrm eval`` logs its curves to a new MLflow run (step = segment, step = votes)
with their cost and a PNG plot, keeping the metric lines it printed before."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import PUZZLES, register_tiny_model  # noqa: E402

from hrm.loss import IGNORE  # noqa: E402
from hrm.tasks.sudoku import SudokuTask  # noqa: E402
from pipeline.cli import main  # noqa: E402

MODEL = "hrm-flags-test"
URI = f"models:/{MODEL}@champion"
M = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flags")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, folder, halt_max_steps=M, halt_first=True)
    return folder, uri


@pytest.fixture(scope="module")
def arrays():
    """Ten 4×4 Sudoku test rows as the loader gives them (givens not scored)."""
    task = SudokuTask((2, 2))
    puzzles, solutions, _, _ = task.generate_many(1, 10)
    enc = [task.encode((p, s)) for p, s in zip(puzzles, solutions)]
    inputs = np.stack([x for x, _ in enc]).astype(np.int64)
    labels = np.where(inputs >= 2, IGNORE, np.stack([y for _, y in enc]).astype(np.int64))
    return {"inputs": inputs, "labels": labels, "puzzle_ids": np.zeros(len(inputs), np.int64)}


@pytest.fixture
def data(tmp_path, arrays, monkeypatch):
    """A dataset folder of the model's task; its test split is ``arrays``."""
    import pipeline.data.loader as loader

    folder = tmp_path / "sudoku4"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
    task = SudokuTask((2, 2))
    (folder / "metadata.json").write_text(json.dumps({
        "task": "sudoku", "task_args": {"box": [2, 2]}, "vocab_size": task.vocab_size, "seq_len": 16,
        "num_puzzle_identifiers": 1, "counts": {"train": 10, "test": 10}, "groups": {"train": 10, "test": 10},
        "config": {}, "seed": 0, "fingerprint": "x"}))
    monkeypatch.setattr(loader, "load_split", lambda path, split, limit=None: {k: v[:limit] for k, v in arrays.items()})
    return folder


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def predict(uri: str, params: dict):
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(uri)
    return mlflow.pyfunc.load_model(URI).predict(pd.DataFrame({"puzzle": PUZZLES[:1]}), params=params).iloc[0]


def test_solve_runs_the_segments_asked_for(store):
    result = run("solve", "--model", URI, "--tracking-uri", store[1], "--full", "--max-steps", "5", PUZZLES[0])
    assert result.exit_code == 0, result.output
    assert "halted after 5 segment(s)" in result.output  # past M_max = 3
    result = run("solve", "--model", URI, "--tracking-uri", store[1], "--max-steps", "5", PUZZLES[0])
    assert "halted after 1 segment(s)" in result.output  # adaptive: where the Q-head halts


def test_solve_votes(store):
    result = run("solve", "--model", URI, "--tracking-uri", store[1], "--votes", "4", "--full", PUZZLES[0])
    assert result.exit_code == 0, result.output
    want = predict(store[1], {"votes": 4, "adaptive": False})
    assert f"solution: {want['solution']}" in result.output
    assert f"voted over 4 symmetries, about 3 segment(s) each, confidence {want['confidence']:.3f}" in result.output


@pytest.mark.parametrize(("flags", "flag", "message"), [
    (["--votes", "0"], "--votes", "votes must be between 1 and 1024, got 0"),
    (["--votes", "2000"], "--votes", "votes must be between 1 and 1024, got 2000"),
    (["--max-steps", "0"], "--max-steps", "max_steps must be between 1 and 1024, got 0"),
    (["--max-steps", "1025"], "--max-steps", "max_steps must be between 1 and 1024, got 1025"),
])
@pytest.mark.parametrize("command", ["solve", "eval"])
def test_bad_flags_are_a_click_error_naming_the_flag(store, data, command, flags, flag, message):
    where = [PUZZLES[0]] if command == "solve" else ["--data", str(data), "--no-log"]
    result = run(command, "--model", URI, "--tracking-uri", store[1], *flags, *where)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}': {message}" in result.output


@pytest.mark.parametrize("command", ["solve", "eval"])
def test_votes_on_a_task_without_symmetries_is_refused(store, data, monkeypatch, command):
    from hrm.tasks.base import Task

    monkeypatch.setattr(SudokuTask, "symmetries", Task.symmetries)
    where = [PUZZLES[0]] if command == "solve" else ["--data", str(data), "--no-log"]
    result = run(command, "--model", URI, "--tracking-uri", store[1], "--votes", "2", *where)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--votes': sudoku has no symmetries to vote over" in result.output


def metric_lines(output: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(eval/\S+) +(-?[\d.]+)$", output, re.M)}


def client_of(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def eval_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()],
                                      "tags.`hrm.kind` = 'eval'")


def test_eval_prints_todays_lines_and_logs_the_default_curves(store, data, arrays):
    from pipeline.train.evaluate import evaluate

    result = run("eval", "--model", URI, "--tracking-uri", store[1], "--data", str(data))
    assert result.exit_code == 0, result.output
    import mlflow.pyfunc

    solver = mlflow.pyfunc.load_model(URI).unwrap_python_model()
    want = evaluate(solver.model, arrays, solver.task, batch_size=256, device="cpu")
    assert metric_lines(result.output) == pytest.approx({k: round(v, 4) for k, v in want.items()}, abs=1e-4)
    lines = result.output.splitlines()
    assert lines[:len(want)] == [f"{k:36} {v:.4f}" for k, v in sorted(want.items())]  # first, as before
    run_id = re.search(r"logged to MLflow run (\w+) \(experiment tests\)", result.output)[1]
    client = client_of(store[1])
    by_segment = client.get_metric_history(run_id, "eval/exact_accuracy_by_segment")
    assert [(m.step, m.value) for m in by_segment] == \
        [(s, pytest.approx(want[f"eval/exact_accuracy_step_{s}"])) for s in (1, 2, 3)]
    by_votes = client.get_metric_history(run_id, "eval/exact_accuracy_by_votes")
    assert [(m.step, m.value) for m in by_votes] == [(1, pytest.approx(want["eval/exact_accuracy"]))]
    # as MLflow has an evaluation: the resolved version and its LoggedModel, the dataset as the "eval" input, each
    # curve once, the evaluation's own duration
    got = client.get_run(run_id)
    version = client.get_model_version_by_alias(*URI.removeprefix("models:/").split("@"))
    assert got.data.params["model_version"] == f"{version.name}/{version.version}"
    model_id = version.source.removeprefix("models:/")  # the LoggedModel the version was registered from
    assert got.data.tags["hrm.model_id"] == model_id and got.data.params["data"] == str(data.resolve())
    (found,) = got.inputs.dataset_inputs
    assert {t.key: t.value for t in found.tags}["mlflow.data.context"] == "eval" and found.dataset.digest == "x"
    assert not [k for k in got.data.metrics if k.startswith("eval/exact_accuracy_step_")]
    linked = {m.key: m for m in client.get_logged_model(model_id).metrics or []}
    assert linked["eval/exact_accuracy"].run_id == run_id and linked["eval/exact_accuracy"].dataset_digest == "x"
    seconds = float(re.search(r"^ +3 +[\d.]+ +3 +([\d.]+)$", result.output, re.M)[1])  # segment 3: the whole eval
    assert got.info.end_time - got.info.start_time >= 1000 * seconds - 20


def test_eval_logs_depth_and_vote_curves_with_their_cost(store, data, arrays):
    from hrm.vote import answer
    from pipeline.train.evaluate import exact_rows

    result = run("eval", "--model", URI, "--tracking-uri", store[1], "--data", str(data), "--max-steps", "5",
                 "--votes", "4", "--seed", "3", "--experiment", "evals")
    assert result.exit_code == 0, result.output
    assert "eval/exact_accuracy_step_5" in metric_lines(result.output)
    run_id = re.search(r"logged to MLflow run (\w+) \(experiment evals\)", result.output)[1]
    client = client_of(store[1])
    got = client.get_run(run_id)
    assert got.data.params.items() >= {"max_steps": "5", "votes": "4", "seed": "3", "model": URI}.items()
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in (
        "eval/exact_accuracy_by_segment", "eval/forward_passes_by_segment", "eval/seconds_by_segment",
        "eval/exact_accuracy_by_votes", "eval/forward_passes_by_votes", "eval/seconds_by_votes")}
    assert [s for s, _ in history["eval/exact_accuracy_by_segment"]] == [1, 2, 3, 4, 5]
    assert history["eval/forward_passes_by_segment"] == [(s, s) for s in (1, 2, 3, 4, 5)]
    assert [s for s, _ in history["eval/exact_accuracy_by_votes"]] == [1, 2, 4]
    assert history["eval/forward_passes_by_votes"] == [(1, 5), (2, 10), (4, 20)]
    assert all(v > 0 for key in ("eval/seconds_by_segment", "eval/seconds_by_votes") for _, v in history[key])
    import mlflow.pyfunc

    solver = mlflow.pyfunc.load_model(URI).unwrap_python_model()
    for n, value in history["eval/exact_accuracy_by_votes"]:
        voted = answer(solver.model, solver.task, arrays["inputs"].astype(np.uint8), votes=n, max_steps=5, seed=3)
        assert value == pytest.approx(exact_rows(voted.preds, arrays["labels"]).mean())
    assert "eval_curves.png" in [a.path for a in client.list_artifacts(run_id)]
    png = Path(client.download_artifacts(run_id, "eval_curves.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_no_log_leaves_the_store_alone(store, data):
    _, before = eval_runs(store[1])
    result = run("eval", "--model", URI, "--tracking-uri", store[1], "--data", str(data), "--no-log")
    assert result.exit_code == 0, result.output
    assert "logged to MLflow run" not in result.output and "eval/exact_accuracy " in result.output
    assert len(eval_runs(store[1])[1]) == len(before)


def test_solve_with_a_model_logged_before_the_params(tmp_path, monkeypatch):
    """Its signature has only ``adaptive``: plain solving works; --max-steps is refused rather than dropped."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    import pipeline.serving.pyfunc as pyfunc

    new = pyfunc.signature()
    old = ModelSignature(new.inputs, new.outputs, ParamSchema([ParamSpec("adaptive", "boolean", True)]))
    monkeypatch.setattr(pyfunc, "signature", lambda: old)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_tiny_model(uri, "hrm-old-cli", tmp_path, halt_max_steps=M, halt_first=True)
    args = ["solve", "--model", "models:/hrm-old-cli@champion", "--tracking-uri", uri]
    plain = run(*args, "--full", PUZZLES[0])
    assert plain.exit_code == 0 and "halted after 3 segment(s)" in plain.output, plain.output
    deep = run(*args, "--max-steps", "5", PUZZLES[0])
    assert deep.exit_code == 2
    assert "Invalid value for '--max-steps': this model was logged before max_steps could be set" in deep.output
