"""MLflow: the run of a training job, its metrics, the logged pyfunc model, the registry and its champion alias."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from pipeline.version import code_version_string

log = logging.getLogger(__name__)
CHAMPION = "champion"


class RunLogger:
    """Logs metric batches to one MLflow run (used by the rank-0 worker)."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params that are known only on a worker (e.g. ``resolved.forward_dtype``). MLflow params cannot change:
        when a resumed run has logged another value before (resumed on other hardware), the first value stays, the
        new one goes to the tag ``<key>.resumed`` and a warning is logged."""
        from mlflow.exceptions import MlflowException

        for key, value in params.items():
            try:
                self.client.log_param(self.run_id, key, str(value))
            except MlflowException:
                before = self.client.get_run(self.run_id).data.params.get(key)
                if before is None or before == str(value):
                    raise
                log.warning("run %s logged %s = %s before; now %s (kept in the tag %s.resumed)", self.run_id, key,
                            before, value, key)
                self.client.set_tag(self.run_id, f"{key}.resumed", str(value))

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))


def start_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str],
              artifacts: list[Path]) -> str:
    """Create the run (params, tags, config artifacts) and return its id; the run stays open for the workers."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id(client, tracking_uri, experiment), run_name=run_name,
                            tags={"code_version": code_version_string(), **tags})
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start:start + 100])
    for path in artifacts:
        client.log_artifact(run.info.run_id, str(path))
    return run.info.run_id


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The experiment's id, creating it if needed; in a sqlite store, with its artifacts in ``mlruns/`` beside the
    database file (MLflow's own default is ``./mlruns`` of whatever directory the job happens to run in)."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    root = artifact_root(tracking_uri)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    return client.create_experiment(name, artifact_location=(root / slug).as_uri() if root else None)


def store_uri(explicit: str | None = None, folder: Path | None = None) -> str:
    """The MLflow store a job uses: ``explicit``, else $MLFLOW_TRACKING_URI, else the embedded sqlite store
    ``<folder, default the working directory>/mlflow.db``."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(folder or Path.cwd()) / 'mlflow.db'}"


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (absolute); None for servers, other stores and ``:memory:``."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri == prefix + ":memory:":
        return None
    return Path(tracking_uri[len(prefix):]).resolve()


def artifact_root(tracking_uri: str) -> Path | None:
    """``<folder of the database>/mlruns`` for a ``sqlite:///`` file store; None for servers and other stores."""
    db = sqlite_file(tracking_uri)
    return None if db is None else db.parent / "mlruns"


def run_status(tracking_uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri).get_run(run_id).info.status


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


def log_model(tracking_uri: str, run_id: str, export_folder: Path, model_name: str | None,
              example: list[str]) -> Any:
    """Log the checkpoint's export as a pyfunc model in the run; register it under ``model_name`` when given."""
    import mlflow
    import pandas as pd

    from pipeline.serving.pyfunc import MODEL_FILE, code_paths, signature

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(MODEL_FILE), artifacts={"export": str(export_folder)},
            code_paths=code_paths(), pip_requirements=["torch", "numpy", "pandas", "numba"],
            signature=signature(), input_example=pd.DataFrame({"puzzle": example}),
            registered_model_name=model_name)


def promote_if_better(tracking_uri: str, model_name: str, version: str | int, metric: str, value: float) -> bool:
    """Tag the version with its eval metric; move the champion alias to it only when it beats the current one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    tag = metric.replace("/", "_")
    client.set_model_version_tag(model_name, str(version), tag, str(value))
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION)
        best = float(current.tags.get(tag, "-inf"))
    except MlflowException:
        current, best = None, float("-inf")
    if value > best:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
        log.info("%s version %s is the new %s (%s %.4f > %.4f)", model_name, version, CHAMPION, metric, value, best)
        return True
    log.info("%s version %s stays behind the %s (version %s): %s %.4f <= %.4f", model_name, version, CHAMPION,
             current.version if current else "-", metric, value, best)
    return False
