"""Serving limits (#17, #31): at most ``HRM_SERVE_MAX_PUZZLES`` puzzles and ``HRM_SERVE_MAX_WORK`` row-segments per
request (a 413 saying so, before any puzzle is parsed or solved), ``HRM_SERVE_BATCH`` rows through the model at a time
(the same answers as all at once), no segment started past the request's deadline
(``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``), the guard's byte and depth limits on a real server, and ``hrm serve``
gone, with everything it started, within seconds of a SIGTERM even mid-request. The process group without a server:
test_supervise.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import requests
import torch
from click.testing import CliRunner

from hrm.config import model_config
from hrm.model import HRM
from hrm.tasks.sudoku import SudokuTask
from pipeline.cli import main
from pipeline.serving.guard import max_bytes_from
from pipeline.serving.pyfunc import (
    BadRequest,
    HRMSolver,
    Limits,
    TooLate,
    TooManyPuzzles,
    serving_limits,
)
from tests.processes import free_port, stop_group

sys.path.insert(0, str(Path(__file__).parent))
from test_serve import BIN, MODEL, bare_env, invoke, local_predictions  # noqa: E402 (registry: conftest.py)
from tiny_registry import PUZZLES  # noqa: E402

GRACE = 3


@pytest.fixture
def solver(monkeypatch):
    """An HRMSolver of an untrained 4×4 Sudoku model, its limits read from an environment without any set."""
    for name in ("HRM_SERVE_MAX_PUZZLES", "HRM_SERVE_BATCH", "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    solver = HRMSolver()
    solver.task = SudokuTask((2, 2))
    torch.manual_seed(0)
    solver.model = HRM(model_config("debug", vocab_size=solver.task.vocab_size, seq_len=16, halt_max_steps=3,
                                    num_puzzle_identifiers=1, forward_dtype="float32")).eval()
    solver.read_limits()
    return solver


def puzzles(n: int) -> pd.DataFrame:
    return pd.DataFrame({"puzzle": [PUZZLES[i % len(PUZZLES)] for i in range(n)]})


# --- the model, in this process -------------------------------------------------------------------------------------

def test_the_default_limit_is_2000_puzzles_checked_before_parsing(solver):
    assert solver.limits == Limits(max_puzzles=2000, max_work=65_536, batch=None, timeout=None)
    assert solver.rows_at_a_time() == 20_736 // 16  # 4×4 Sudoku: 16 tokens a row
    with pytest.raises(TooManyPuzzles) as caught:
        solver.predict(None, pd.DataFrame({"puzzle": ["not a puzzle"] * 2001}))  # never parsed: the count comes first
    assert caught.value.message == ("too many puzzles: 2,001 in one request, at most 2,000 (HRM_SERVE_MAX_PUZZLES); "
                                    "split the request")
    assert caught.value.get_http_status_code() == 413
    with pytest.raises(BadRequest, match="bad puzzle 1 of 2000: "):  # at the limit: parsed
        solver.predict(None, pd.DataFrame({"puzzle": ["not a puzzle"] * 2000}))


def test_a_request_at_the_limit_is_answered_in_full(solver, monkeypatch):
    monkeypatch.setenv("HRM_SERVE_MAX_PUZZLES", "5")
    solver.read_limits()
    assert len(solver.predict(None, puzzles(5))) == 5
    with pytest.raises(TooManyPuzzles, match="too many puzzles: 6 in one request, at most 5 "):
        solver.predict(None, puzzles(6))


@pytest.mark.parametrize("params", [{}, {"adaptive": False}, {"votes": 4, "adaptive": False}, {"votes": 3}])
def test_batches_give_the_same_answers_as_one(solver, params):
    data = puzzles(5)
    whole = solver.predict(None, data, params=params)
    for batch in (1, 2):
        solver.limits = solver.limits._replace(batch=batch)
        part = solver.predict(None, data, params=params)
        pd.testing.assert_frame_equal(part.drop(columns="confidence"), whole.drop(columns="confidence"))
        assert part["confidence"].tolist() == pytest.approx(whole["confidence"].tolist(), abs=1e-5)


def test_batches_bound_each_solve(solver, monkeypatch):
    import hrm.solve

    sizes, real = [], hrm.solve.solve
    monkeypatch.setattr(hrm.solve, "solve", lambda model, task, texts, **kw: sizes.append(len(texts)) or
                        real(model, task, texts, **kw))
    monkeypatch.setenv("HRM_SERVE_BATCH", "3")
    solver.read_limits()
    assert len(solver.predict(None, puzzles(8))) == 8
    assert sizes == [3, 3, 2]


def rows_seen(solver) -> list[int]:
    """The rows of each forward pass of ``solver``'s model from now on (one per segment)."""
    seen: list[int] = []
    solver.model.register_forward_pre_hook(lambda _, args: seen.append(int(args[1]["inputs"].shape[0])))
    return seen


@pytest.mark.parametrize("batch, votes, per_call", [(8, 4, 2), (8, 3, 2), (8, 16, 1), (5, 1, 5)])
def test_rows_through_the_model_are_bounded_whatever_the_votes(solver, monkeypatch, batch, votes, per_call):
    """HRM_SERVE_BATCH counts rows (a puzzle under one symmetry): votes make a puzzle several rows, so fewer puzzles
    go per call, and a puzzle with more votes than the batch has its rows split; the answers stay those of one call."""
    import hrm.solve

    data = puzzles(7)
    params = {"votes": votes, "adaptive": False}
    whole = solver.predict(None, data, params=params)
    calls, real = [], hrm.solve.solve
    monkeypatch.setattr(hrm.solve, "solve", lambda model, task, texts, **kw: calls.append(len(texts)) or
                        real(model, task, texts, **kw))
    solver.limits = solver.limits._replace(batch=batch)
    seen = rows_seen(solver)
    part = solver.predict(None, data, params=params)
    assert calls == [per_call] * (7 // per_call) + ([7 % per_call] if 7 % per_call else [])
    assert max(seen) == min(batch, per_call * votes)
    assert sum(seen) == 7 * votes * solver.model.config.halt_max_steps  # every row, every segment, once
    pd.testing.assert_frame_equal(part.drop(columns="confidence"), whole.drop(columns="confidence"))
    assert part["confidence"].tolist() == pytest.approx(whole["confidence"].tolist(), abs=1e-5)


def test_work_past_the_budget_is_a_413_before_any_puzzle_is_solved(solver, monkeypatch):
    """puzzles × votes × segments (max_steps, else M_max) against HRM_SERVE_MAX_WORK; the issue's 22 GB request
    (256 puzzles, 1024 votes, 1 segment) is refused by the default."""
    seen = rows_seen(solver)
    with pytest.raises(TooManyPuzzles) as caught:
        solver.predict(None, puzzles(256), params={"votes": 1024, "max_steps": 1})
    assert caught.value.message == ("too much work: 256 puzzles × 1,024 votes × 1 segments = 262,144 row-segments, "
                                    "at most 65,536 (HRM_SERVE_MAX_WORK); send fewer puzzles, votes or max_steps")
    assert caught.value.get_http_status_code() == 413 and seen == []
    monkeypatch.setenv("HRM_SERVE_MAX_WORK", "36")
    solver.read_limits()
    M = solver.model.config.halt_max_steps  # 3
    with pytest.raises(TooManyPuzzles, match=r"too much work: 13 puzzles × 1 votes × 3 segments = 39 row-segments"):
        solver.predict(None, puzzles(13))
    with pytest.raises(TooManyPuzzles, match=r"= 40 row-segments, at most 36 "):
        solver.predict(None, puzzles(2), params={"votes": 4, "max_steps": 5})
    assert seen == []
    assert len(solver.predict(None, puzzles(12), params={"adaptive": False})) == 12  # 12 × 1 × 3 = 36: at the limit
    assert sum(seen) == 12 * M


def test_no_segment_starts_past_the_deadline(solver, monkeypatch):
    """Each segment takes at least 50 ms here: with a 0.12 s deadline no more than 3 segments start, though the
    request is a single batch of 10 segments (a deadline checked between batches only would run all 10)."""
    started: list[float] = []
    solver.model.register_forward_pre_hook(lambda *_: started.append(time.monotonic()) or time.sleep(0.05))
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "0.12")
    solver.read_limits()
    params = {"adaptive": False, "max_steps": 10}
    with pytest.raises(TooLate) as caught:
        solver.predict(None, puzzles(6), params=params)
    assert 1 <= len(started) <= 3
    assert caught.value.message == ("request timed out: 0 of 6 puzzles solved in 0.12 s "
                                    "(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT); send fewer puzzles per request")
    assert caught.value.get_http_status_code() == 504
    monkeypatch.setenv("HRM_SERVE_BATCH", "1")  # split: the puzzles solved before the deadline are counted
    solver.read_limits()
    started.clear()
    with pytest.raises(TooLate, match=r"request timed out: [123] of 6 puzzles solved in 0.12 s"):
        solver.predict(None, puzzles(6), params={"adaptive": False, "max_steps": 1})
    assert len(started) <= 3
    monkeypatch.delenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT")  # no deadline: the whole request
    solver.read_limits()
    started.clear()
    assert len(solver.predict(None, puzzles(6), params=params)) == 6 and len(started) == 6 * 10


@pytest.mark.parametrize("name, value, message", [
    ("HRM_SERVE_MAX_PUZZLES", "0", "HRM_SERVE_MAX_PUZZLES must be a positive integer, got '0'"),
    ("HRM_SERVE_MAX_PUZZLES", "lots", "HRM_SERVE_MAX_PUZZLES must be a positive integer, got 'lots'"),
    ("HRM_SERVE_BATCH", "2.5", "HRM_SERVE_BATCH must be a positive integer, got '2.5'"),
    ("HRM_SERVE_MAX_WORK", "1e6", "HRM_SERVE_MAX_WORK must be a positive integer, got '1e6'"),
    ("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "-1",
     "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT must be a positive number of seconds, got '-1'"),
])
def test_a_bad_limit_is_refused_naming_the_variable(solver, monkeypatch, name, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        serving_limits({name: value})
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        solver.read_limits()
    result = CliRunner().invoke(main, ["serve", "--model", "models:/x@champion"], env={name: value})
    assert result.exit_code == 1 and f"Error: {message}" in result.output, result.output


def test_a_bad_byte_limit_is_refused_naming_the_variable():
    message = "HRM_SERVE_MAX_BYTES must be a positive integer (bytes), got '16M'"
    with pytest.raises(ValueError, match=re.escape(message)):
        max_bytes_from({"HRM_SERVE_MAX_BYTES": "16M"})
    result = CliRunner().invoke(main, ["serve", "--model", "models:/x@champion"], env={"HRM_SERVE_MAX_BYTES": "16M"})
    assert result.exit_code == 1 and f"Error: {message}" in result.output, result.output


@pytest.mark.parametrize("flag, value, message", [
    ("--max-puzzles", "0", "Invalid value for '--max-puzzles': 0 is not in the range x>=1"),
    ("--max-puzzles", "many", "Invalid value for '--max-puzzles': 'many' is not a valid integer range"),
    ("--batch", "-2", "Invalid value for '--batch': -2 is not in the range x>=1"),
    ("--max-work", "0", "Invalid value for '--max-work': 0 is not in the range x>=1"),
    ("--max-bytes", "0", "Invalid value for '--max-bytes': 0 is not in the range x>=1"),
    ("--grace-seconds", "-1", "Invalid value for '--grace-seconds': -1.0 is not in the range x>=0"),
])
def test_a_bad_serve_option_is_refused(flag, value, message):
    result = CliRunner().invoke(main, ["serve", "--model", "models:/x@champion", flag, value])
    assert result.exit_code == 2 and message in result.output, result.output


# --- a real server ---------------------------------------------------------------------------------------------------

def start_serve(registry, *options: str, **env: str) -> tuple[subprocess.Popen, str, Path]:
    """``hrm serve`` of the tiny model with ``options`` (its own process group); returns once it answers /ping."""
    tmp, uri = registry
    port, log_path = free_port(), tmp / f"serve-limits-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(BIN / "hrm"), "serve", "--model", f"models:/{MODEL}@champion", "--tracking-uri",
                                 uri, "--port", str(port), *options], env=bare_env(**env), cwd=tmp, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"hrm serve exited with {proc.returncode}:\n{log_path.read_text()[-5000:]}")
        try:
            if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                return proc, base, log_path
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            stop_group(proc)
            pytest.fail(f"no /ping answer in 120 s:\n{log_path.read_text()[-5000:]}")
        time.sleep(0.5)


@pytest.mark.slow
def test_a_bad_limit_stops_the_model_from_loading(registry, monkeypatch):
    import mlflow.pyfunc

    monkeypatch.setenv("HRM_SERVE_BATCH", "none")
    mlflow.set_tracking_uri(registry[1])
    with pytest.raises(ValueError, match="HRM_SERVE_BATCH must be a positive integer, got 'none'"):
        mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


def group_members(pgids: set[int]) -> list[psutil.Process]:
    """The live (not zombie) processes of these process groups."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) in pgids and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


@pytest.mark.slow
def test_sigterm_stops_the_server_in_the_middle_of_a_long_request(registry):
    proc, base, log_path = start_serve(registry, "--max-puzzles", "100000", "--max-work", "100000000", "--batch", "1",
                                       "--grace-seconds",
                                       str(GRACE), MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT="3600")
    started = psutil.Process(proc.pid).children(recursive=True)  # launcher, pipeline.serving.server, uvicorn
    pgids = {os.getpgid(p.pid) for p in started} | {proc.pid}
    answered: list = []
    body = {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES] * 10000},
            "params": {"max_steps": 64, "adaptive": False}}
    request = threading.Thread(target=lambda: answered.append(_post(base, body)), daemon=True)
    try:
        assert len(started) >= 2 and len(pgids) == 2, (started, pgids)  # the server in a group of its own
        request.start()
        busy = sum(p.cpu_times().user for p in started)
        deadline = time.monotonic() + 60
        while sum(p.cpu_times().user for p in started) < busy + 2:  # computing the request
            assert time.monotonic() < deadline and not answered, answered
            time.sleep(0.2)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE + 5)
        assert time.monotonic() - began < GRACE + 5
        assert code != 0
        time.sleep(0.5)
        assert group_members(pgids) == [], log_path.read_text()[-3000:]
    finally:
        stop_group(proc)
        for p in group_members(pgids):
            p.kill()


def _post(base: str, body: dict):
    """The status of a POST /invocations, or the error that ended it."""
    try:
        return requests.post(f"{base}/invocations", json=body, timeout=600).status_code
    except requests.RequestException as err:
        return err


def peak_rss(pid: int) -> int:
    """The most memory (bytes) the process ``pid`` has held resident so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def uvicorn_of(proc: subprocess.Popen) -> psutil.Process:
    """The uvicorn process under ``hrm serve``: the one that computes the requests."""
    found = [p for p in psutil.Process(proc.pid).children(recursive=True) if "uvicorn" in " ".join(p.cmdline())]
    assert len(found) == 1, [p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)]
    return found[0]


@pytest.mark.slow
def test_the_server_is_bounded_by_puzzles_bytes_depth_work_and_rows(registry):
    """Through a real ``hrm serve``: more puzzles than --max-puzzles is a 413 before any is parsed, a body past
    --max-bytes (declared, or chunked) a 413, JSON 1000 deep a 400 (MLflow's parser answered 500), the issue's
    request of 256 puzzles × 1024 votes a 413 (it took 22 GB), and 16 puzzles × 1024 votes is answered with the
    server's peak memory bounded by --batch rows (16,384 rows at once, as before, took 1.7 GB); the server answers
    on after each, as a local model would."""
    proc, base, log_path = start_serve(registry, "--max-puzzles", "256", "--max-bytes", "200000", "--batch", "256")
    try:
        server = uvicorn_of(proc)
        over = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [["x"]] * 257}})
        assert over.status_code == 413, (over.status_code, over.text)
        assert over.json()["message"] == ("too many puzzles: 257 in one request, at most 256 (HRM_SERVE_MAX_PUZZLES); "
                                          "split the request"), over.text
        big = {"dataframe_split": {"columns": ["puzzle"], "data": [[PUZZLES[0]]] * 12_000}}  # about 250 kB
        r = invoke(base, big)
        assert r.status_code == 413, r.text
        assert r.json()["message"].startswith("request too large: at most 200,000 bytes (HRM_SERVE_MAX_BYTES), got ")
        chunked = requests.post(f"{base}/invocations", data=(b"x" * 50_000 for _ in range(6)),
                                headers={"Content-Type": "application/json"}, timeout=60)
        assert chunked.status_code == 413, chunked.text
        deep = requests.post(f"{base}/invocations", data="[" * 1000 + "]" * 1000,
                             headers={"Content-Type": "application/json"}, timeout=60)
        assert deep.status_code == 400 and "nested more than 64 deep" in deep.json()["message"], deep.text
        loaded = peak_rss(server.pid)
        r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[PUZZLES[i % 3]] for i in range(256)]},
                          "params": {"votes": 1024, "max_steps": 1}})
        assert r.status_code == 413 and r.json()["message"].startswith("too much work: 256 puzzles × 1,024 votes"), \
            r.text
        r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[PUZZLES[i % 3]] for i in range(16)]},
                          "params": {"votes": 1024, "max_steps": 1}})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 16
        grown = peak_rss(server.pid) - loaded
        assert grown < 300 << 20, f"the server's peak grew {grown / 2**20:.0f} MiB answering 16,384 rows"
        ok = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES]}})
        assert ok.status_code == 200, ok.text
        expected = local_predictions(registry[1], PUZZLES)
        assert [a["solution"] for a in ok.json()["predictions"]] == [a["solution"] for a in expected]
        assert [a["steps"] for a in ok.json()["predictions"]] == [a["steps"] for a in expected]
    finally:
        stop_group(proc)


@pytest.mark.slow
def test_the_server_stops_computing_when_it_answers_504(registry):
    """A request far past MLflow's timeout: the client gets its 504 and the server's CPU goes quiet within a second
    (it went on computing the whole request, ~1.65 cores for 80 s and more)."""
    proc, base, log_path = start_serve(registry, "--max-work", "100000000",
                                       MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT="2")
    try:
        server = uvicorn_of(proc)
        began = time.monotonic()
        r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[PUZZLES[i % 3]] for i in range(2000)]},
                          "params": {"max_steps": 1024, "adaptive": False}})
        assert r.status_code == 504 and time.monotonic() - began < 10, (r.status_code, r.text)
        time.sleep(1)
        before = sum(server.cpu_times()[:2])
        time.sleep(2)
        busy = (sum(server.cpu_times()[:2]) - before) / 2
        assert busy < 0.2, f"the server still used {busy:.2f} cores after its 504:\n{log_path.read_text()[-2000:]}"
        ok = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES]}})
        assert ok.status_code == 200, ok.text
    finally:
        stop_group(proc)
