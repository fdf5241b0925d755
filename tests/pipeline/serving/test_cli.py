"""`hrm solve` and `hrm eval` against a registered model: which MLflow store they read, their answers (the same as
the pyfunc's), and a clear error for a bad puzzle, a missing store or model, and a dataset of another task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import PUZZLES, register_tiny_model  # noqa: E402

from pipeline.cli import main  # noqa: E402

MODEL = "hrm-cli-test"
URI = f"models:/{MODEL}@champion"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, folder, halt_first=True)  # adaptive: 1 segment; --full: 3
    return folder, uri


@pytest.fixture(scope="module")
def expected(store):
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(store[1])
    out = mlflow.pyfunc.load_model(URI).predict(pd.DataFrame({"puzzle": PUZZLES[:1]}))
    return out.iloc[0]


def solve(*args: str):
    return CliRunner().invoke(main, ["solve", "--model", URI, *args], catch_exceptions=False)


@pytest.mark.parametrize("how", ["option", "environment", "working directory"])
def test_solve_prints_the_models_answer(store, expected, how, monkeypatch):
    folder, uri = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = [PUZZLES[0]]
    if how == "option":
        args = ["--tracking-uri", uri, *args]
    elif how == "environment":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    else:
        monkeypatch.chdir(folder)
    result = solve(*args)
    assert result.exit_code == 0, result.output
    assert f"solution: {expected['solution']}" in result.output  # compact: one line of 16 cells
    rows = json.loads(expected["grid"])
    assert "\n".join(" ".join(str(c) for c in row) for row in rows) in result.output  # the grid, row by row
    assert f"halted after {expected['steps']} segment(s), confidence {expected['confidence']:.3f}" in result.output
    assert ("valid: yes, the answer follows" if expected["valid"] else "valid: NO, the answer breaks") in result.output


def test_solve_reads_a_file_and_runs_full_depth(store, tmp_path):
    puzzle = tmp_path / "puzzle.txt"
    puzzle.write_text(PUZZLES[1])
    result = solve("--tracking-uri", store[1], "--full", "--file", str(puzzle))
    assert result.exit_code == 0, result.output
    assert "halted after 3 segment(s)" in result.output  # --full runs all M_max = 3 segments
    result = solve("--tracking-uri", store[1], "--file", str(puzzle))
    assert result.exit_code == 0 and "halted after 1 segment(s)" in result.output  # where the Q-head halts


@pytest.mark.parametrize(("puzzle", "message"), [
    ("1.3.....2...4..", "bad puzzle: expected 16 cells, got 15"),
    ("11..............", "bad puzzle: contradictory givens"),
    ("1.3.....2...4..x", "bad puzzle"),
])
def test_solve_rejects_bad_puzzles(store, puzzle, message):
    result = solve("--tracking-uri", store[1], puzzle)
    assert result.exit_code != 0 and message in result.output


def test_solve_without_a_store_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = solve(PUZZLES[0])
    assert result.exit_code != 0
    assert f"no MLflow store here: {tmp_path / 'mlflow.db'} does not exist" in result.output
    assert list(tmp_path.iterdir()) == []  # no empty store left behind


def test_serve_without_a_store_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["serve", "--model", URI])
    assert result.exit_code != 0
    assert f"no MLflow store here: {tmp_path / 'mlflow.db'} does not exist" in result.output


def test_solve_names_an_unknown_model(store):
    result = CliRunner().invoke(main, ["solve", "--model", "models:/no-such-model@champion", "--tracking-uri",
                                       store[1], PUZZLES[0]])
    assert result.exit_code != 0 and "no-such-model" in result.output


def test_solve_needs_exactly_one_puzzle(store, tmp_path):
    result = solve("--tracking-uri", store[1])
    assert result.exit_code != 0 and "give the puzzle as an argument or with --file" in result.output


def test_eval_refuses_a_dataset_of_another_task(store, tmp_path):
    data = tmp_path / "maze"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps({
        "task": "maze", "task_args": {"size": 5}, "vocab_size": 6, "seq_len": 25, "num_puzzle_identifiers": 1,
        "counts": {"train": 8, "test": 8}, "groups": {"train": 8, "test": 8}, "config": {}, "seed": 0,
        "fingerprint": "x"}))
    result = CliRunner().invoke(main, ["eval", "--model", URI, "--tracking-uri", store[1], "--data", str(data)])
    assert result.exit_code != 0
    assert "the model solves sudoku (length 16)" in result.output and "holds maze (length 25)" in result.output
    result = CliRunner().invoke(main, ["eval", "--model", URI, "--tracking-uri", store[1], "--data",
                                       str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "nowhere" in result.output
