"""ASHA's rungs across a sweep's parts.

Ray Tune does not save its scheduler with the experiment (ray-project/ray issue 30838, open for Ray 2.60):
``Tuner.restore`` rebuilds ASHA from the state pickled when the sweep began, so every value recorded at its rungs is
lost, and each resumed part would start ASHA from nothing: its first trials would meet no rival at any rung and run to
the end. On a resume the rungs are rebuilt here from what the trials reported (Tune's saved results): each trial's
value at its first report at or past each rung, which is what ASHA records. A trial that a blank ASHA let past a rung
(a part resumed before this existed) is judged at its next rung.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)


Report = tuple[float, str, float, float]  # (when: Tune's timestamp, trial id, time_attr's value, metric's value)


def saved_reports(tune_path: Path, time_attr: str, metric: str) -> list[Report]:
    """Every trial's reports as Tune saved them under ``tune_path``, in the order they were made."""
    from ray.tune import ExperimentAnalysis

    out: list[Report] = []
    for frame in ExperimentAnalysis(str(tune_path)).trial_dataframes.values():
        if frame.empty or not {"timestamp", "trial_id", time_attr, metric} <= set(frame.columns):
            continue
        rows = frame[["timestamp", "trial_id", time_attr, metric]].dropna()
        out += [(float(when), str(trial), float(t), float(value)) for when, trial, t, value in
                rows.itertuples(index=False)]
    return sorted(out)


def replay(scheduler: Any, reports: list[Report]) -> set[str]:
    """Record ``reports`` in the rungs of ``scheduler`` (an ASHAScheduler of one bracket) in the order they were made,
    as ASHA would have. A trial that reported past a rung where ASHA would have stopped it (run on by a blank ASHA)
    keeps no record there, so its next report is judged at that rung again; returns those trials."""
    from ray.tune.schedulers import TrialScheduler

    bracket = scheduler._brackets[0]
    stopped: dict[str, dict] = {}  # trial -> the rung's records where ASHA stopped it
    judged_again: set[str] = set()
    for _, trial_id, t, value in reports:
        if trial_id in stopped:  # a report after the stop: ASHA would not have seen it
            stopped[trial_id].pop(trial_id, None)
            judged_again.add(trial_id)
            continue
        before = {id(recorded): set(recorded) for _, recorded in bracket._rungs}
        action = bracket.on_result(SimpleNamespace(trial_id=trial_id), t, scheduler._metric_op * value)
        if action == TrialScheduler.STOP:
            stopped[trial_id] = next((recorded for _, recorded in bracket._rungs
                                      if trial_id in recorded and trial_id not in before[id(recorded)]), {})
    return judged_again


def restore_rungs(tuner: Any, tune_path: Path, time_attr: str, metric: str) -> int:
    """Rebuild the rungs of a restored ``tuner``'s ASHA from its trials' saved reports; returns the trials replayed
    (0, with a warning, where the scheduler cannot be reached or has several brackets: ASHA puts a trial in a bracket
    at random, which its reports do not say)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None), "scheduler", None)
    if not isinstance(scheduler, AsyncHyperBandScheduler) or len(scheduler._brackets) != 1:
        log.warning("ASHA's rungs were not rebuilt on this resume (a scheduler of %s): trials of this part meet "
                    "only each other at its rungs", type(scheduler).__name__)
        return 0
    reports = saved_reports(tune_path, time_attr, metric)
    again = replay(scheduler, reports)
    trials = len({trial for _, trial, _, _ in reports})
    log.info("ASHA's rungs rebuilt from %d trials' reports (%s)%s", trials,
             "; ".join(f"at {milestone:g}: {len(recorded)}" for milestone, recorded in
                       reversed(scheduler._brackets[0]._rungs)),
             f"; judged again at their next report, having run past a rung where ASHA stops them: "
             f"{', '.join(sorted(again))}" if again else "")
    return trials
