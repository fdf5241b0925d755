"""The registered model behind the real ``mlflow models serve`` REST server: answers, parameters, 4xx on bad input,
and a clean stop (the server's whole process group ends)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import PUZZLES, register_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "hrm-serve-test"
HALT_MAX = 3
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds; wait until none of it remains."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, tmp, halt_max_steps=HALT_MAX, halt_first=True)
    return tmp, uri


@pytest.fixture(scope="module")
def server(registry):
    tmp, uri = registry
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{(tmp / 'serve.log').read_text()}")
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /ping answer in 120 s:\n{(tmp / 'serve.log').read_text()}")
            time.sleep(0.5)
        yield base, proc
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
    base, _ = server
    grid = "[[1, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 0, 0, 1]]"  # PUZZLES[0] as a JSON grid
    r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES] + [[grid]]}})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    expected = local_predictions(registry[1], PUZZLES)
    assert len(predictions) == len(PUZZLES) + 1
    for answer, local in zip(predictions, expected + [expected[0]], strict=True):
        assert answer["solution"] == local["solution"] and answer["steps"] == local["steps"] == 1
        assert answer["confidence"] == pytest.approx(local["confidence"], abs=1e-6)
        assert len([c for c in answer["solution"] if c in "1234."]) == 16  # a full 4×4 grid, rendered by the task


def test_full_depth_parameter(server):
    base, _ = server
    body = {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES]}}
    adaptive = invoke(base, body)
    full = invoke(base, {**body, "params": {"adaptive": False}})
    assert adaptive.status_code == full.status_code == 200, (adaptive.text, full.text)
    assert [p["steps"] for p in adaptive.json()["predictions"]] == [1] * len(PUZZLES)  # the Q-head says halt
    assert [p["steps"] for p in full.json()["predictions"]] == [HALT_MAX] * len(PUZZLES)


@pytest.mark.parametrize("puzzle, message", [
    ("1234", "expected 16 cells, got 4"),
    ("1.3.....2...4..x", "unknown character"),
    ("11..............", "contradictory givens"),
])
def test_bad_puzzle_is_a_clear_4xx(server, puzzle, message):
    base, _ = server
    r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[puzzle]]}})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "bad puzzle" in body["message"] and message in body["message"], body["message"]


def test_malformed_request_is_a_4xx(server):
    base, _ = server
    wrong_column = invoke(base, {"dataframe_split": {"columns": ["grid"], "data": [[PUZZLES[0]]]}})
    assert 400 <= wrong_column.status_code < 500 and "puzzle" in wrong_column.json()["message"]
    not_json = requests.post(f"{base}/invocations", data="{not json", headers={"Content-Type": "application/json"},
                             timeout=30)
    assert 400 <= not_json.status_code < 500


def test_server_stops_without_leftovers(server):
    base, proc = server
    stop_group(proc)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/ping", timeout=2)
