"""A line per finished or failed trial in the sweep's log (a sweep without a terminal said nothing of its trials)."""

import logging
from types import SimpleNamespace

from pipeline.tune.trial_lines import TrialLines


def test_each_finished_trial_is_a_line_saying_how_far_the_sweep_got(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.tune.trial_lines")
    lines = TrialLines("eval/exact_accuracy", total=4)
    done = SimpleNamespace(trial_id="a1", config={"model.halt_max_steps": 4, "model.l_cycles": 2},
                           last_result={"eval/exact_accuracy": 0.8421})
    lines.on_trial_complete(3, [], done)
    failed = SimpleNamespace(trial_id="b2", config={"model.halt_max_steps": 8}, last_result=None)
    lines.on_trial_error(4, [], failed)
    assert caplog.messages == [
        "trial a1 finished (1 of 4): eval/exact_accuracy 0.8421 at its last report; model.halt_max_steps=4, "
        "model.l_cycles=2",
        "trial b2 failed (2 of 4): no eval/exact_accuracy reported; model.halt_max_steps=8"]
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]


def test_a_resumed_sweep_counts_the_trials_its_earlier_parts_ended(caplog):
    """Tune restores a resumed sweep's ended trials as TERMINATED (or ERROR): the count goes on from them."""
    caplog.set_level(logging.INFO, logger="pipeline.tune.trial_lines")
    lines = TrialLines("eval/exact_accuracy", total=6)
    before = [SimpleNamespace(trial_id=f"p{i}", status=s) for i, s in enumerate(["TERMINATED", "TERMINATED", "ERROR"])]
    running = SimpleNamespace(trial_id="r", status="RUNNING", config={}, last_result={"eval/exact_accuracy": 0.5})
    pending = SimpleNamespace(trial_id="q", status="PENDING", config={}, last_result=None)
    trials = [*before, running, pending]
    lines.on_trial_complete(1, trials, running)
    running.status = "TERMINATED"
    pending.status = "RUNNING"
    lines.on_trial_complete(2, trials, pending)
    assert [m.split(":")[0] for m in caplog.messages] == ["trial r finished (4 of 6)", "trial q finished (5 of 6)"]
