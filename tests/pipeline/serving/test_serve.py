"""The registered model behind ``hrm serve`` (MLflow's REST scoring server), started from a shell WITHOUT the venv on
PATH: answers in the compact input format plus a JSON grid, parameters, 4xx that start with what is wrong, no
download progress bars (the model comes from a real MLflow tracking server, so its files are downloaded), and a clean
stop (the server's whole process group ends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.processes import free_port, stop_group  # noqa: F401 (test_serve_virtualenv imports them from here)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import PUZZLES  # noqa: E402
from tiny_registry import SERVE_MODEL as MODEL  # noqa: E402 (served from conftest.py's registry)

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
BAR = "Downloading artifacts"


def bare_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment: the venv's programs (mlflow, uvicorn) are not on PATH, no MLflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != BIN.resolve())
    return {**env, **extra}


@pytest.fixture(scope="module")
def server(registry):
    tmp, uri = registry
    assert "uvicorn" not in subprocess.run(["sh", "-c", "command -v uvicorn || true"], env=bare_env(),
                                           capture_output=True, text=True).stdout
    port = free_port()
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([str(BIN / "hrm"), "serve", "--model", f"models:/{MODEL}@champion", "--tracking-uri", uri,
                             "--port", str(port)],
                            env=bare_env(), cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hrm serve exited with {proc.returncode}:\n{(tmp / 'serve.log').read_text()}")
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /ping answer in 120 s:\n{(tmp / 'serve.log').read_text()}")
            time.sleep(0.5)
        yield base, proc, tmp / "serve.log"
    finally:
        stop_group(proc)
        log.close()


def invoke(base: str, body: dict) -> requests.Response:
    return requests.post(f"{base}/invocations", json=body, timeout=60)


def local_predictions(uri: str, puzzles: list[str]) -> list[dict]:
    """The registered model's answers, computed in this process (the server must give the same)."""
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    return model.predict(pd.DataFrame({"puzzle": puzzles})).to_dict("records")


def test_answers_puzzles(server, registry):
    base, *_ = server
    grid = "[[1, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 1]]"  # PUZZLES[0] as a JSON grid
    r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES] + [[grid]]}})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    expected = local_predictions(registry[1], PUZZLES)
    assert len(predictions) == len(PUZZLES) + 1
    for answer, local in zip(predictions, expected + [expected[0]], strict=True):
        assert list(answer) == ["solution", "grid", "steps", "confidence", "valid"]
        assert answer["solution"] == local["solution"] and answer["steps"] == local["steps"] == 1
        assert answer["confidence"] == pytest.approx(local["confidence"], abs=1e-6)
    from hrm.tasks.sudoku import SudokuTask

    task = SudokuTask((2, 2))  # each answer's `valid`, a JSON boolean, is the puzzle's rules checked here
    for puzzle, answer in zip(PUZZLES, predictions):
        assert answer["valid"] is task.follows_rules(task.parse(answer["solution"]), task.parse(puzzle))


def test_the_answer_is_compact_text_and_a_json_grid(server):
    """``solution``: one line of 16 cells, the input format (it can be posted back); ``grid``: its rows."""
    base, *_ = server
    r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[PUZZLES[0]]]}})
    answer = r.json()["predictions"][0]
    text, grid = answer["solution"], json.loads(answer["grid"])
    assert len(text) == 16 and set(text) <= set("1234.")
    assert len(grid) == 4 and all(len(row) == 4 and all(isinstance(c, int) for c in row) for row in grid)
    assert "".join("." if c == 0 else str(c) for row in grid for c in row) == text
    again = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[text], [answer["grid"]]]}})
    # read back as a puzzle; an untrained model's answer may repeat a digit, which the parser names
    assert again.status_code == 200 or again.json()["message"].startswith("bad puzzle 1 of 2: contradictory givens")


@pytest.mark.parametrize("puzzles, message", [
    (["1234"], "bad puzzle: expected 16 cells, got 4"),
    (["1.3.....2...4..x"], "bad puzzle: unknown character(s) 'x'"),
    (["11.............."], "bad puzzle: contradictory givens"),
    ([PUZZLES[0], "1234"], "bad puzzle 2 of 2: expected 16 cells, got 4"),
])
def test_a_bad_puzzle_is_a_400_saying_what_is_wrong(server, puzzles, message):
    base, *_ = server
    r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in puzzles]}})
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert body["message"].startswith(message), body["message"]
    assert "Failed to predict" not in body["message"]


def test_params_are_taken_per_request(server, registry):
    """``max_steps`` / ``votes`` / ``adaptive`` in a request's ``params`` (the signature's params): honoured, and the
    same answers as the model gives in this process."""
    import mlflow.pyfunc
    import pandas as pd

    base, *_ = server
    data = {"columns": ["puzzle"], "data": [[p] for p in PUZZLES]}
    deep = invoke(base, {"dataframe_split": data, "params": {"max_steps": 5, "adaptive": False}})
    assert deep.status_code == 200, deep.text
    assert [a["steps"] for a in deep.json()["predictions"]] == [5] * len(PUZZLES)  # past M_max = 3
    voted = invoke(base, {"dataframe_split": data, "params": {"votes": 4, "adaptive": False}})
    assert voted.status_code == 200, voted.text
    mlflow.set_tracking_uri(registry[1])
    local = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(
        pd.DataFrame({"puzzle": PUZZLES}), params={"votes": 4, "adaptive": False}).to_dict("records")
    assert [a["solution"] for a in voted.json()["predictions"]] == [a["solution"] for a in local]
    plain = invoke(base, {"dataframe_split": data})
    assert [a["steps"] for a in plain.json()["predictions"]] == [1] * len(PUZZLES)  # defaults: as before


@pytest.mark.parametrize("params, message", [
    ({"votes": 0}, "bad votes: votes must be between 1 and 1024, got 0"),
    ({"max_steps": 100000}, "bad max_steps: max_steps must be between 1 and 1024, got 100000"),
])
def test_bad_params_are_a_400_saying_what_is_wrong(server, params, message):
    base, *_ = server
    r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[PUZZLES[0]]]}, "params": params})
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["message"].startswith(message), r.json()["message"]


def test_malformed_request_is_a_4xx(server):
    base, *_ = server
    wrong_column = invoke(base, {"dataframe_split": {"columns": ["grid"], "data": [[PUZZLES[0]]]}})
    assert wrong_column.status_code == 400  # MLflow's own schema check, before the model sees the request
    assert "missing inputs ['puzzle']" in wrong_column.json()["message"], wrong_column.text
    not_json = requests.post(f"{base}/invocations", data="{not json", headers={"Content-Type": "application/json"},
                             timeout=30)
    assert 400 <= not_json.status_code < 500


def test_serving_shows_no_download_bar(server):
    *_, log = server
    text = log.read_text()
    assert "Uvicorn running" in text and BAR not in text, text


@pytest.mark.parametrize("bars", ["default", "asked for"])
def test_solve_shows_no_download_bar_unless_asked(registry, bars):
    """``hrm solve`` downloads the model from the server: no progress bar, unless the user sets MLflow's switch."""
    tmp, uri = registry
    extra = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true"} if bars == "asked for" else {}
    done = subprocess.run([str(BIN / "hrm"), "solve", "--model", f"models:/{MODEL}@champion", "--tracking-uri", uri,
                           PUZZLES[0]], env=bare_env(**extra), cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "solution: " in done.stdout and "halted after 1 segment(s)" in done.stdout
    assert (BAR in done.stderr) == (bars == "asked for"), done.stderr[-2000:]


def test_server_stops_without_leftovers(server):
    base, proc, _ = server
    stop_group(proc)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/ping", timeout=2)
