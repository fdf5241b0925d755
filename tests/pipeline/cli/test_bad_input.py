"""Bad input through the real ``hrm`` command, one table: each row is the files a careless user (or an attacker) has,
the command they type, the exit status and a fragment of the message they must get. Every row also checks that
there is no Python traceback (only ``hrm --debug`` shows one) and that nothing in the folder was written or changed.

Extend the table whenever a new entrance appears (a command, a config key, a file format). The rows that need Ray
(CSV import) are in the slow test at the end; the rest fail before any cluster work, as they must.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from tests.pipeline.data.test_verify import make_dataset, truncate, zero_middle


def damaged(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """A dataset at ``ds`` (the build's format, 16 tokens a row), one of whose train parts ``damage`` breaks."""
    def make(folder: Path) -> None:
        damage(make_dataset(folder / "ds"))
    return make


def edited_metadata(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """A dataset at ``ds`` whose metadata.json ``edit`` changes (what someone with a text editor can do)."""
    def make(folder: Path) -> None:
        meta_file = make_dataset(folder / "ds") / "metadata.json"
        meta = json.loads(meta_file.read_text())
        edit(meta)
        meta_file.write_text(json.dumps(meta))
    return make


def flipped_and_unsummed(meta: dict) -> None:
    """The probe's case: one part's SHA-256 stripped (and that part could then hold a flipped bit unseen)."""
    del meta["files"]["train"][1]["sha256"]


def train_file(**config) -> dict[str, str]:
    return {"train.yaml": yaml.safe_dump({"name": "r", "data": "ds", **config})}


@dataclass
class Row:
    args: list[str]  # after `hrm`
    code: int  # the exit status
    message: str  # a fragment of what the user reads
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the folder first
    setup: Callable[[Path], None] | None = None  # more of the folder (a dataset)


TRAIN = ["train", "--config", "train.yaml"]
ROWS = {
    # training configs: refused by name, before any cluster work
    "lr not a number": Row(TRAIN, 1, "lr must be a finite number >= 0, got nan", train_file(optim={"lr": math.nan})),
    "lr negative": Row(TRAIN, 1, "lr must be a finite number >= 0, got -1", train_file(optim={"lr": -1})),
    "lr 1e-4 is a number": Row(TRAIN, 1, "dataset not found", {"train.yaml": "name: r\ndata: ds\noptim: {lr: 1e-4}\n"}),
    "max_steps 0": Row(TRAIN, 1, "max_steps must be >= 1", train_file(max_steps=0)),
    "max_steps negative": Row(TRAIN, 1, "max_steps must be >= 1 (or null: epochs decide), got -5",
                              train_file(max_steps=-5)),
    "name with a newline": Row(TRAIN, 1, "name must be a plain folder name", train_file(name="a\nb")),
    "name of 300 characters": Row(TRAIN, 1, "name is 300 bytes long, at most 200", train_file(name="n" * 300)),
    "YAML nested 5,000 deep": Row(TRAIN, 1, "train.yaml: lists or mappings nested hundreds deep: refused",
                                  {"train.yaml": "name: r\nmodel: " + "[" * 5000 + "]" * 5000 + "\n"}),
    "unknown key": Row(TRAIN, 1, "lrr", train_file(optim={"lrr": 0.1})),
    "wrong type": Row(TRAIN, 1, "global_batch_size", train_file(global_batch_size="big")),
    "not YAML": Row(TRAIN, 1, "not valid YAML", {"train.yaml": "name: [unclosed\n"}),
    "no such config": Row(["train", "--config", "nope.yaml"], 1, "not found: nope.yaml"),
    "--set not a number": Row(["train", "--set", "optim.lr=abc"], 1, "optim.lr"),
    "--set a negative budget": Row(["train", "--set", "max_minutes=-5"], 1,
                                   "max_minutes must be a number of minutes > 0"),
    "--set without =": Row(["train", "--set", "lr"], 2, "expected KEY=VALUE"),
    "tracking server down": Row(TRAIN, 1, "MLflow tracking server http://127.0.0.1:1 is unreachable",
                                train_file(tracking={"tracking_uri": "http://127.0.0.1:1"})),
    # datasets: named where they are opened
    "no dataset": Row(TRAIN, 1, "dataset not found", train_file()),
    "truncated part, train": Row(TRAIN, 1, "bytes, but metadata.json says", train_file(), damaged(truncate)),
    "zeroed part, train": Row(TRAIN, 1, "its SHA-256 differs", train_file(), damaged(zero_middle)),
    "zeroed part, check": Row(["data", "check", "ds"], 1, "ds/train/part-00001.parquet: its SHA-256 differs",
                              setup=damaged(zero_middle)),
    "missing part, check": Row(["data", "check", "ds"], 1, "missing, but metadata.json lists it",
                               setup=damaged(lambda p: (p / "train/part-00001.parquet").unlink())),
    "no dataset, show": Row(["data", "show", "nowhere"], 1, "does not exist"),
    "metadata part path outside, absolute": Row(
        ["data", "check", "ds"], 1, "files.train[0]: '/etc/hostname' is not a path inside the dataset",
        setup=edited_metadata(lambda m: m["files"]["train"][0].update(path="/etc/hostname"))),
    "metadata part path outside, ..": Row(
        ["data", "check", "ds"], 1, "'../../secret.parquet' is not a path inside the dataset",
        setup=edited_metadata(lambda m: m["files"]["test"][0].update(path="../../secret.parquet"))),
    "metadata checksum stripped": Row(["data", "check", "ds"], 1, "1 of 4 parts have no sha256",
                                      setup=edited_metadata(flipped_and_unsummed)),
    "metadata checksums all stripped": Row(
        ["data", "check", "ds"], 1, "4 of 4 parts have no sha256",
        setup=edited_metadata(lambda m: [p.pop("sha256") for ps in m["files"].values() for p in ps])),
    "--overwrite of a folder with the user's files": Row(
        ["data", "build", "sudoku", "--out", "ds", "--overwrite"], 1, "files no dataset build wrote (train/mine.txt)",
        setup=lambda p: (make_dataset(p / "ds") / "train" / "mine.txt").write_text("keep me")),
    "--overwrite of the user's Parquet files, no metadata.json": Row(
        ["data", "build", "sudoku", "--out", "ds", "--overwrite"], 1, "ds exists and is not a complete dataset of ours",
        {"ds/train/my-results-2025.parquet": "PAR1 mine", "ds/test/holdout.parquet": "PAR1 mine"}),
    "solve --file of binary data": Row(["solve", "--model", "models:/m@champion", "--file", "bin.dat"], 2,
                                       "bin.dat is not UTF-8 text (byte 1)", {"bin.dat": b"x\xff\x00\x17"}),
    "data config unknown key": Row(["data", "build", "sudoku", "--config", "d.yaml"], 1, "cont",
                                   {"d.yaml": "sudoku: {cont: 3}\n"}),
    # sweeps and benchmarks
    "sweep unknown key": Row(["tune", "--config", "s.yaml"], 1, "bogus", {"s.yaml": "name: s\nbogus: 1\n"}),
    "bench budget 0": Row(["bench", "reasoning", "--minutes", "0"], 1, "minutes must be a number of minutes > 0"),
    "bench unknown variant": Row(["bench", "reasoning", "--variants", "nope"], 1, "unknown ['nope']"),
    "bench merge of non-reports": Row(["bench", "merge", "a", "b", "--out", "m"], 1, "no curves.json",
                                      {"a/x": "", "b/x": ""}),
}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: (size, modification time in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_named_and_nothing_is_written(name, tmp_path, monkeypatch):
    row = ROWS[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HRM_DEBUG", raising=False)
    for path, text in row.files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (tmp_path / path).write_bytes(text)
        else:
            (tmp_path / path).write_text(text)
    if row.setup:
        row.setup(tmp_path)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, row.args)
    assert (result.exit_code, row.message in result.output) == (row.code, True), result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (ValueError, OSError))
    assert snapshot(tmp_path) == before, "the failed command wrote or changed files"


def test_debug_shows_the_traceback_of_the_same_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"name": "r", "optim": {"lr": -1}}))
    plain = CliRunner().invoke(main, TRAIN)
    debug = CliRunner().invoke(main, ["--debug", *TRAIN])
    assert plain.exit_code == debug.exit_code == 1
    assert "Traceback" not in plain.output and "Traceback" in debug.output
    assert "lr must be a finite number >= 0, got -1" in debug.output  # the same message, after the traceback


@pytest.fixture
def failing_command():
    """A command of the real ``hrm`` group that raises a plain ValueError, as a check deep in a library does."""
    @click.command(name="fails-for-test")
    def fails():
        raise ValueError("widget count must be >= 1, got 0")

    main.add_command(fails)
    yield
    main.commands.pop("fails-for-test")


def test_a_user_error_no_command_caught_is_one_line_unless_debugging(failing_command, monkeypatch):
    monkeypatch.delenv("HRM_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["fails-for-test"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: widget count must be >= 1, got 0 (hrm --debug shows where)" in result.output
    debug = CliRunner().invoke(main, ["--debug", "fails-for-test"])
    assert isinstance(debug.exception, ValueError)  # raised as is: Python prints the traceback
    monkeypatch.setenv("HRM_DEBUG", "1")
    assert isinstance(CliRunner().invoke(main, ["fails-for-test"]).exception, ValueError)


# ------------------------------------------------------------------------------------------------ with Ray
CSV_ROWS = {"rating inf": (3, "inf"), "rating 3e9 (past int32)": (3, "3e9"), "a 200 kB field": (0, "x" * 200_000)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CSV_ROWS))
def test_a_bad_csv_row_names_its_line_and_skip_invalid_counts_it(ray_session, tmp_path, monkeypatch, name):
    from tests.pipeline.data.test_data_build import csv_config, csv_rows, write_csv

    monkeypatch.chdir(tmp_path)
    rows, _, _ = csv_rows()
    column, value = CSV_ROWS[name]
    rows[5][column] = value  # data row 6: line 7
    write_csv(tmp_path / "broken.csv", rows)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(csv_config("broken.csv")))
    before = snapshot(tmp_path)
    args = ["data", "build", "sudoku", "--config", "d.yaml", "--out", "out"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "broken.csv, line 7" in result.output, result.output
    assert "Traceback" not in result.output and snapshot(tmp_path) == before
    skipped = CliRunner().invoke(main, [*args, "--skip-invalid"])
    assert skipped.exit_code == 0 and "skipped 1 invalid" in skipped.output, skipped.output


def test_a_tracking_server_answering_500_is_one_line_before_any_cluster_work(tmp_path, monkeypatch):
    """The probe's case: a server answering HTTP 500 (a broken auth config) made `hrm train` retry for 275 s and end
    in a 100-line traceback. Now: one line naming the server and the status, at once, nothing written."""
    import time

    from tests.pipeline.tracking.test_buffer import answering

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_dataset(tmp_path / "ds")
    with answering(500) as (uri, seen):
        (tmp_path / "train.yaml").write_text(yaml.safe_dump({"name": "r", "data": "ds",
                                                            "tracking": {"tracking_uri": uri}}))
        before, began = snapshot(tmp_path), time.monotonic()
        result = CliRunner().invoke(main, TRAIN)
    assert time.monotonic() - began < 30 and len(seen) == 1
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"Error: MLflow tracking server {uri} answered HTTP 500 to /api/2.0/mlflow/experiments/search" in \
        result.output and "look at the server's log" in result.output, result.output
    assert snapshot(tmp_path) == before
