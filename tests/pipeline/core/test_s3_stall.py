"""#31: an S3 server that accepts connections and never answers is given up on within a stated time: the S3 lock's
boto3 client within its read timeout × 3 tries, where botocore's defaults waited 181 s. (pyarrow's own client, for
datasets and run folders, gives up in 9.9 s by its defaults: pipeline.core.storage's docstring.)"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pipeline.core import locks, storage


@pytest.fixture
def stalled(monkeypatch):
    """An S3 endpoint on 127.0.0.1 that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.getsockname()[1]}", "AWS_ACCESS_KEY_ID": "x",
                       "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    yield
    server.close()
    for s in held:
        s.close()


def timed(call) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        call()
    except Exception as err:  # noqa: BLE001
        return time.monotonic() - began, err
    return time.monotonic() - began, None


def test_a_stalled_server_is_given_up_on_in_seconds(stalled, monkeypatch):
    monkeypatch.setenv("HRM_S3_TIMEOUT_S", "1")  # the lock's client: 1 s a try here (10 s by default)
    took, err = timed(lambda: locks._s3_client().head_object(Bucket="bucket", Key="x"))
    assert type(err).__name__ == "ReadTimeoutError" and 1 <= took < 8, (took, err)


@pytest.mark.parametrize("raw", ["0", "-3", "soon"])
def test_a_bad_timeout_is_refused_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("HRM_S3_TIMEOUT_S", raw)
    with pytest.raises(ValueError, match=f"HRM_S3_TIMEOUT_S must be a positive number of seconds, got '{raw}'"):
        storage.s3_client_config()
