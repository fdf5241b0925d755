"""ASHA's rungs rebuilt from saved reports (pipeline.tune.rungs), checked against ASHA itself fed the same reports."""

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from pipeline.tune.rungs import replay


def asha():
    return ASHAScheduler(time_attr="train_minutes", metric="eval/accuracy", mode="max", max_t=18, grace_period=2,
                         reduction_factor=3)


def live(reports):
    """ASHA fed ``reports`` (when, trial, minutes, value) in order, as Tune feeds it; a trial it stops (at a rung or
    at max_t) reports no more."""
    scheduler, stopped = asha(), set()
    for _, trial_id, t, value in reports:
        trial = SimpleNamespace(trial_id=trial_id)
        if trial_id in stopped:
            continue
        if trial_id not in scheduler._trial_info:
            scheduler.on_trial_add(None, trial)
        result = {"train_minutes": t, "eval/accuracy": value}
        if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, trial, result)  # as Tune's controller does for a stopped trial
            stopped.add(trial_id)
    return scheduler


def rungs(scheduler):
    return {milestone: dict(recorded) for milestone, recorded in scheduler._brackets[0]._rungs}


# Five trials, one after another (as the study runs them), reporting every 2 minutes: "a" leads, "b" and "c" fall
# below the best third at 2 minutes, "d" at 6, "e" goes on to 18.
REPORTS = [(when, trial, t, value) for when, (trial, t, value) in enumerate([
    ("a", 2, 0.70), ("a", 4, 0.75), ("a", 6, 0.80), ("a", 8, 0.82), ("a", 18, 0.90),
    ("b", 2, 0.50),
    ("c", 2, 0.60),
    ("d", 2, 0.72), ("d", 4, 0.73), ("d", 6, 0.74),
    ("e", 2, 0.80), ("e", 4, 0.84), ("e", 6, 0.88), ("e", 18, 0.95),
])]


def test_replayed_rungs_are_those_asha_recorded():
    reference = live(REPORTS)
    rebuilt = asha()
    assert replay(rebuilt, REPORTS) == set()
    assert rungs(rebuilt) == rungs(reference)
    assert set(rungs(rebuilt)[2]) == set("abcde") and set(rungs(rebuilt)[6]) == {"a", "d", "e"}


def test_a_trial_run_past_its_stop_is_judged_again_at_its_next_report():
    # "b" ran on past 2 minutes, as under an ASHA restored blank: it keeps no record at 2 and is stopped next time
    ran_on = REPORTS + [(100, "b", 4, 0.55), (101, "b", 6, 0.58)]
    rebuilt = asha()
    assert replay(rebuilt, ran_on) == {"b"}
    assert "b" not in rungs(rebuilt)[2] and "b" not in rungs(rebuilt)[6]
    trial = SimpleNamespace(trial_id="b")
    rebuilt.on_trial_add(None, trial)  # what Tune does for each trial it restores
    assert rebuilt.on_trial_result(None, trial, {"train_minutes": 8, "eval/accuracy": 0.6}) == TrialScheduler.STOP


@pytest.mark.parametrize("value, action", [(0.99, TrialScheduler.CONTINUE), (0.5, TrialScheduler.STOP)])
def test_a_new_trial_meets_the_rebuilt_rungs(value, action):
    rebuilt = asha()
    replay(rebuilt, REPORTS)
    trial = SimpleNamespace(trial_id="new")
    rebuilt.on_trial_add(None, trial)
    assert rebuilt.on_trial_result(None, trial, {"train_minutes": 2, "eval/accuracy": value}) == action
