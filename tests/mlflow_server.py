"""A real ``mlflow server`` on 127.0.0.1 for tests: any backend store, artifacts proxied to any destination."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.processes import free_port, stop_group


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts_destination: str, log: Path, env: dict[str, str] | None = None):
    """Run ``mlflow server`` (one worker, no job execution: ≈ 8 s, ≈ 420 MiB) until the block ends; yields its URL.

    Clients log artifacts through the server (``mlflow-artifacts:``), which writes them to ``artifacts_destination``
    (a folder, or ``s3://…`` with the server's AWS environment)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", backend_store_uri,
           "--artifacts-destination", artifacts_destination]
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)
