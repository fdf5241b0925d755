"""`hrm info`: the flavour's config and size, and what a bug report needs about this machine."""

from __future__ import annotations

import os
import platform
import re
from importlib.metadata import version

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.core.precision import resolve_dtype


def info(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(main, ["info", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line and not re.match(r"\d\d:\d\d:\d\d ", line)]
    pairs = {}
    for line in lines:
        assert line[0] != " " and line[24] == " " and line[25] != " ", f"not an aligned 'key  value' line: {line!r}"
        pairs[line[:24].strip()] = line[25:]
    return pairs


@pytest.mark.parametrize(("flavour", "hidden", "params"), [("debug", "64", "132,674"), ("demo", "128", "658,562")])
def test_config_and_size(flavour, hidden, params):
    got = info("--flavour", flavour)
    assert got["hidden_size"] == hidden and got["forward_dtype"] == "auto"
    assert got["parameters"] == params


def test_machine_lines():
    got = info()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert got["device"] == device
    assert ("gpu" in got) == (device == "cuda")
    assert got["cpu"] and got["cpu"] != "unknown"
    assert got["cpu capability"] == torch.backends.cpu.get_cpu_capability()
    assert got["resolved forward_dtype"] in ("float32", "bfloat16")
    assert (got["resolved forward_dtype"], got["forward_dtype reason"]) == resolve_dtype("auto", device)
    assert got["forward_dtype reason"].startswith("auto: ")
    assert got["torch threads"] == str(torch.get_num_threads())
    assert got["cpu count"] == str(os.cpu_count())
    assert got["python"] == platform.python_version()
    assert got["torch"] == torch.__version__
    assert got["ray"] == version("ray") and got["mlflow"] == version("mlflow")
    assert "auto" not in got["resolved forward_dtype"]
    from pipeline.tracking.version import code_version_string, source_sha256

    assert got["source sha256"] == source_sha256() and got["hrm-pipeline"] == code_version_string()
