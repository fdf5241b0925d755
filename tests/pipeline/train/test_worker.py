"""The worker loop's rules, without Ray: early stopping, the non-finite rule, the resume position, the batch stream,
the compile default, the test-only fault hook, and `hrm train` checking its inputs once."""

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.train.batches import ShardedBatches
from pipeline.train.checkpoint import Position
from pipeline.train.config import TrainConfig
from pipeline.train.faults import inject_fault
from pipeline.train.worker import EarlyStop, compile_on, skip_nonfinite, stream


def test_early_stop_needs_patience_logs_in_a_row_above_the_threshold():
    stop = EarlyStop(threshold=0.9, patience=2)
    assert not stop.update({"train/exact_accuracy": 0.95})
    assert not stop.update({"train/exact_accuracy": 0.5})  # below: the count starts again
    assert not stop.update({"train/exact_accuracy": 0.9})  # at the threshold counts
    assert not stop.update({"train/lm_loss": 1.0})  # no row halted: no exact accuracy, nothing changes
    assert stop.update({"train/exact_accuracy": 1.0})


def test_no_threshold_never_stops():
    stop = EarlyStop(threshold=None, patience=1)
    assert not any(stop.update({"train/exact_accuracy": 1.0}) for _ in range(3))


def test_nonfinite_steps_are_skipped_until_the_limit_in_a_row():
    position = Position(step=7)
    assert skip_nonfinite(position, finite=False, limit=3) and position.nonfinite_in_row == 1
    assert skip_nonfinite(position, finite=False, limit=3) and position.nonfinite_in_row == 2
    assert not skip_nonfinite(position, finite=True, limit=3) and position.nonfinite_in_row == 0  # a finite step resets
    skip_nonfinite(position, finite=False, limit=3)
    skip_nonfinite(position, finite=False, limit=3)
    with pytest.raises(RuntimeError, match="3 non-finite steps in a row at step 7: stopping"):
        skip_nonfinite(position, finite=False, limit=3)


def test_advance_counts_the_step_and_points_at_the_next_batch():
    position = Position(step=4, epoch=0, batch_in_epoch=9)
    position.advance(epoch=1, index=2)
    assert (position.step, position.epoch, position.batch_in_epoch) == (5, 1, 3)


def fake_worker(position, *, epochs=2, total_steps=100, n=12, global_batch=4):
    ids = np.arange(n)
    share = {"inputs": np.ones((n, 3), np.uint8), "labels": np.ones((n, 3), np.uint8),
             "puzzle_ids": ids.astype(np.int32)}
    batches = ShardedBatches(share, n=n, global_batch=global_batch, shards=global_batch, rank=0, world=1, seed=0)
    return SimpleNamespace(position=position, total_steps=total_steps, cfg=SimpleNamespace(epochs=epochs),
                           batches=batches)


def test_stream_starts_at_the_resume_position_and_moves_to_the_next_epoch():
    w = fake_worker(Position(step=2, epoch=0, batch_in_epoch=2))
    seen = []
    for epoch, index, rows in stream(w):
        seen.append((epoch, index))
        if epoch == 1:
            assert (w.position.epoch, w.position.batch_in_epoch) == (1, 0)  # moved on at the end of epoch 0
    assert seen == [(0, 2), (1, 0), (1, 1), (1, 2)]
    assert (w.position.epoch, w.position.batch_in_epoch) == (2, 0)


def test_stream_gives_the_same_rows_as_an_uninterrupted_epoch():
    whole = [rows for _, _, rows in stream(fake_worker(Position()))]
    resumed = [rows for _, _, rows in stream(fake_worker(Position(step=4, epoch=1, batch_in_epoch=1)))]
    for a, b in zip(whole[4:], resumed):
        np.testing.assert_array_equal(a["puzzle_ids"], b["puzzle_ids"])
    assert len(resumed) == 2


def test_stream_is_empty_when_all_steps_are_done():
    assert list(stream(fake_worker(Position(step=5), total_steps=5))) == []


@pytest.mark.parametrize("setting, device, expected", [
    (None, "cuda", True), (None, "cpu", False), (True, "cpu", True), (False, "cuda", False)])
def test_compile_defaults_to_the_gpu(setting, device, expected):
    assert compile_on(TrainConfig(compile=setting), torch.device(device)) is expected


def test_the_fault_hook_fires_once_on_its_worker_and_step(tmp_path):
    fault = {"rank": 1, "step": 3, "kind": "raise", "marker": str(tmp_path / "marker")}
    inject_fault(None, 1, 3)  # a real run: nothing
    inject_fault(fault, 0, 3)  # another worker
    inject_fault(fault, 1, 2)  # another step
    with pytest.raises(RuntimeError, match="injected failure at step 3"):
        inject_fault(fault, 1, 3)
    inject_fault(fault, 1, 3)  # the marker records it: not again
    assert (tmp_path / "marker").read_text() == "3"


def test_a_pause_holds_its_worker_until_the_file_appears_once(tmp_path, monkeypatch):
    import json
    import threading

    from pipeline.train import faults

    until = tmp_path / "go"
    pause = {"rank": 0, "step": 2, "kind": "pause", "marker": str(tmp_path / "paused"), "until": str(until)}
    monkeypatch.setenv(faults.ENV, json.dumps([pause]))
    (found,) = faults.from_env()
    threading.Timer(0.5, until.touch).start()
    started = time.monotonic()
    inject_fault(found, 0, 2)
    assert time.monotonic() - started >= 0.4 and (tmp_path / "paused").exists()
    started = time.monotonic()
    inject_fault([found], 0, 2)  # once
    assert time.monotonic() - started < 0.1
    monkeypatch.delenv(faults.ENV)
    assert faults.from_env() is None


def test_hrm_train_prepares_once(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import pipeline.train.run as run_module
    from pipeline.cli import main

    calls = []

    def counted(cfg, resume, uri=None):
        calls.append(resume)
        raise ValueError("stop here")

    monkeypatch.setattr(run_module, "prepare", counted)
    result = CliRunner().invoke(main, ["train", "--set", f"storage_path={tmp_path}"])
    assert result.exit_code == 1 and "stop here" in result.output
    assert calls == [False]


def test_clock_counts_only_training_time_and_stops_at_the_budget():
    from pipeline.train.worker import Clock

    position = Position(trained_seconds=50.0)  # a resumed run goes on counting
    clock = Clock(max_seconds=60.0, eval_seconds=20.0, last_eval=50.0, tick=time.perf_counter() - 5.0)  # 5 s ago
    clock.count(position)
    assert position.trained_seconds == pytest.approx(55.0, abs=0.5)
    assert not clock.out_of_time(position) and not clock.eval_due(position)
    position.trained_seconds = 70.5
    assert clock.out_of_time(position) and clock.eval_due(position)
    clock.evaluated(position)  # an evaluation now: the next one is 20 s of training later
    assert clock.last_eval == 70.5 and not clock.eval_due(position)
    no_budget = Clock(None, None)
    assert not no_budget.out_of_time(position) and not no_budget.eval_due(position)


def test_a_checkpoint_is_due_after_checkpoint_minutes_of_wall_time():
    """checkpoint_minutes counts wall time since the last checkpoint — evaluations and waits included, as a lost node
    would cost them — not training time."""
    from pipeline.train.worker import Clock

    position = Position()
    clock = Clock(None, None, checkpoint_seconds=30.0, last_checkpoint=time.perf_counter() - 10.0)
    clock.count(position)
    assert not clock.checkpoint_due() and clock.since_checkpoint == pytest.approx(10.0, abs=0.5)
    clock.last_checkpoint -= 25.0  # 35 s since the last checkpoint
    clock.count(position)
    assert clock.checkpoint_due()
    clock.evaluated(position)
    assert not clock.checkpoint_due() and clock.since_checkpoint == 0.0
    assert not Clock(None, None).checkpoint_due()


@pytest.mark.parametrize("step, seconds, expected", [
    (5, 10.0, 1000),  # fewer than 10 steps: the configured total
    (100, 30.0, 200),  # 100 steps in 30 s of a 60 s budget: the cosine is laid over 200 steps
    (100, 59.9, 101),  # at the end of the budget: at least the next step
    (100, 1.0, 1000),  # a pace that would overrun the configured total: capped by it
])
def test_the_lr_schedule_runs_over_the_time_budget(step, seconds, expected):
    from pipeline.train.worker import Clock

    clock = Clock(max_seconds=60.0, eval_seconds=None)
    assert clock.schedule_total(Position(step=step, trained_seconds=seconds), total_steps=1000) == expected
    assert Clock(None, None).schedule_total(Position(step=step, trained_seconds=seconds), 1000) == 1000


@pytest.mark.parametrize("key, value", [("max_minutes", 0), ("eval_minutes", -1.0), ("max_minutes", float("nan"))])
def test_time_budgets_must_be_positive_minutes(key, value):
    with pytest.raises(ValueError, match=f"{key} must be a number of minutes > 0"):
        TrainConfig(**{key: value})
