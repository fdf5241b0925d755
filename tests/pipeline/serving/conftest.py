"""What the serving tests share: one real MLflow server holding the tiny model for the whole session (test_serve and
test_serve_limits both serve it), started once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.mlflow_server import mlflow_server

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import SERVE_HALT_MAX, SERVE_MODEL, register_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real MLflow server holding the tiny model: clients download its files over HTTP. (its folder, its URL)"""
    tmp = tmp_path_factory.mktemp("serve")
    with mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "artifacts"), tmp / "mlflow.log") as url:
        register_tiny_model(url, SERVE_MODEL, tmp, halt_max_steps=SERVE_HALT_MAX, halt_first=True)
        yield tmp, url
