"""The ``hrm`` command's surface: its commands, their options and help stay as they were (issue #14 moved each
verb group into its own module of ``pipeline.cli``)."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import main

# `hrm --help` before the CLI became a package: each command and the first line of its help
COMMANDS = {
    "bench": "Benchmarks of the training job on this machine.",  # issue #16
    "data": "Build puzzle datasets (Ray Data) and inspect them.",
    "demo": "Run the whole pipeline on an embedded local Ray and a local MLflow store.",
    "eval": "Evaluate a registered model on a dataset split and print the metrics.",
    "info": "Print a model flavour's config and size, and this machine as a bug report needs it.",
    "plan": "What a training run will need, before it runs: data, steps, model, FLOPs, memory, time, what is lacking.",
    "serve": "Serve a registered model over REST (MLflow's scoring server: POST /invocations, GET /ping).",
    "solve": "Solve one puzzle with a registered model and print the answer.",
    "train": "Train HRM on Ray Train; track it in MLflow; register the model.",
    "tune": "Sweep the training job with Ray Tune; report each trial in MLflow; register the best model.",
}
OPTIONS = {  # each command's options and arguments, in order
    "bench reasoning": ["--config", "--minutes", "--eval-minutes", "--variants", "--out", "--tracking-uri"],  # #16
    "bench merge": ["reports", "--out"],  # #16: one report from several runs of a benchmark
    "data build": ["task", "--config", "--out", "--seed", "--set", "--workers", "--overwrite", "--skip-invalid"],  # #30
    "data show": ["path", "--split", "-n"],
    "data check": ["path"],  # #15: a dataset's parts against metadata.json
    "demo": ["--workdir", "--data-config", "--train-config"],
    "eval": ["--model", "--tracking-uri", "--data", "--split", "--limit", "--batch-size",
             "--max-steps", "--votes", "--seed", "--trust-model-files", "--experiment", "--log"],  # #11, #31
    "info": ["--flavour"],
    "plan": ["--config", "--set", "--probe", "--json"],  # #25
    "serve": ["--model", "--tracking-uri", "--host", "--port", "--workers", "--env-manager", "--max-puzzles",
              "--max-work", "--batch", "--max-bytes", "--trust-model-files", "--grace-seconds"],  # #31: work, bytes, trust
    "solve": ["--model", "--tracking-uri", "--adaptive", "--max-steps", "--votes", "--trust-model-files", "puzzle",
              "--file"],  # (#11, #31)
    "train": ["--config", "--set", "--resume"],
    "tune": ["--config", "--set", "--resume", "--trust-sweep-state", "--stop-after"],  # #31: a sweep folder it did not seal
}


def test_help_lists_the_same_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert re.findall(r"^  (\w+) ", result.output.split("Commands:")[1], re.M) == sorted(COMMANDS)
    assert {name: command.help.splitlines()[0] for name, command in main.commands.items()} == COMMANDS


@pytest.mark.parametrize("path", sorted(OPTIONS))
def test_each_command_keeps_its_options(path):
    command: click.Command = main
    for name in path.split():
        command = command.commands[name]
    names = [p.opts[0] if isinstance(p, click.Option) else p.name for p in command.params]
    assert names == OPTIONS[path]
    assert CliRunner().invoke(main, [*path.split(), "--help"]).exit_code == 0


def test_data_group_lists_build_show_and_check():
    assert sorted(main.commands["data"].commands) == ["build", "check", "show"]


def test_the_group_keeps_its_options():
    assert [p.opts[0] for p in main.params] == ["-v", "--debug"]  # --debug: #15


def test_bad_set_is_a_usage_error():
    result = CliRunner().invoke(main, ["train", "--set", "no-equals-sign"])
    assert result.exit_code == 2 and "expected KEY=VALUE, got 'no-equals-sign'" in result.output


def test_solve_needs_one_puzzle_exit_code():
    result = CliRunner().invoke(main, ["solve", "--model", "models:/x@champion"])
    assert result.exit_code == 2 and "give the puzzle as an argument or with --file" in result.output
