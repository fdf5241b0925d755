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
