"""The notebooks' helpers (pipeline.explore) turn MLflow's "Downloading artifacts" bar off: notebook 02 reads the
registered model's MLmodel and input example, which MLflow copies with a bar per call (shown here first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_registry import register_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "hrm-bars-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bars")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, folder)
    return uri


@pytest.mark.parametrize("helpers", [False, True])
def test_the_notebook_helpers_silence_the_download_bar(store, helpers, tmp_path):
    script = "\n".join([
        "import pipeline.explore" if helpers else "",
        "import mlflow",
        f"mlflow.set_tracking_uri({store!r})",
        "from mlflow.models import Model",
        f"Model.load('models:/{MODEL}@champion').load_input_example()",
    ])
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("Downloading artifacts" in done.stderr) is not helpers, done.stderr[-2000:]
