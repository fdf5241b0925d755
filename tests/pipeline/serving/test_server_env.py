"""What the environment MLflow builds for ``hrm serve --env-manager virtualenv`` is installed with: pip skips bytecode
where Python writes its own; a user's pip setting or PYTHONDONTWRITEBYTECODE keeps pip's default."""

import os

import pytest

from pipeline.serving.server import no_bytecode_at_install


@pytest.mark.parametrize("env, expected", [
    ({}, "false"),
    ({"PYTHONDONTWRITEBYTECODE": ""}, "false"),  # empty: Python writes bytecode
    ({"PYTHONDONTWRITEBYTECODE": "1"}, None),
    ({"PIP_COMPILE": "true"}, "true"),
    ({"PIP_NO_COMPILE": "1"}, None),
])
def test_pip_compiles_only_where_python_would_not(monkeypatch, env, expected):
    for name in ("PIP_COMPILE", "PIP_NO_COMPILE", "PYTHONDONTWRITEBYTECODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    no_bytecode_at_install()
    assert os.environ.get("PIP_COMPILE") == expected
