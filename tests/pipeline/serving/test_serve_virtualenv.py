"""``hrm serve --env-manager virtualenv``: MLflow builds a fresh virtual environment from the model's pinned
requirements alone (the package registry, no hrm-pipeline install) and serves the same answers. About a minute: pip
installs MLflow, torch and their dependencies into an empty environment (a warm pip cache helps), without compiling
them to bytecode, since the server's Python writes its own (PYTHONDONTWRITEBYTECODE unset, as in a fresh shell).

Needs pyenv on PATH (MLflow's virtualenv manager asks it for the model's Python version)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))
from test_serve import BIN, bare_env, free_port, invoke, local_predictions, stop_group  # noqa: E402
from tiny_registry import PUZZLES, register_tiny_model  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("pyenv") is None, reason="pyenv is not on PATH")]
MODEL = "hrm-serve-test"  # local_predictions reads this name
READY_S = 900


def test_a_fresh_virtualenv_serves_the_model(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_tiny_model(uri, MODEL, tmp_path, halt_first=True)
    envs = tmp_path / "envs"  # a clean place for MLflow's environments: nothing reused
    port = free_port()
    log_path = tmp_path / "serve.log"
    serve_env = {k: v for k, v in bare_env(MLFLOW_ENV_ROOT=str(envs)).items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(BIN / "hrm"), "serve", "--model", f"models:/{MODEL}@champion", "--tracking-uri",
                                 uri, "--port", str(port), "--env-manager", "virtualenv"],
                                env=serve_env, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hrm serve exited with {proc.returncode}:\n{log_path.read_text()[-5000:]}")
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() - started > READY_S:
                pytest.fail(f"no /ping answer in {READY_S} s:\n{log_path.read_text()[-5000:]}")
            time.sleep(2)
        print(f"virtualenv built and serving in {time.monotonic() - started:.0f} s")
        r = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [[p] for p in PUZZLES]}})
        assert r.status_code == 200, r.text
        expected = local_predictions(uri, PUZZLES)
        for answer, local in zip(r.json()["predictions"], expected, strict=True):
            assert (answer["solution"], answer["grid"], answer["steps"]) == \
                (local["solution"], local["grid"], local["steps"])
        bad = invoke(base, {"dataframe_split": {"columns": ["puzzle"], "data": [["1234"]]}})
        assert bad.status_code == 400 and bad.json()["message"].startswith("bad puzzle: expected 16 cells")
    finally:
        stop_group(proc)
    pythons = list(envs.glob("*/bin/python"))
    assert len(pythons) == 1, pythons
    versions = subprocess.run([str(pythons[0]), "-c", "import torch, mlflow; print(torch.__version__, "
                               "mlflow.__version__)"], capture_output=True, text=True, timeout=120).stdout.split()
    import mlflow
    import torch

    assert versions == [torch.__version__, mlflow.__version__]  # the pinned versions, the CPU build here
    site = pythons[0].parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    sources, compiled = (len(list((site / "torch").rglob(pattern))) for pattern in ("*.py", "*.pyc"))
    assert 0 < compiled < sources / 2, (compiled, sources)  # what the server imported, not all that pip installed
    assert "Downloading artifacts" not in log_path.read_text()
