"""A logged model's files: recorded where its artifacts cannot change them, and checked before the model is loaded.

An MLflow model is code: loading it runs its ``model_file.py``, imports its ``code/`` folder, and would unpickle a
``python_model.pkl`` if its ``MLmodel`` named one. Those files live in the artifact store (a folder, a bucket), so
whoever can write there could make ``hrm eval`` run anything. When this project logs a model it records the SHA-256
of every file of it in the tracking store, as the logging run's tag ``hrm.model_files.<model id>`` (JSON: path →
digest); ``fetch`` downloads a model, checks every file against that record (none changed, none added, none
missing) and returns the folder it checked, so that what is loaded is what was checked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.core.digests import differences, folder_digests

log = logging.getLogger(__name__)
TAG_PREFIX = "hrm.model_files."
LOCAL_ONLY = ("registered_model_meta",)  # written by MLflow into a models:/ download (the name and version): not code
TRUST_HINT = "--trust-model-files loads it anyway (its code then runs unchecked)"


class ModelFilesChanged(ValueError):
    """A model whose files are not those recorded when it was logged, or without a record."""


def manifest(folder: Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``folder`` (MLflow's LOCAL_ONLY files left out)."""
    return folder_digests(folder, skip=LOCAL_ONLY)


def record(tracking_uri: str, run_id: str, model_id: str, model_uri: str) -> dict[str, str]:
    """Download the logged model ``model_uri`` (id ``model_id``) and record its files' digests in run ``run_id``."""
    import tempfile

    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        files = manifest(Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp,
                                                                  tracking_uri=tracking_uri)))
    MlflowClient(tracking_uri).set_tag(run_id, TAG_PREFIX + model_id, json.dumps(files, sort_keys=True,
                                                                                separators=(",", ":")))
    log.debug("recorded %d files of model %s", len(files), model_id)
    return files


def fetch(model_uri: str, into: Path, *, trust: bool = False) -> Path:
    """Download ``model_uri`` (with the tracking URI MLflow is set to) into ``into`` and check its files against the
    record of the run that logged it: a ModelFilesChanged naming the files that differ, or saying there is no
    record; with ``trust`` a warning instead. Returns the model's folder (load it from there, not from the URI)."""
    import mlflow.artifacts
    from mlflow.models import Model

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(into)))
    if not (local / "MLmodel").is_file():
        raise ModelFilesChanged(f"{model_uri} is not an MLflow model: no MLmodel file in it")
    run_id, model_id = _logged_by(model_uri, Model.load(str(local)))
    problem = _problem(local, run_id, model_id)
    if problem is not None:
        if not trust:
            raise ModelFilesChanged(f"{model_uri}: {problem}; {TRUST_HINT}")
        log.warning("%s: %s; loading it all the same (--trust-model-files)", model_uri, problem)
    return local


def _logged_by(model_uri: str, meta) -> tuple[str | None, str | None]:
    """(the run that logged the model, the model's id): the registry's word for a registered version, else the
    MLmodel's."""
    try:
        version = registered_version(model_uri)
        if version is not None:
            return version.run_id, version_model_id(version) or meta.model_id
    except Exception:  # noqa: BLE001 (a registry that cannot say: the MLmodel's ids are checked all the same)
        pass
    return meta.run_id, meta.model_id


def registered_version(model_uri: str):
    """The registry's ModelVersion that ``models:/<name>@<alias>`` (the version the alias points at now) or
    ``models:/<name>/<version>`` names; None for another URI (``models:/<model id>`` is a logged model)."""
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None
    name, _, which = model_uri[len("models:/"):].rstrip("/").partition("@")
    if which:
        return MlflowClient().get_model_version_by_alias(name, which)
    if "/" in name:
        name, number = name.rsplit("/", 1)
        return MlflowClient().get_model_version(name, number)
    return None


def version_model_id(version) -> str | None:
    """The logged model behind a registered version: its ``model_id``, else the id its ``source`` names
    (``models:/m-…``, as MLflow 3 registers a logged model)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = getattr(version, "source", "") or ""
    return source[len("models:/"):] if source.startswith("models:/m-") else None


def _problem(local: Path, run_id: str | None, model_id: str | None) -> str | None:
    """What is wrong with the files of ``local`` against the record, or None when they are those recorded."""
    from mlflow.tracking import MlflowClient

    if not run_id or not model_id:
        return "no record of its files: it names no run and model id"
    tag = TAG_PREFIX + model_id
    try:
        recorded = MlflowClient().get_run(run_id).data.tags.get(tag)
    except Exception as err:  # noqa: BLE001 (a run deleted or never there)
        return f"no record of its files: run {run_id} cannot be read ({type(err).__name__})"
    if recorded is None:
        return f"no record of its files (tag {tag} of run {run_id}): it was not logged by this project's code"
    differ = differences(json.loads(recorded), manifest(local))
    return None if differ is None else f"its files are not those logged with it ({differ})"
