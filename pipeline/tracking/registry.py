"""The MLflow model of a run and the registry: the logged pyfunc (export + shipped code), its linked metrics, and the
``champion`` alias moved only to a better version."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.tracking.runs import quiet_downloads

log = logging.getLogger(__name__)
CHAMPION = "champion"


# MLflow serves the input example through the logged model once as it logs it (the check that it can be served): at
# one ACT segment, not M_max (16 for the paper's models), as the example request shows. A CPU driver took minutes of
# full-depth inference of the paper's Maze model there, on puzzles draw_samples had just solved.
EXAMPLE_PARAMS = {"max_steps": 1}


def log_model(tracking_uri: str, run_id: str, export_folder: Path, model_name: str | None,
              example: list[str], *, step: int = 0, metrics: dict[str, float] | None = None) -> Any:
    """Log a checkpoint's export (weights + config only) as a pyfunc model in the run, with only the code serving
    imports and pinned requirements, and record its files' digests in the run (``model_files``); link ``metrics``
    (the checkpoint's eval metrics) to the logged model at ``step``; register it under ``model_name`` when given."""
    import tempfile

    import mlflow
    import pandas as pd

    from pipeline.core.export import copy_export
    from pipeline.serving.code import requirements, stage_code
    from pipeline.serving.pyfunc import MODEL_FILE, signature

    quiet_downloads()
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        export = copy_export(Path(export_folder), Path(tmp) / "export")
        code = stage_code(Path(tmp) / "code")
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=str(MODEL_FILE), artifacts={"export": str(export)}, code_paths=code,
                pip_requirements=requirements(), signature=signature(),
                input_example=(pd.DataFrame({"puzzle": example}), EXAMPLE_PARAMS), registered_model_name=model_name,
                step=step)
    from pipeline.tracking.model_files import record

    record(tracking_uri, run_id, logged.model_id, logged.model_uri)  # what eval, solve and serve check it against
    if metrics:
        link_metrics(tracking_uri, run_id, logged.model_id, metrics, step)
    if model_name and logged.registered_model_version:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        for key, value in kind_tags(Path(export_folder)).items():
            client.set_model_version_tag(model_name, str(logged.registered_model_version), key, value)
    return logged


def describe(tracking_uri: str, name: str, version: str, text: str, model_text: str) -> None:
    """The registry's descriptions: ``text`` on the version (what data, what accuracy, what command), ``model_text``
    on the registered model when it has none yet (a description someone wrote is kept)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.update_model_version(name, version, description=text)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=model_text)


KIND_TAGS = ("hrm.task", "hrm.task_args", "hrm.seq_len", "hrm.vocab_size")  # what makes two versions comparable


def kind_tags(export_folder: Path) -> dict[str, str]:
    """What puzzles a model solves, from its export's model.json: the task, its arguments (a Sudoku's box), the
    sequence length and vocabulary. Versions that differ in any do not compete for ``champion``."""
    info = json.loads((export_folder / "model.json").read_text())
    model = info.get("model", {})
    values = (info.get("task"), info.get("task_args"), model.get("seq_len"), model.get("vocab_size"))
    return {key: json.dumps(value, sort_keys=True) for key, value in zip(KIND_TAGS, values)}


def link_metrics(tracking_uri: str, run_id: str, model_id: str, metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` linked to the logged model (its page in MLflow lists them)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    batch = [Metric(key=k, value=float(v), timestamp=now, step=step, model_id=model_id, run_id=run_id)
             for k, v in metrics.items() if isinstance(v, (int, float))]
    MlflowClient(tracking_uri).log_batch(run_id, metrics=batch)


def log_registered_checkpoint(tracking_uri: str, run_id: str, checkpoint: str, step: int,
                              metrics: dict[str, float]) -> None:
    """Say in the run's summary which checkpoint became the logged model, as tags (one-point metrics would chart
    each as a graph of its own, repeating ``eval/*``): ``model.step``, ``model.<metric>`` (the run's plain metrics
    show the last step's values) and ``model.checkpoint`` (its folder name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in {"step": step, **metrics}.items():
        client.set_tag(run_id, f"model.{key}", str(value) if key == "step" else f"{float(value):.6g}")
    client.set_tag(run_id, "model.checkpoint", checkpoint)


def promote_if_better(tracking_uri: str, model_name: str, version: str | int, metric: str, value: float) -> bool:
    """Tag the version with its eval metric; move the champion alias to it only when it solves the same puzzles as
    the current one (KIND_TAGS: a 4×4 Sudoku model never takes it from a 9×9 one) and beats it. The compare and the
    move happen under the registry's own lock (``registry_lock``): of runs promoting at once, the best one wins."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.registry_lock import held

    client = MlflowClient(tracking_uri)
    tag = metric.replace("/", "_")
    client.set_model_version_tag(model_name, str(version), tag, str(value))
    with held(client, model_name):
        return _compare_and_set(client, model_name, str(version), metric, tag, value)


def _compare_and_set(client, model_name: str, version: str, metric: str, tag: str, value: float) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION)
        best = float(current.tags.get(tag, "-inf"))
    except MlflowException:
        current, best = None, float("-inf")
    if current is not None and str(current.version) != version:
        mine = client.get_model_version(model_name, version).tags
        differ = [k for k in KIND_TAGS if k in current.tags and k in mine and current.tags[k] != mine[k]]
        if differ:
            log.warning("%s version %s solves other puzzles than the %s (version %s: %s): the alias stays; register "
                        "it under another name", model_name, version, CHAMPION, current.version,
                        ", ".join(f"{k[4:]} {mine[k]} against {current.tags[k]}" for k in differ))
            return False
    if value > best:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        log.info("%s version %s is the new %s (%s %.4f > %.4f)", model_name, version, CHAMPION, metric, value, best)
        return True
    log.info("%s version %s stays behind the %s (version %s): %s %.4f <= %.4f", model_name, version, CHAMPION,
             current.version if current else "-", metric, value, best)
    return False
