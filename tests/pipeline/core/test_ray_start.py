"""pipeline.core.ray_start without a cluster: what a driver that joins a cluster passes on to the cluster's processes,
and which of Ray's lines are dropped as no alarm (the whole log of a real run: tests/pipeline/test_demo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.core.ray_start import (
    SHARED_ENV,
    _without_benign,
    benign,
    ignore_benign_warnings,
    job_env_vars,
    private_token,
)

PREEMPTION = ("[2026-12-06 16:23:54,912 E 14865 14898] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
              "and ID: 'a6151d4a4e0cde540133961001000000' has constructor arguments in the object store and "
              "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart "
              "will fail. See https://github.com/ray-project/ray/issues/53727 for more details.")


def test_joining_driver_passes_its_settings_except_those_of_the_job(monkeypatch):
    for name in SHARED_ENV:
        monkeypatch.setenv(name, "x")
    job = {"runtime_env": {"working_dir": "gcs://pkg.zip", "env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    env = job_env_vars()["env_vars"]
    assert "RAY_TRAIN_ENABLE_STATE_TRACKING" in env and "HRM_PROGRESS" in env
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" in env  # the cluster's Ray Data reads with one footer reader too
    assert "RAY_TRAIN_ENABLE_PRINT_PATCH" not in env  # Ray refuses a driver env var that the job sets too


def test_nothing_to_pass_gives_no_runtime_env(monkeypatch):
    for name in SHARED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_env_vars() is None
    monkeypatch.setenv("HRM_PROGRESS", "lines")
    assert job_env_vars() == {"env_vars": {"HRM_PROGRESS": "lines"}}


@pytest.mark.parametrize(("line", "dropped"), [
    (PREEMPTION, True),
    ("[2026-12-06 17:59:00,364 E 23331 23331] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor "
     "c4ffa9cf5cf83dcefa35160501000000, return status: Invalid: KillActor RPC failed for actor "
     "c4ffa9cf5cf83dcefa35160501000000: RpcError: RPC error: Socket closed rpc_code: 14", True),
    ("[2026-12-06 17:59:00,364 E 23331 23331] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor "
     "c4ffa9cf5cf83dcefa35160501000000, return status: Invalid: KillActor RPC failed for actor "
     "c4ffa9cf5cf83dcefa35160501000000: RpcError: RPC error: Deadline Exceeded", False),  # not the benign case
    (PREEMPTION.replace("PreemptionWatcher", "TrainController"), False),  # another actor: maybe a real problem
    ("[2026-12-06 16:23:54,912 E 14865 14898] core_worker.cc:912: Unhandled exception: worker died", False),
    ("Traceback (most recent call last):", False),
    ("train step 2/20 (10%) | 0s elapsed", False),
])
def test_only_the_known_benign_lines_are_dropped(line, dropped):
    assert benign(line) is dropped
    printed = []
    _without_benign(printed.append)({"pid": 1, "lines": [line, "kept"]})
    assert printed == [{"pid": 1, "lines": ["kept"] if dropped else [line, "kept"]}]


def test_a_batch_of_benign_lines_only_prints_nothing():
    printed = []
    _without_benign(printed.append)({"pid": 1, "lines": [PREEMPTION]})
    assert printed == []


def test_benign_warnings_are_ignored_by_child_processes_and_others_are_not(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "error::ResourceWarning")  # the user's own filter stays
    ignore_benign_warnings()
    ignore_benign_warnings()  # idempotent
    filters = os.environ["PYTHONWARNINGS"].split(",")
    assert filters[0] == "error::ResourceWarning" and len(filters) == 2
    code = ("import warnings\n"
            "warnings.warn('`ExecutionOptions.exclude_resources` is deprecated and will be removed', FutureWarning)\n"
            "warnings.warn('`ExecutionOptions.something_else` is deprecated', FutureWarning)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "exclude_resources" not in done.stderr and "something_else" in done.stderr


def test_the_ray_token_is_made_private(tmp_path):
    """The probe's case: ~/.ray/auth_token was mode 0644 (any local user could join the cluster and run code)."""
    folder = tmp_path / ".ray"
    folder.mkdir(mode=0o755)
    token = folder / "auth_token"
    token.write_text("t" * 64)
    token.chmod(0o644)
    private_token(token)
    assert (token.stat().st_mode & 0o777, folder.stat().st_mode & 0o777) == (0o600, 0o700)
    private_token(tmp_path / "none" / "auth_token")  # absent: nothing to do
