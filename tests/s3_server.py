"""A real S3 API server on 127.0.0.1 for tests: moto's server mode, one per test session.

The fixture ``s3`` starts ``moto_server`` on a free port, creates a bucket and points the standard AWS environment
(``AWS_ENDPOINT_URL``, keys, region) at it, so pyarrow, Ray Data, Ray Train and boto3 (MLflow) all reach it. Ray
workers inherit the environment of the process that starts Ray: start Ray *after* this fixture in S3 test modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import free_port

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str

    def uri(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix.lstrip('/')}".rstrip("/")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=ENV["AWS_DEFAULT_REGION"],
                            aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _server_command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    return [found, "-H", "127.0.0.1", "-p", str(port)]


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    """Start moto_server on a free 127.0.0.1 port; (process, endpoint) once it answers."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_server_command(port), stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **ENV})
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A running S3 API server with one empty bucket; the AWS environment points at it for the whole session."""
    proc, endpoint = start_server(tmp_path_factory.mktemp("moto") / "server.log")
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"]}
    os.environ.update({**ENV, "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint})
    server = S3Server(endpoint, f"hrm-test-{uuid.uuid4().hex[:8]}")
    try:
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
