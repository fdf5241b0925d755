"""MLflow runs: opening and ending a job's run, its tags, dataset input, metrics, curves and figures, and the store
(where it is, whether it answers)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline.tracking.version import code_version_string

SOURCE_TAG = "hrm.source_sha256"

log = logging.getLogger(__name__)
NO_PROGRESS_BARS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # MLflow's "Downloading artifacts" bars


def quiet_downloads() -> None:
    """Turn MLflow's artifact progress bars off in this process (and the processes it starts), unless the user chose."""
    for key, value in NO_PROGRESS_BARS.items():
        os.environ.setdefault(key, value)


class RunLogger:
    """Logs metric batches to one MLflow run (used by the rank-0 worker)."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    def settle(self, timeout: float = 10.0) -> bool:
        """Nothing to wait for: every call has been sent when it returns (BufferedRunLogger's counterpart)."""
        return True

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


def open_store(tracking_uri: str) -> None:
    """MLflow's client made for ``tracking_uri`` (its modules imported, its store opened: a new sqlite store's tables
    created), which MLflow then keeps for the URI, so that runs opened later in this process start at once. What
    ``hrm train`` does while Ray starts (a tiny run took 23.3-24.1 s so against 24.3-25.6 s, two runs each, 2-core
    Xeon): the client costs ~2.5 s and its imports ~1 s there."""
    from mlflow.entities import Param  # noqa: F401 (imported now: start_run needs it)
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri)


def start_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str],
              artifacts: list[Path], dataset: Any = None, dataset_context: str = "training",
              start_time: float | None = None) -> str:
    """Create the run (params, tags, config artifacts, the dataset as its input) and return its id; the run stays
    open for the workers. Tags are those ``mlflow.start_run`` records (source, user, git commit) and ``code_version``;
    the commit comes from this driver's checkout, else $HRM_GIT_COMMIT (a job's working dir has no ``.git``).
    ``dataset``: a ``DatasetMeta`` (pipeline.data.meta), logged with ``log_input`` in ``dataset_context``;
    ``start_time``: when the work the run records began (seconds since the epoch; default now)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id(client, tracking_uri, experiment), run_name=run_name,
                            tags=run_tags(tags), start_time=None if start_time is None else int(start_time * 1000))
    try:  # a run that could not be set up (an artifact store that refuses writes…) ends FAILED, not RUNNING
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[start:start + 100])
        for path in artifacts:
            client.log_artifact(run.info.run_id, str(path))
        if dataset is not None:
            log_dataset(client, run.info.run_id, dataset, dataset_context)
    except BaseException:
        try:
            client.set_terminated(run.info.run_id, status="FAILED")
        except Exception as err:  # noqa: BLE001 (the store may be what failed)
            log.warning("could not mark MLflow run %s FAILED: %s", run.info.run_id, err)
        raise
    return run.info.run_id


def run_tags(tags: dict[str, str]) -> dict[str, str]:
    """MLflow's context tags (``mlflow.source.name/type``, ``mlflow.user``, git) + ``code_version`` + the source's
    digest (``hrm.source_sha256``: a run launched without git still says what code it ran) + ``tags``."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    from pipeline.tracking.version import code_version

    version = code_version()  # one look at git, for both tags
    extra = {"code_version": code_version_string(version), SOURCE_TAG: version["source_sha256"]}
    if "git_commit" in version:
        extra[MLFLOW_GIT_COMMIT] = version["git_commit"]
    return resolve_tags({**extra, **tags})


def dataset_input(meta: Any):
    """The dataset of ``meta`` (a ``DatasetMeta``) as an MLflow dataset: its path, its fingerprint as digest, its
    task and split counts as profile."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class HRMDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return {"task": meta.task, "seq_len": meta.seq_len, **{f"{k}_count": v for k, v in meta.counts.items()}}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    path = str(meta.path)
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path, either way
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(path)
    return HRMDataset(source=source, name=Path(path.rstrip("/")).name or path,
                      digest=str(meta.fingerprint)[:36])


def log_dataset(client: Any, run_id: str, meta: Any, context: str = "training") -> None:
    """``mlflow.log_input`` of the dataset, through ``client`` (the run stays open for the workers)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entity = dataset_input(meta)._to_mlflow_entity()
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
    for attempt in range(3):
        try:
            client.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])
            return
        except MlflowException as err:
            # MLflow's store looks the dataset up, then inserts it: two runs of one experiment opening at once (a
            # sweep's trials) can both insert it, and the second fails on the table's unique key. Once the first
            # has inserted it, logging again links the existing one.
            if ("UNIQUE constraint" not in str(err) and "duplicate key" not in str(err)) or attempt == 2:
                raise
            time.sleep(0.1 * (attempt + 1))


def start_system_metrics(tracking_uri: str, run_id: str, node: str | None = None, interval: float = 10) -> Any:
    """Log this machine's CPU, memory, disk, network (and GPU) use to the run as ``system/*`` metrics, every
    ``interval`` seconds, from a daemon thread that stops when the run ends and goes on after a tracking outage
    (MLflow's own loop ends at the first failed request); one sample is logged at once. Returns the monitor, or
    None when it cannot run (psutil missing)."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        class Monitor(SystemMetricsMonitor):
            def monitor(self) -> None:
                """MLflow's loop, started again after it gave up on an unreachable server, until the run ends."""
                from mlflow.tracking import MlflowClient

                while not self._shutdown_event.is_set():
                    super().monitor()
                    if self._shutdown_event.wait(self.sampling_interval):
                        return
                    try:
                        status = MlflowClient(self._tracking_uri).get_run(self._run_id).info.status
                    except Exception:  # noqa: BLE001 (still unreachable: look again after an interval)
                        continue
                    if status != "RUNNING":
                        return

        monitor = Monitor(run_id, sampling_interval=interval, resume_logging=True, node_id=node,
                          tracking_uri=tracking_uri)
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.start()
        return monitor
    except Exception as err:  # noqa: BLE001 (system metrics never stop a training run)
        log.warning("no system metrics for run %s: %s", run_id, err)
        return None


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3's UI: a model-training experiment


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The experiment's id, creating it if needed; in a sqlite store, with its artifacts in ``mlruns/`` beside the
    database file (MLflow's own default is ``./mlruns`` of whatever directory the job happens to run in). Ours are
    tagged as model training (``EXPERIMENT_KIND``): MLflow 3's UI otherwise opens them in its GenAI view."""
    found = client.get_experiment_by_name(name)
    if found:
        if "mlflow.experimentKind" not in found.tags:  # one made before this tag: a kind another set is kept
            client.set_experiment_tag(found.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return found.experiment_id
    root = artifact_root(tracking_uri)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    return client.create_experiment(name, artifact_location=(root / slug).as_uri() if root else None,
                                    tags=EXPERIMENT_KIND)


def store_uri(explicit: str | None = None, folder: Path | None = None) -> str:
    """The MLflow store a job uses: ``explicit``, else $MLFLOW_TRACKING_URI, else the embedded sqlite store
    ``<folder, default the working directory>/mlflow.db``."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(folder or Path.cwd()) / 'mlflow.db'}"


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when an http(s) tracking server cannot take a run: it does not take connections (a
    TCP connect to its host and port), or it does not answer one call of MLflow's API (``check_answers``).
    ConnectionError naming the URI. Other stores (``sqlite:///``, files) pass."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:  # ValueError: a port that is not a number
        reason = str(err) or type(err).__name__
        raise ConnectionError(f"MLflow tracking server {tracking_uri} is unreachable ({reason}): start it, or point "
                              "MLFLOW_TRACKING_URI / tracking.tracking_uri at one") from err
    check_answers(tracking_uri, timeout_s)


def check_answers(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """One call of MLflow's REST API, as a run's first calls make it (search one experiment: the login, the server
    and its database), with MLflow's own credentials ($MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN, TLS settings) and
    no retries. A server that answers with an error (a 5xx, 401/403, a page that is not MLflow's) or not within
    ``timeout_s`` is a ConnectionError naming it and the status, rather than minutes of MLflow's retries."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    endpoint = "/api/2.0/mlflow/experiments/search"
    try:
        answer = http_request(get_default_host_creds(tracking_uri), endpoint, "POST", max_retries=0,
                              timeout=timeout_s, raise_on_status=False, json={"max_results": 1})
    except (requests.RequestException, MlflowException):  # MLflow wraps requests' errors
        raise ConnectionError(f"MLflow tracking server {tracking_uri} took the connection but did not answer "
                              f"{endpoint} within {timeout_s:g} s") from None
    if answer.status_code == 200:
        return
    said = " ".join(answer.text.split())[:160] or "no message"
    hint = {401: "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
            403: "the login has no permission for this: ask the server's admin"}.get(
        answer.status_code, "look at the server's log" if answer.status_code >= 500 else
        "is this an MLflow tracking server?")
    raise ConnectionError(f"MLflow tracking server {tracking_uri} answered HTTP {answer.status_code} to {endpoint} "
                          f"({said}): {hint}")


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


def log_curve(tracking_uri: str, run_id: str, key: str, points: dict[int, float]) -> None:
    """Log one metric ``key`` as a curve: its value at each step of ``points`` ({step: value}), e.g. exact accuracy
    with step = ACT segment."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    batch = [Metric(key, float(v), now, int(step)) for step, v in sorted(points.items())]
    MlflowClient(tracking_uri).log_batch(run_id, metrics=batch)


def log_figure(tracking_uri: str, run_id: str, figure: Any, name: str) -> None:
    """Save a matplotlib ``figure`` as the run's artifact ``name`` (e.g. ``eval_curves.png``) and close it."""
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).log_figure(run_id, figure, name)
    finally:
        plt.close(figure)


def experiment_of_model(tracking_uri: str, model_run_id: str | None, fallback: str) -> str:
    """The name of the experiment holding the run that logged a model (``model_run_id``); ``fallback`` when there is
    none or it cannot be read."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not model_run_id:
        return fallback
    client = MlflowClient(tracking_uri)
    try:
        return client.get_experiment(client.get_run(model_run_id).info.experiment_id).name
    except MlflowException as err:
        log.warning("the model's run %s cannot be read (%s): logging to experiment %s", model_run_id, err, fallback)
        return fallback
