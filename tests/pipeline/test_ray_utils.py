"""pipeline.ray_utils without a cluster: what a driver that joins a cluster passes on to the cluster's processes."""

from __future__ import annotations

import json

from pipeline.ray_utils import SHARED_ENV, job_env_vars


def test_joining_driver_passes_its_settings_except_those_of_the_job(monkeypatch):
    for name in SHARED_ENV:
        monkeypatch.setenv(name, "x")
    job = {"runtime_env": {"working_dir": "gcs://pkg.zip", "env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    env = job_env_vars()["env_vars"]
    assert "RAY_TRAIN_ENABLE_STATE_TRACKING" in env and "HRM_PROGRESS" in env
    assert "RAY_TRAIN_ENABLE_PRINT_PATCH" not in env  # Ray refuses a driver env var that the job sets too


def test_nothing_to_pass_gives_no_runtime_env(monkeypatch):
    for name in SHARED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_env_vars() is None
    monkeypatch.setenv("HRM_PROGRESS", "lines")
    assert job_env_vars() == {"env_vars": {"HRM_PROGRESS": "lines"}}
