"""pipeline.core.progress without Ray: which mode, when a progress line is due, what it says, and the console filter.
The whole non-terminal output of a real run is checked by tests/pipeline/test_demo.py."""

import io
import logging
import math

import pytest

from pipeline.core import progress
from pipeline.core.progress import (
    BudgetLines,
    StepLines,
    crossed,
    format_duration,
    progress_mode,
    quiet_console,
)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def lines_of(total, initial=0, steps=None, **kwargs):
    emitted = []
    bar = StepLines(total, initial, emit=emitted.append, clock=Clock(), **kwargs)
    for _ in range(total - initial if steps is None else steps):
        bar.update(1)
    return bar, emitted


def test_mode_follows_stdout_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("HRM_PROGRESS", raising=False)
    assert progress_mode(FakeTTY()) == "bar"
    assert progress_mode(io.StringIO()) == "lines"
    assert progress_mode(object()) == "lines"  # no isatty at all
    monkeypatch.setenv("HRM_PROGRESS", "lines")
    assert progress_mode(FakeTTY()) == "lines"
    monkeypatch.setenv("HRM_PROGRESS", " BAR ")
    assert progress_mode(io.StringIO()) == "bar"


def test_an_unknown_mode_is_ignored_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("HRM_PROGRESS", "fancy")
    with caplog.at_level(logging.WARNING, logger="pipeline.core.progress"):
        assert progress_mode(FakeTTY()) == "bar"
    assert "HRM_PROGRESS='fancy'" in caplog.text


def test_driver_setup_records_the_mode_for_the_processes_it_starts(monkeypatch):
    monkeypatch.setenv("HRM_PROGRESS", "")  # restored (removed) after the test, whatever setup writes
    monkeypatch.setattr(progress, "quiet_ray_data", lambda: None)  # that part needs Ray Data; see test_demo
    assert progress.setup_driver_output("bar") == "bar"
    assert progress.progress_mode(io.StringIO()) == "bar"


@pytest.mark.parametrize("root_level, quiet", [(logging.INFO, True), (logging.DEBUG, False)])
def test_lines_mode_keeps_library_info_lines_out_unless_verbose(monkeypatch, root_level, quiet):
    monkeypatch.setenv("HRM_PROGRESS", "")
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setattr(progress, "quiet_ray_data", lambda: None)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root_level)
    for name in progress.QUIET_LIBRARIES:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    progress.setup_driver_output("lines")
    import os

    assert (os.environ.get("MLFLOW_LOGGING_LEVEL") == "WARNING") is quiet  # what mlflow reads on import
    assert (logging.getLogger("matplotlib").level == logging.WARNING) is quiet
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


@pytest.mark.parametrize("total", [1, 3, 7, 10, 11, 19, 20, 99, 100, 101, 800, 12345])
def test_a_line_at_the_first_step_past_each_tenth(total):
    _, emitted = lines_of(total)
    steps = [int(line.split()[2].split("/")[0]) for line in emitted]
    expected = [math.ceil(total * k / 10) for k in range(1, 11)] if total >= 10 else list(range(1, total + 1))
    assert steps == expected and steps[-1] == total


def test_crossed_marks():
    assert [k for k in range(1, 101) if crossed(k - 1, k, 100)] == list(range(10, 101, 10))
    assert [k for k in range(1, 26) if crossed(k - 1, k, 25)] == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert crossed(0, 5, 3)  # past the end
    assert not crossed(4, 4, 100) and not crossed(0, 1, 0)
    assert crossed(0, 55, 100)  # several marks in one update: one line


def test_line_reads_step_time_rate_eta_and_metrics():
    emitted = []
    clock = Clock()
    bar = StepLines(100, emit=emitted.append, clock=clock)
    clock.now += 30  # the start: the data stream, compilation
    bar.update(1)
    bar.set_metrics({"train/lm_loss": 1.23456, "train/accuracy": 0.5, "train/exact_accuracy": 0.125,
                     "train/lr": 1e-3})
    for _ in range(9):
        clock.now += 2
        bar.update(1)
    assert emitted == ["train step 10/100 (10%) | 48s elapsed | 2 s/step | ETA 3m00s | loss 1.235 | acc 0.500 | "
                       "exact 0.125"]
    for _ in range(10):
        clock.now += 0.25
        bar.update(1)
    assert emitted[-1].startswith("train step 20/100 (20%) | 50s elapsed | 1.08 s/step | ETA 1m26s | loss 1.235")


def test_first_line_rate_and_unknowns():
    emitted = []
    clock = Clock()
    bar = StepLines(5, emit=emitted.append, clock=clock)
    clock.now += 4
    bar.update(1)
    assert emitted == ["train step 1/5 (20%) | 4s elapsed | 4 s/step | ETA 16s"]
    bar = StepLines(5, emit=emitted.append, clock=Clock())  # no time passed: rate unknown
    bar.update(1)
    assert emitted[-1] == "train step 1/5 (20%) | 0s elapsed | ? steps/s | ETA ?"


def test_resumed_run_counts_from_where_it_was():
    bar, emitted = lines_of(100, initial=45)
    assert [line.split()[2] for line in emitted] == ["50/100", "60/100", "70/100", "80/100", "90/100", "100/100"]
    assert bar.close() is None  # the end had its line


def test_close_reports_an_early_stop_once():
    bar, emitted = lines_of(100, steps=33)
    assert bar.close().startswith("train step 33/100 (33%)")
    assert bar.close() is None
    assert len(emitted) == 4


def test_default_emit_is_an_info_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.core.progress"):
        StepLines(1, clock=Clock()).update(1)
    assert [r.getMessage() for r in caplog.records] == ["train step 1/1 (100%) | 0s elapsed | ? steps/s | ETA 0s"]


def test_under_a_time_budget_lines_follow_training_time_not_steps():
    """The run under ``max_minutes`` (the benchmark's): a line each tenth of the budget, which says training time
    done and left, the step and the pace; the step count against epochs would say nothing (an ETA of days)."""
    emitted = []
    bar = BudgetLines(3600, emit=emitted.append)
    bar.set_metrics({"train/lm_loss": 0.5, "train/exact_accuracy": 0.25})
    for step in range(1, 1201):
        bar.advance(step, step * 3.0)  # 3 s a step: 1200 steps fill the hour
    assert len(emitted) == 10
    assert emitted[0] == ("training time 6m00s/1h00m (10%) | step 120 | 3 s/step | 54m00s left | loss 0.5 | "
                          "exact 0.250")
    assert emitted[-1].startswith("training time 1h00m/1h00m (100%) | step 1200 | 3 s/step | 0s left")
    assert bar.close() is None


def test_a_resumed_budget_run_goes_on_from_its_trained_time_and_closes_once():
    emitted = []
    bar = BudgetLines(100, initial_seconds=42.0, initial_step=7, emit=emitted.append)
    for step in range(8, 20):
        bar.advance(step, 42.0 + (step - 7) * 1.0)  # to 54 s
    assert [line.split(" | ")[0] for line in emitted] == ["training time 50s/1m40s (50%)"]
    assert bar.close().startswith("training time 54s/1m40s (54%) | step 19 | 1 steps/s | 46s left")
    assert bar.close() is None


@pytest.mark.parametrize("budget, kind", [(None, StepLines), (60.0, BudgetLines)])
def test_the_display_follows_the_budget(budget, kind):
    assert isinstance(progress.make_progress("lines", 100, 0, budget), kind)


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (187, "3m07s"),
                                           (7500, "2h05m"), (-1, "?"), (float("nan"), "?"), (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_quiet_console_keeps_info_of_a_package_off_the_console_only(tmp_path):
    name = "hrm_test_pkg"
    pkg, child, other = (logging.getLogger(n) for n in (name, f"{name}.sub", "hrm_test_other"))
    console = logging.StreamHandler(io.StringIO())
    to_file = logging.FileHandler(tmp_path / "all.log")  # a file keeps everything
    for logger in (pkg, other):
        logger.handlers[:] = [console] + ([to_file] if logger is pkg else [])
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    try:
        quiet_console(name, logging.WARNING, drop=("noisy notice",))
        quiet_console(name, logging.WARNING, drop=("noisy notice",))  # idempotent
        assert len(console.filters) == 1 and not to_file.filters
        pkg.info("package info")
        child.info("child info")
        child.warning("child warning")
        pkg.warning("noisy notice: dropped")
        other.info("other info")
        shown = console.stream.getvalue()
        assert "child warning" in shown and "other info" in shown
        assert "package info" not in shown and "child info" not in shown and "noisy notice" not in shown
        to_file.flush()
        assert "package info" in (tmp_path / "all.log").read_text()
    finally:
        to_file.close()
        for logger in (pkg, other):
            logger.handlers.clear()


def test_quiet_console_matches_loggers_named_by_file_path():
    """Some modules of a package name their logger by file path (Ray Train's execution context does)."""
    record = logging.LogRecord("/site-packages/pkg/sub/context.py", logging.INFO, "/site-packages/pkg/sub/context.py",
                               1, "Reporting training result", None, None)
    quiet = progress._QuietBelow("pkg", logging.WARNING, where="/site-packages/pkg/")
    assert not quiet.filter(record)
    record.levelno = logging.WARNING
    assert quiet.filter(record)
    elsewhere = logging.LogRecord("x", logging.INFO, "/site-packages/other/a.py", 1, "kept", None, None)
    assert quiet.filter(elsewhere)


def test_quiet_ray_data_turns_its_bars_off_and_keeps_warnings(monkeypatch):
    """Ray Data imported, not started: bars off for Datasets made from now on; INFO and the notice that bars are
    off kept off the console, other warnings shown."""
    import ray.data

    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "enable_progress_bars", True)
    progress.quiet_ray_data()
    assert context.enable_progress_bars is False
    consoles = progress._consoles(logging.getLogger("ray.data"))
    assert consoles and all(any(isinstance(f, progress._QuietBelow) for f in h.filters) for h in consoles)

    def shown(level, message, name="ray.data._internal.execution.streaming_executor"):
        record = logging.LogRecord(name, level, __file__, 1, message, None, None)
        return all(h.filter(record) for h in consoles)

    assert not shown(logging.INFO, "Starting execution of Dataset train_1")
    assert not shown(logging.WARNING, "Progress bars disabled. To enable, set ...")
    assert shown(logging.WARNING, "the cluster is short of object store memory")
    assert shown(logging.ERROR, "task failed")


def heartbeat_lines(caplog, seconds: float, every_s: float, mode: str, say=None) -> list[str]:
    import time

    caplog.set_level(logging.INFO, logger="pipeline.core.progress")
    calls = []

    def default(elapsed: float) -> str:
        calls.append(elapsed)
        return f"beat {len(calls)}"

    with progress.Heartbeat(say or default, every_s=every_s, mode=mode):
        time.sleep(seconds)
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.core.progress"]


def test_a_long_stage_says_how_far_it_got_every_interval_and_stops_with_it(caplog):
    import time

    lines = heartbeat_lines(caplog, 0.55, 0.1, "lines")
    assert 3 <= len(lines) <= 5 and lines[:3] == ["beat 1", "beat 2", "beat 3"], lines
    time.sleep(0.25)  # the block has ended: no line after it
    assert len([r for r in caplog.records if r.name == "pipeline.core.progress"]) == len(lines)


@pytest.mark.parametrize("seconds, mode", [(0.05, "lines"), (0.35, "bar")])
def test_a_short_stage_or_a_terminal_gets_no_heartbeat(caplog, seconds, mode):
    assert heartbeat_lines(caplog, seconds, 0.1, mode) == []


def test_a_failing_progress_line_never_fails_the_stage(caplog):
    def broken(elapsed):
        raise OSError("the store is gone")

    assert heartbeat_lines(caplog, 0.25, 0.1, "lines", say=broken) == []


@pytest.mark.parametrize("done, total, elapsed, text", [
    (12, 40, 130, "maze originals: 12/40 chunks (30%), 2m10s elapsed, ETA 5m03s"),
    (0, 40, 30, "maze originals: 0/40 chunks (0%), 30s elapsed, ETA ?"),
    (1_000, 1_000, 61, "maze originals: 1,000/1,000 chunks (100%), 1m01s elapsed, ETA 0s"),
])
def test_a_stage_line_reads_done_of_total_elapsed_and_eta(done, total, elapsed, text):
    assert progress.stage_line("maze originals", done, total, "chunks", elapsed) == text
