"""A line per finished trial in the sweep's log: when a sweep runs without a terminal (a job, a log file), Ray Tune's
own table is off and nothing said how far it got."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)
ENDED = ("TERMINATED", "ERROR")  # Ray Tune's Trial.status of a trial that has ended


class TrialLines(Callback):
    """``trial <id> finished (3 of 8): exact_accuracy 0.842 at its last report; model.halt_max_steps=4, ...``, and a
    warning for a trial that failed. ``total``: the trials the sweep plans (a grid's size × repeats; None: unknown).
    The count includes the trials that ended in earlier parts of a resumed sweep (Tune restores them ended)."""

    def __init__(self, metric: str, total: int | None = None):
        self.metric, self.total, self.done = metric, total, 0

    def _line(self, trial: Any, trials: list, how: str) -> str:
        ended_before = sum(1 for t in trials if t is not trial and getattr(t, "status", None) in ENDED)
        self.done = max(self.done, ended_before) + 1
        of = f" ({self.done} of {self.total})" if self.total else f" ({self.done} so far)"
        value = (trial.last_result or {}).get(self.metric)
        score = f"{self.metric} {value:.4g} at its last report" if isinstance(value, (int, float)) else \
            f"no {self.metric} reported"
        config = ", ".join(f"{k}={v}" for k, v in sorted((trial.config or {}).items()) if k != "setup")
        return f"trial {trial.trial_id} {how}{of}: {score}; {config}"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        log.info("%s", self._line(trial, trials, "finished"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        log.warning("%s", self._line(trial, trials, "failed"))
