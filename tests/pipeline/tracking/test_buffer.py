"""Training's MLflow logging through an outage of the tracking server: a real ``mlflow server`` stopped and started
again on the same port and store, a closed port, a port that takes connections and never answers."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import re
import socket
import threading
import time

import numpy as np
import pytest

import tests.mlflow_server as servers
from pipeline.tracking.buffer import (
    HTTP_DEFAULTS,
    BufferedRunLogger,
    TrackingUnreachable,
    lower_http_retries,
)
from pipeline.tracking.runs import check_reachable, start_system_metrics
from pipeline.train.config import TrackingSettings, TrainConfig, load_train_config
from tests.processes import free_port

LOGGER = "pipeline.tracking.buffer"
NO_RUN = "0" * 32  # no server to hold it


@pytest.fixture
def http_env(monkeypatch):
    """MLflow's HTTP settings unset, as in a fresh worker; what BufferedRunLogger sets is undone after the test."""
    for key in HTTP_DEFAULTS:
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)


def records(caplog, level: int, *words: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level and all(w in r.getMessage() for w in words)]


def wait_for(found, seconds: float):
    """``found()`` once it is truthy, polling for at most ``seconds``; the last (falsy) result otherwise."""
    deadline = time.monotonic() + seconds
    while not (result := found()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def timed_log(logger: BufferedRunLogger, step: int) -> None:
    """Log ``loss`` = 1/step; the call must not wait for the server (a functional check, not a benchmark)."""
    started = time.perf_counter()
    logger.log({"loss": 1.0 / step, "lr": 0.1}, step)
    assert time.perf_counter() - started < 0.5


PIXELS = np.zeros((20, 30, 3), np.uint8)


def picture_steps(client, run_id: str) -> list[int]:
    """The steps of the run's pictures (MLflow keeps them as images/<key>+step+<step>+timestamp+…png)."""
    names = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    return sorted(int(name.split("+step+")[1].split("+")[0]) for name in names)


def test_pictures_of_steps_before_a_restart_are_dropped(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("pictures", (tmp_path / "a").as_uri())).info.run_id
    logger = BufferedRunLogger(uri, run_id)
    logger.skip_through = 4  # the run holds steps 1-4 from before a restart
    for step in (2, 4, 6):
        logger.log_image(PIXELS, "samples", step)
    assert logger.close(timeout=60)
    assert picture_steps(client, run_id) == [6]


def test_lower_http_retries_keeps_what_the_user_set():
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    lower_http_retries(env)
    assert env == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}


@pytest.mark.slow
def test_metrics_logged_while_the_server_is_down_reach_the_run(tmp_path, monkeypatch, caplog, http_env):
    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.INFO, logger=LOGGER)
    # MLflow's own pause before its second retry of a request: 2 s instead of 4 s, without its random extra (up to
    # 1 s); what is tested is the buffer around those retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    port = free_port()
    monkeypatch.setattr(servers, "free_port", lambda: port)  # the server comes back on the same port
    store, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    with servers.mlflow_server(store, artifacts, tmp_path / "first.log") as url:
        check_reachable(url)  # a real server answers the start-up check
        client = MlflowClient(url)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        monitor = start_system_metrics(url, run_id, interval=0.5)  # MLflow's own loop ended at the first failure
        logger = BufferedRunLogger(url, run_id, unreachable_minutes=5, backoff=(0.5, 2.0))
        assert {k: v for k, v in os.environ.items() if k in HTTP_DEFAULTS} == HTTP_DEFAULTS
        logger.log_params({"resolved.forward_dtype": "float32"})
        for step in (1, 2, 3):
            timed_log(logger, step)
        logger.log_image(PIXELS, "samples", 2)
        assert logger.settle(60.0)  # the server is up: what is queued is sent before a report
    stopped = time.monotonic()
    for step in (4, 5, 6):
        timed_log(logger, step)
    logger.log_image(PIXELS, "samples", 5)  # a picture waits for the server like the metrics
    logger.set_tags({"phase": "outage"})
    warned = wait_for(lambda: records(caplog, logging.WARNING, url, "is unreachable"), 30)
    assert warned, "no warning while the server is down"
    assert time.monotonic() - stopped < 20
    message = warned[0].getMessage()
    assert "6 metrics of steps 4-6" in message and "tracking.unreachable_minutes = 5" in message
    assert records(caplog, logging.INFO, url, "is back") == []
    restarted_ms = int(time.time() * 1000)
    with servers.mlflow_server(store, artifacts, tmp_path / "second.log") as again:
        assert again == url
        timed_log(logger, 7)
        assert logger.close(timeout=60)
        system = "system/cpu_utilization_percentage"
        assert wait_for(lambda: [m for m in client.get_metric_history(run_id, system) if m.timestamp > restarted_ms],
                        30), "the system metrics did not go on after the outage"
        monitor.finish()
        run = client.get_run(run_id)
        history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
        rates = client.get_metric_history(run_id, "lr")
        pictures = picture_steps(client, run_id)
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / s) for s in range(1, 8)]
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps) and all(m.timestamp < restarted_ms for m in history if m.step <= 6)
    assert sorted(m.step for m in rates) == list(range(1, 8))
    assert pictures == [2, 5]
    assert run.data.params["resolved.forward_dtype"] == "float32" and run.data.tags["phase"] == "outage"
    assert records(caplog, logging.INFO, url, "is back")
    assert records(caplog, logging.WARNING, url, "lost") == []


def test_log_raises_once_the_server_is_unreachable_past_the_limit(caplog, http_env):
    caplog.set_level(logging.INFO, logger=LOGGER)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens
    logger = BufferedRunLogger(uri, NO_RUN, unreachable_minutes=0.02, backoff=(0.2, 0.5))  # 1.2 s
    started = time.monotonic()
    with pytest.raises(TrackingUnreachable) as raised:
        for step in range(1, 200):
            timed_log(logger, step)
            time.sleep(0.1)
    assert 1.2 <= time.monotonic() - started < 15
    message = str(raised.value)
    assert re.search(rf"tracking server {re.escape(uri)} has been unreachable for \d+\.\d s", message), message
    assert "tracking.unreachable_minutes = 0.02" in message and "metrics of steps 1-" in message
    assert "checkpoints are kept" in message and "`hrm train --resume`" in message
    assert not logger.close(timeout=5)
    assert records(caplog, logging.WARNING, uri, "not logged to run", "lost")


def test_a_report_does_not_wait_on_a_known_outage(caplog, monkeypatch):
    """settle (before each eval's report) waits for the queue to reach a server that answers, not for one that is
    down: training goes on at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the outage is known at the first refusal
    caplog.set_level(logging.INFO, logger=LOGGER)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens
    logger = BufferedRunLogger(uri, NO_RUN, unreachable_minutes=5, backoff=(0.2, 0.5))
    timed_log(logger, 1)
    assert wait_for(lambda: records(caplog, logging.WARNING, uri), 60), "no outage warning"
    began = time.monotonic()
    assert logger.settle(10.0) is False and time.monotonic() - began < 0.5
    assert not logger.close(timeout=1)


def test_a_server_that_never_answers_is_reported_from_the_training_thread(caplog, http_env):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with socket.socket() as listener:  # takes connections (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        logger = BufferedRunLogger(uri, NO_RUN, unreachable_minutes=5, stuck_seconds=0.5)
        timed_log(logger, 1)
        assert records(caplog, logging.WARNING, uri) == []
        time.sleep(1.0)
        timed_log(logger, 2)
        assert records(caplog, logging.WARNING, uri, "has not answered for")
        assert not logger.close(timeout=0.5)


def test_check_reachable_names_a_closed_port_and_passes_other_stores(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=re.escape(f"MLflow tracking server {uri} is unreachable (")) as raised:
        check_reachable(uri, timeout_s=2)
    assert "MLFLOW_TRACKING_URI / tracking.tracking_uri" in str(raised.value)
    with socket.socket() as listener:  # takes connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        silent = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ConnectionError, match=re.escape(f"{silent} took the connection but did not answer "
                                                            "/api/2.0/mlflow/experiments/search within 1 s")):
            check_reachable(silent, timeout_s=1)
    check_reachable(f"sqlite:///{tmp_path / 'mlflow.db'}")  # no server: nothing to reach
    check_reachable(str(tmp_path / "mlruns"))


@contextlib.contextmanager
def answering(status: int, body: bytes = b"Internal Server Error"):
    """An HTTP server on 127.0.0.1 that answers every request with ``status``: its URL, and the requests it got."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "hint"), [
    (500, "look at the server's log"), (503, "look at the server's log"),
    (401, "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"),
    (403, "the login has no permission for this: ask the server's admin"),
    (404, "is this an MLflow tracking server?"),
])
def test_a_server_answering_an_error_is_named_with_its_status_at_once(status, hint, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    with answering(status, b"<html>broken auth config</html>") as (uri, seen):
        began = time.monotonic()
        with pytest.raises(ConnectionError) as raised:
            check_reachable(uri)
        assert time.monotonic() - began < 5  # no retries: one request
    assert str(raised.value) == (f"MLflow tracking server {uri} answered HTTP {status} to "
                                 f"/api/2.0/mlflow/experiments/search (<html>broken auth config</html>): {hint}")
    assert len(seen) == 1 and seen[0][1].startswith("Basic ")  # MLflow's own credentials were sent


@pytest.mark.parametrize("minutes", [0, -1.0, float("nan")])
def test_unreachable_minutes_must_be_positive(minutes):
    with pytest.raises(ValueError, match="tracking.unreachable_minutes must be a number of minutes > 0"):
        TrainConfig(tracking=TrackingSettings(unreachable_minutes=minutes))
    with pytest.raises(ValueError, match="tracking.unreachable_minutes must be"):
        load_train_config(overrides={"tracking.unreachable_minutes": minutes})
    assert load_train_config(overrides={"tracking.unreachable_minutes": 0.5}).tracking.unreachable_minutes == 0.5
