"""Every trial's learning curve in the sweep's parent MLflow run, as it is reported: one metric per trial,
``curves/<its values>`` (e.g. ``curves/halt_max_steps-4_h_cycles-2_l_cycles-1``), its eval exact accuracy with the
seconds of training as the step, so MLflow's chart of the parent run overlays the trials against training time."""

from __future__ import annotations

import logging
import re
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)
PREFIX = "curves/"
CURVE_METRIC = "eval/exact_accuracy"


def curve_key(params: dict[str, Any]) -> str:
    """The metric key of a trial with searched ``params`` (dotted keys): the keys' last parts and values, in the
    characters MLflow takes in a key."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in sorted(params.items())]
    return PREFIX + re.sub(r"[^\w./ -]", "_", "_".join(parts) or "trial")


class ParentCurves(Callback):
    """Logs each trial's ``eval/exact_accuracy`` at every report to the parent run ``parent_run_id`` (step: seconds
    of training, ``train_minutes`` × 60). ``space``: the searched keys, which name the trial's curve."""

    def __init__(self, tracking_uri: str, parent_run_id: str, space: list[str]):
        self.tracking_uri, self.parent_run_id, self.space = tracking_uri, parent_run_id, list(space)
        self._client = None

    def __getstate__(self) -> dict[str, Any]:  # Tune saves callbacks with the sweep's state: not the client
        return {**self.__dict__, "_client": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info) -> None:
        value, minutes = result.get(CURVE_METRIC), result.get("train_minutes")
        if not isinstance(value, (int, float)) or not isinstance(minutes, (int, float)):
            return
        params = {k: v for k, v in (trial.config or {}).items() if k in self.space}
        try:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(self.tracking_uri)
            self._client.log_metric(self.parent_run_id, curve_key(params), float(value), step=round(minutes * 60))
        except Exception as err:  # noqa: BLE001 -- a chart of the parent run is not worth a trial
            log.warning("could not log trial %s's curve to the sweep's run: %s", trial.trial_id, err)
